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
        // Created 0600, never readable by others even for a moment; a leftover key of an
        // earlier boot in the same directory is replaced, not reused.
        let _ = std::fs::remove_file(&private_key);
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&private_key)
                .with_context(|| format!("create {}", private_key.display()))?;
            f.write_all(pem.as_bytes())?;
        }
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
    /// One connection attempt with a short timeout. With `host_key` (the base64 ed25519 blob
    /// the guest announced on its console), a server presenting another key is refused
    /// before we authenticate to it.
    pub fn connect(
        port: u16,
        key: &Path,
        host_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Ssh> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        let mut session = ssh2::Session::new()?;
        session.set_tcp_stream(tcp);
        session.set_timeout(libssh2_timeout(timeout));
        session.handshake()?;
        if let Some(expected) = host_key {
            check_host_key(session.host_key(), expected, port)?;
        }
        session.userauth_pubkey_file("root", None, key, None)?;
        if !session.authenticated() {
            bail!("the guest refused the key");
        }
        Ok(Ssh { session })
    }

    /// Retries until the guest's SSH server accepts us or `deadline` passes. A server with
    /// the wrong host key is an error at once: retrying would not make it the guest.
    pub fn connect_until(
        port: u16,
        key: &Path,
        host_key: Option<&str>,
        deadline: Instant,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Ssh> {
        let mut last = None;
        while Instant::now() < deadline {
            alive()?;
            match Ssh::connect(port, key, host_key, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) if e.downcast_ref::<WrongHostKey>().is_some() => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("SSH to the guest did not come up in time")
    }

    /// Runs `cmd` through the guest's shell; `timeout` bounds the whole command.
    pub fn exec(&self, cmd: &str, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
        self.session.set_timeout(libssh2_timeout(timeout));
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
        self.session.set_timeout(libssh2_timeout(timeout));
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

    /// A channel for streaming protocols (the executor's JSON lines). Opening it and
    /// starting `cmd` must finish within `timeout`: a guest that stalls right after bring-up
    /// is an error, not a wait for ever. The caller sets the timeouts of its reads.
    pub fn channel(&self, cmd: &str, timeout: Duration) -> Result<ssh2::Channel> {
        self.session.set_timeout(libssh2_timeout(timeout));
        let late = |e: ssh2::Error| {
            anyhow::Error::new(e).context(format!(
                "the guest did not start `{cmd}` within {timeout:?}; it may be hung"
            ))
        };
        let mut ch = self.session.channel_session().map_err(late)?;
        ch.exec(cmd).map_err(late)?;
        Ok(ch)
    }

    /// Bounds every blocking call on the session from now on (see [`libssh2_timeout`]).
    pub fn set_timeout(&self, timeout: Duration) {
        self.session.set_timeout(libssh2_timeout(timeout));
    }

    pub fn session(&self) -> &ssh2::Session {
        &self.session
    }
}

/// The SSH server on the guest's forwarded port is not the guest that booted.
#[derive(Debug, thiserror::Error)]
#[error("the SSH server on 127.0.0.1:{port} presented {found}, not the host key the guest announced on its console; another process may have taken the port: not connecting")]
pub struct WrongHostKey {
    pub port: u16,
    pub found: String,
}

fn check_host_key(
    presented: Option<(&[u8], ssh2::HostKeyType)>,
    expected: &str,
    port: u16,
) -> Result<()> {
    use base64ct::Encoding;
    let found = match presented {
        Some((blob, ssh2::HostKeyType::Ed25519)) => base64ct::Base64::encode_string(blob),
        Some((_, t)) => format!("a {t:?} key"),
        None => "no host key".to_string(),
    };
    if found != expected {
        let found = if found.len() > 24 {
            format!("key {}…", &found[..24])
        } else {
            found
        };
        return Err(WrongHostKey { port, found }.into());
    }
    Ok(())
}

/// libssh2's timeout for `d`: milliseconds, at least 1 (libssh2 reads 0 as "wait for ever")
/// and at most `u32::MAX` (a longer duration is cut there, not wrapped to a short one).
pub fn libssh2_timeout(d: Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
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
    fn only_the_announced_host_key_is_accepted() {
        use base64ct::Encoding;
        let blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghabcdefghabcdefghabcdefgh";
        let b64 = base64ct::Base64::encode_string(blob);
        check_host_key(Some((blob, ssh2::HostKeyType::Ed25519)), &b64, 2222).unwrap();
        let mut other = blob.to_vec();
        *other.last_mut().unwrap() = b'X';
        let e = check_host_key(Some((&other, ssh2::HostKeyType::Ed25519)), &b64, 2222).unwrap_err();
        assert!(e.downcast_ref::<WrongHostKey>().is_some());
        assert!(e.to_string().contains("127.0.0.1:2222"), "{e}");
        let e = check_host_key(Some((blob, ssh2::HostKeyType::Rsa)), &b64, 2222).unwrap_err();
        assert!(e.to_string().contains("Rsa"), "{e}");
        assert!(check_host_key(None, &b64, 2222).is_err());
    }

    #[test]
    fn a_peer_that_accepts_and_never_speaks_is_given_up_at_the_timeout() {
        // A stalled SSH server on loopback: the connection is accepted, nothing is sent.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(10));
            drop(conn);
        });
        let key = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = Ssh::connect(
            port,
            &key.path().join("id_ed25519"),
            None,
            Duration::from_secs(2),
        )
        .err()
        .expect("no SSH session with a silent peer");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(8),
            "gave up after {took:?}: {e:#}"
        );
        drop(holder);
    }

    #[test]
    fn a_timeout_never_means_for_ever_nor_wraps() {
        assert_eq!(libssh2_timeout(Duration::ZERO), 1);
        assert_eq!(libssh2_timeout(Duration::from_micros(10)), 1);
        assert_eq!(libssh2_timeout(Duration::from_secs(30)), 30_000);
        // 50 days in ms is more than u32::MAX; `as u32` made it about 4 days short of 0.
        assert_eq!(libssh2_timeout(Duration::from_secs(50 * 86_400)), u32::MAX);
    }

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
