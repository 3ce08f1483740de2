//! QEMU's machine protocol (QMP) on the guest's control socket: one command at a time,
//! answers told from the events QEMU sends in between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: String,
}

impl Qmp {
    /// Connects (waiting up to `wait` for QEMU to create the socket) and leaves the
    /// capabilities negotiation behind.
    pub fn connect(socket: &Path, wait: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e)
                        .with_context(|| format!("connect to QMP at {}", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            socket: socket.display().to_string(),
        };
        q.read_message().context("read QEMU's QMP greeting")?;
        q.execute("qmp_capabilities", Value::Null)?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QEMU closed its QMP socket {}", self.socket);
        }
        serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
    }

    /// Runs `command` with `args` (`Value::Null` for none) and returns its `return` value;
    /// QEMU's `error` is an error naming the command.
    pub fn execute(&mut self, command: &str, args: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if !args.is_null() {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .with_context(|| format!("send QMP {command}"))?;
        loop {
            let m = self
                .read_message()
                .with_context(|| format!("QMP {command}: no answer"))?;
            if m.get("event").is_some() {
                continue;
            }
            if let Some(e) = m.get("error") {
                bail!(
                    "QMP {command} failed: {}",
                    e.get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("(no description)")
                );
            }
            return Ok(m.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Waits for the migration QEMU is sending or receiving to end; `Ok` when it completed.
    pub fn wait_migration(&mut self, deadline: Instant) -> Result<Value> {
        loop {
            let r = self.execute("query-migrate", Value::Null)?;
            match r.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(r),
                Some("failed") | Some("cancelled") => bail!(
                    "QEMU's migration {}: {}",
                    r["status"].as_str().unwrap_or_default(),
                    r.get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ),
                _ if Instant::now() >= deadline => {
                    bail!("QEMU's migration did not complete in time (last state: {r})")
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Runs one command without arguments (`stop`, `cont`, `quit`) on a fresh connection.
pub fn execute_once(socket: &Path, command: &str) -> Result<Value> {
    Qmp::connect(socket, Duration::from_secs(2))?.execute(command, Value::Null)
}
