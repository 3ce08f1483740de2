//! Running the guest's administration tools (ndctl, mkfs, …) with a deadline, keeping
//! everything a failure report needs: the command line, exit status and both outputs.

use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a killed command may take to die before it is abandoned.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What one finished (or abandoned) command did.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// The command line as a shell would show it.
    pub argv: String,
    /// Exit code; `None` when killed by a signal, timed out, or never started.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Set when the program could not be started at all (e.g. not installed).
    pub spawn_error: Option<String>,
    pub duration: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr joined, trimmed: the text to quote in an error message.
    pub fn output(&self) -> String {
        let mut s = String::new();
        for part in [self.stdout.trim(), self.stderr.trim()] {
            if !part.is_empty() {
                if !s.is_empty() {
                    s.push('\n');
                }
                s.push_str(part);
            }
        }
        s
    }

    /// One-line reason for a failure, e.g. `exit status 1: <output>`.
    pub fn failure_reason(&self) -> String {
        let what = if let Some(e) = &self.spawn_error {
            format!("could not run {}: {e}", self.argv)
        } else if self.timed_out {
            format!("timed out after {} ms", self.duration.as_millis())
        } else {
            match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            }
        };
        let out = self.output();
        if out.is_empty() {
            what
        } else {
            format!("{what}: {out}")
        }
    }
}

impl fmt::Display for CmdOutput {
    /// The full record for a step's detail: command, status and both outputs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.argv)?;
        if let Some(e) = &self.spawn_error {
            return writeln!(f, "could not start: {e}");
        }
        if self.timed_out {
            writeln!(
                f,
                "timed out after {} ms, killed",
                self.duration.as_millis()
            )?;
        } else {
            match self.code {
                Some(c) => writeln!(f, "exit status {c}")?,
                None => writeln!(f, "killed by a signal")?,
            }
        }
        if !self.stdout.trim().is_empty() {
            writeln!(f, "stdout:\n{}", self.stdout.trim_end())?;
        }
        if !self.stderr.trim().is_empty() {
            writeln!(f, "stderr:\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@%+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Runs `program args…` with stdin closed, killing it once `timeout` has passed.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    let argv = std::iter::once(program)
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return CmdOutput {
                argv,
                code: None,
                stdout: String::new(),
                stderr: String::new(),
                timed_out: false,
                spawn_error: Some(e.to_string()),
                duration: start.elapsed(),
            }
        }
    };
    // Readers on their own threads so a chatty child never blocks on a full pipe.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                let _ = child.kill();
                // A child stuck in uninterruptible sleep never dies: give up on it rather
                // than hang the agent (its pipes are abandoned with it).
                let killed_at = Instant::now();
                while killed_at.elapsed() < KILL_GRACE {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    // Output readers of an unkillable child would block forever.
    let collect = |h: thread::JoinHandle<String>| {
        let grace = Instant::now();
        while timed_out && !h.is_finished() && grace.elapsed() < Duration::from_millis(200) {
            thread::sleep(Duration::from_millis(5));
        }
        if timed_out && !h.is_finished() {
            String::from("(output abandoned: the process did not die)")
        } else {
            h.join().unwrap_or_default()
        }
    };
    CmdOutput {
        argv,
        code: status.and_then(|s| s.code()),
        stdout: collect(out),
        stderr: collect(err),
        timed_out,
        spawn_error: None,
        duration: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_outputs_and_status() {
        let _turn = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let o = run(
            "sh",
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(10),
        );
        assert_eq!(o.code, Some(3));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(!o.success());
        assert_eq!(o.failure_reason(), "exit status 3: out\nerr");
        assert!(o
            .to_string()
            .starts_with("$ sh -c 'echo out; echo err >&2; exit 3'\n"));
    }

    #[test]
    fn kills_on_timeout() {
        let _turn = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let o = run("sleep", &["30"], Duration::from_millis(200));
        assert!(o.timed_out);
        assert!(o.duration < Duration::from_secs(5));
        assert!(o.failure_reason().starts_with("timed out"));
    }

    #[test]
    fn missing_program_is_reported() {
        let _turn = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let o = run("daxdiff-no-such-tool", &[], Duration::from_secs(1));
        assert!(o.spawn_error.is_some());
        assert!(o
            .failure_reason()
            .contains("could not run daxdiff-no-such-tool"));
    }
}
