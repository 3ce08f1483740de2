//! Guest control over SSH: a fresh ed25519 key pair per boot, commands with exit status and
//! output, and file upload.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A key pair written for one boot: the private key file and the public blob for the guest.
pub struct KeyPair {
    pub private_key: PathBuf,
    /// base64 of the public key blob (what follows `ssh-ed25519 ` in authorized_keys).
    pub public_blob: String,
}

impl KeyPair {
    pub fn generate(dir: &Path) -> Result<KeyPair> {
        use ssh_key::{rand_core::OsRng, Algorithm, LineEnding, PrivateKey};
        let key =
            PrivateKey::random(&mut OsRng, Algorithm::Ed25519).context("generate ed25519 key")?;
        let private_key = dir.join("id_ed25519");
        let pem = key
            .to_openssh(LineEnding::LF)
            .context("encode private key")?;
        std::fs::write(&private_key, pem.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private_key, std::fs::Permissions::from_mode(0o600))?;
        let public = key.public_key().to_openssh().context("encode public key")?;
        let public_blob = public
            .split_whitespace()
            .nth(1)
            .context("public key has no blob")?
            .to_string();
        std::fs::write(dir.join("id_ed25519.pub"), format!("{public}\n"))?;
        Ok(KeyPair {
            private_key,
            public_blob,
        })
    }
}

/// What a command did in the guest.
#[derive(Clone, Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub struct Ssh {
    session: ssh2::Session,
}

impl Ssh {
    /// One connection attempt with a short timeout.
    pub fn connect(port: u16, key: &Path, timeout: Duration) -> Result<Ssh> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        let mut session = ssh2::Session::new()?;
        session.set_tcp_stream(tcp);
        session.set_timeout(timeout.as_millis() as u32);
        session.handshake()?;
        session.userauth_pubkey_file("root", None, key, None)?;
        if !session.authenticated() {
            bail!("the guest refused the key");
        }
        Ok(Ssh { session })
    }

    /// Retries until the guest's SSH server accepts us or `deadline` passes.
    pub fn connect_until(
        port: u16,
        key: &Path,
        deadline: Instant,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Ssh> {
        let mut last = None;
        while Instant::now() < deadline {
            alive()?;
            match Ssh::connect(port, key, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("SSH to the guest did not come up in time")
    }

    /// Runs `cmd` through the guest's shell; `timeout` bounds the whole command.
    pub fn exec(&self, cmd: &str, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
        self.session
            .set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let mut ch = self.session.channel_session().context("open SSH channel")?;
        ch.exec(cmd)
            .with_context(|| format!("start `{cmd}` in the guest"))?;
        if let Some(data) = stdin {
            ch.write_all(data).context("send input to the guest")?;
        }
        ch.send_eof()?;
        // Both streams are read as they come: a command that fills the channel's window with
        // stderr while we wait on stdout would otherwise stall until the deadline. Without
        // blocking, the deadline bounds the whole command, not each read.
        let deadline = Instant::now() + timeout;
        self.session.set_blocking(false);
        let read = drain_both(&mut ch, deadline);
        self.session.set_blocking(true);
        self.session
            .set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let (stdout, stderr) = read.map_err(|e| match e {
            Drain::Late => anyhow::anyhow!("`{cmd}` did not finish within {timeout:?}"),
            Drain::Io(e) => anyhow::Error::new(e).context(format!("read the output of `{cmd}`")),
        })?;
        ch.wait_close()?;
        Ok(Output {
            status: ch.exit_status()?,
            stdout,
            stderr,
        })
    }

    /// Writes `data` to `path` in the guest (mode as octal, e.g. 0o755).
    pub fn upload(&self, data: &[u8], path: &str, mode: u32) -> Result<()> {
        let tmp = format!("{path}.daxdiff-upload");
        let cmd = format!("cat > '{tmp}' && chmod {mode:o} '{tmp}' && mv '{tmp}' '{path}'");
        let out = self.exec(&cmd, Some(data), Duration::from_secs(120))?;
        if out.status != 0 {
            bail!("upload to {path} failed: {}", out.stderr_str().trim());
        }
        Ok(())
    }

    /// A channel for streaming protocols (the executor's JSON lines).
    pub fn channel(&self, cmd: &str) -> Result<ssh2::Channel> {
        self.session.set_timeout(0);
        let mut ch = self.session.channel_session()?;
        ch.exec(cmd)?;
        Ok(ch)
    }

    pub fn session(&self) -> &ssh2::Session {
        &self.session
    }
}

enum Drain {
    Late,
    Io(std::io::Error),
}

/// Reads a channel's stdout and stderr until both end, on a session set not to block.
fn drain_both(
    ch: &mut ssh2::Channel,
    deadline: Instant,
) -> std::result::Result<(Vec<u8>, Vec<u8>), Drain> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (mut out_done, mut err_done) = (false, false);
    let mut buf = vec![0u8; 64 * 1024];
    while !(out_done && err_done) {
        let mut moved = false;
        for (stream, sink, done) in [
            (0, &mut stdout, &mut out_done),
            (ssh2::EXTENDED_DATA_STDERR, &mut stderr, &mut err_done),
        ] {
            if *done {
                continue;
            }
            match ch.stream(stream).read(&mut buf) {
                Ok(0) => *done = true,
                Ok(n) => {
                    sink.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Drain::Io(e)),
            }
        }
        if !moved {
            if Instant::now() >= deadline {
                return Err(Drain::Late);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok((stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_differ_and_are_private() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = KeyPair::generate(d1.path()).unwrap();
        let b = KeyPair::generate(d2.path()).unwrap();
        assert_ne!(a.public_blob, b.public_blob);
        assert!(
            a.public_blob.starts_with("AAAAC3NzaC1lZDI1NTE5"),
            "an ed25519 blob: {}",
            a.public_blob
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read_to_string(&a.private_key).unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        // The blob is a single kernel command-line word.
        assert!(!a.public_blob.contains(char::is_whitespace));
    }
}
