//! Running programs in a guest: the controller's side of the executor protocol (one JSON
//! request line in, one response line out, over an SSH channel to `daxdiff-exec run`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use daxdiff_prog::wire::{DataCheck, Request, Response, StepResult, PROTOCOL_VERSION};
use daxdiff_prog::{Program, Target};

use crate::vm::Vm;

/// Extra time the controller waits beyond a program's own timeout before it calls the guest
/// unresponsive: the executor needs it to collect stacks and clean up.
pub const GRACE: Duration = Duration::from_secs(30);

/// How often the controller looks at the console while it waits for an answer: a kernel that
/// died is noticed within this, not after the whole timeout.
const POLL: Duration = Duration::from_secs(2);

/// How long the guest may take to start the executor: a guest that stalls right after
/// bring-up is an error after this, not a wait for ever.
const START: Duration = Duration::from_secs(60);

/// A live `daxdiff-exec run` session in one guest.
pub struct Runner {
    channel: ssh2::Channel,
    reader: BufReader<ssh2::Stream>,
    next_id: u64,
}

impl Runner {
    pub fn start(vm: &Vm) -> Result<Runner> {
        let ssh = vm.ssh()?;
        let channel = ssh
            .channel("daxdiff-exec run", START)
            .context("start daxdiff-exec run in the guest")?;
        let reader = BufReader::new(channel.stream(0));
        Ok(Runner {
            channel,
            reader,
            next_id: 1,
        })
    }

    /// Runs one program. An error means the guest or the executor stopped answering; a
    /// program's own failures, hangs and crashes come back inside the `Response`.
    pub fn run(&mut self, vm: &Vm, program: &Program, timeout: Duration) -> Result<Response> {
        self.run_text(vm, &program.to_text(), timeout)
    }

    pub fn run_text(&mut self, vm: &Vm, text: &str, timeout: Duration) -> Result<Response> {
        self.run_with(vm, text, timeout, false)
    }

    /// Runs one program, with the teardown liveness steps after it when `teardown`.
    pub fn run_with(
        &mut self,
        vm: &Vm,
        text: &str,
        timeout: Duration,
        teardown: bool,
    ) -> Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = Request::new(id, text.to_string(), timeout.as_millis() as u64);
        req.teardown = teardown;
        // The executor answers after the program, its teardown and the refcount settle time.
        let timeout = Duration::from_millis(req.budget_ms());
        let mut line = serde_json::to_string(&req)?;
        line.push('\n');
        let ssh = vm.ssh()?;
        ssh.set_timeout(timeout + GRACE);
        self.channel
            .write_all(line.as_bytes())
            .context("send a program to the guest executor")?;
        self.channel.flush()?;
        let from = vm.console.len();
        let sent = Instant::now();
        // Reads time out every POLL so the console and the deadline are looked at while
        // the program runs.
        ssh.set_timeout(POLL);
        let kernel_died = || {
            vm.console.first_fatal(from).map(|l| {
                anyhow::anyhow!(
                    "the guest kernel died while the program ran: {}\nconsole tail:\n{}",
                    l.text,
                    vm.console.tail(25)
                )
            })
        };
        let read = read_response(&mut self.reader, |e| {
            if let Some(died) = kernel_died() {
                return Err(died);
            }
            if sent.elapsed() > timeout + GRACE {
                bail!(
                    "the guest executor did not answer in time ({e}, after {:.0}s); the guest may be hung\nconsole tail:\n{}",
                    sent.elapsed().as_secs_f64(),
                    vm.console.tail(25)
                );
            }
            Ok(())
        });
        let resp = match read {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                if let Some(died) = kernel_died() {
                    return Err(died);
                }
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut self.channel.stderr(), &mut err);
                bail!("the guest executor exited: {}", err.trim());
            }
            Err(e) => return Err(kernel_died().unwrap_or(e)),
        };
        let r: Response = serde_json::from_str(&resp)
            .with_context(|| format!("the guest executor sent a bad response: {resp}"))?;
        if r.id != id {
            bail!(
                "the guest executor answered request {} while {id} was expected",
                r.id
            );
        }
        if r.protocol != PROTOCOL_VERSION {
            bail!(
                "the guest executor speaks protocol {}, this controller {PROTOCOL_VERSION}: \
                 rebuild both with ci/build.sh (the guest image picks up the new executor): {}",
                r.protocol,
                r.detail.unwrap_or_default()
            );
        }
        Ok(r)
    }
}

/// The executor stopped in the middle of a response line (killed, out of memory, or its
/// channel closed): what it had sent is kept for the error.
#[derive(Debug, thiserror::Error)]
#[error("the guest executor stopped in the middle of its response ({} bytes received: {}); it was killed or died", .partial.len(), .partial.chars().take(120).collect::<String>())]
pub struct CutResponse {
    pub partial: String,
}

/// Reads one response line. `Ok(None)`: the executor closed its output before sending
/// anything. A read that times out (`WouldBlock`/`TimedOut`, what an SSH stream gives after
/// its session timeout) keeps what was read and calls `waiting`, which decides whether to
/// go on; any other read error, or the end of the stream in mid-line ([`CutResponse`]),
/// ends the wait. The end of the stream always ends it: nothing more can come.
pub fn read_response(
    reader: &mut impl BufRead,
    mut waiting: impl FnMut(&std::io::Error) -> Result<()>,
) -> Result<Option<String>> {
    let mut resp = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut resp) {
            Ok(0) if resp.is_empty() => return Ok(None),
            Ok(_) if resp.ends_with(b"\n") => {
                return String::from_utf8(resp).map(Some).map_err(|e| {
                    anyhow::anyhow!("the guest executor sent a response that is not UTF-8: {e}")
                });
            }
            // read_until stops short of a newline only at the end of the stream.
            Ok(_) => {
                return Err(CutResponse {
                    partial: String::from_utf8_lossy(&resp).into_owned(),
                }
                .into())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                waiting(&e)?
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("read the guest executor's response"))
            }
        }
    }
}

/// A program file from disk: parsed, validated, with the file name in every error.
pub fn load_program(path: &Path) -> Result<Program> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    daxdiff_prog::parse(Target::builtin(), &text)
        .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
}

/// Every `.prog` file of a corpus directory, sorted by name.
pub fn load_corpus(dir: &Path) -> Result<Vec<(String, Program)>> {
    let mut v = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read corpus {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.extension().and_then(|e| e.to_str()) == Some("prog") {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            v.push((name, load_program(&p)?));
        }
    }
    if v.is_empty() {
        bail!("no .prog files in {}", dir.display());
    }
    Ok(v)
}

/// Per-call results as a user reads them: `#3 mmap$ext4 = 0x7f… (12us)` / `= -1 EOPNOTSUPP`.
pub fn format_response(program: &Program, r: &Response) -> String {
    let mut out = String::new();
    let status = serde_json::to_value(r.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    out.push_str(&format!("status: {status}"));
    if let Some(d) = &r.detail {
        out.push_str(&format!(" ({d})"));
    }
    out.push('\n');
    let mut calls = r.calls.clone();
    calls.sort_by_key(|c| c.index);
    for c in &calls {
        let thread = if c.thread > 0 {
            format!(" [t{}]", c.thread)
        } else {
            String::new()
        };
        let result = match &c.errno_name {
            Some(e) => format!("-1 {e}"),
            None if c.ret > 4096 => format!("{:#x}", c.ret),
            None => c.ret.to_string(),
        };
        let sum = c
            .checksum
            .map(|s| format!(" sum={s:016x}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  #{:<2} {:<40} = {result}{sum} ({}us){thread}\n",
            c.index, c.name, c.duration_us
        ));
    }
    let ran: std::collections::BTreeSet<usize> = calls.iter().map(|c| c.index).collect();
    for (i, call) in program.calls.iter().enumerate() {
        if !ran.contains(&i) {
            out.push_str(&format!("  #{i:<2} {:<40}   (did not run)\n", call.name));
        }
    }
    if let Some(s) = &r.stack {
        out.push_str("  hung task stack:\n");
        for l in s.lines() {
            out.push_str(&format!("    {l}\n"));
        }
    }
    for s in &r.teardown {
        let what = match &s.result {
            StepResult::Ok => "ok".to_string(),
            StepResult::Skipped => "skipped".to_string(),
            StepResult::Failed { detail } => format!("failed: {detail}"),
            StepResult::Blocked { .. } => "BLOCKED".to_string(),
        };
        out.push_str(&format!(
            "  teardown {:<16} {what} ({} ms)\n",
            s.step, s.duration_ms
        ));
        if let StepResult::Blocked { stack } = &s.result {
            for l in stack.lines() {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    match &r.refcounts {
        None => out.push_str("  refcounts: no probe in this guest\n"),
        Some(d) if d.is_empty() => out.push_str("  refcounts: = baseline after teardown\n"),
        Some(d) => {
            for x in d {
                out.push_str(&format!("  refcounts {}: {}\n", x.role, x.summary()));
            }
        }
    }
    for c in &r.integrity {
        let one = |d: &Option<DataCheck>| match d {
            None => "-".to_string(),
            Some(DataCheck::Same) => "same".into(),
            Some(DataCheck::Differs {
                first_offset: Some(o),
            }) => format!("DIFFERS at {o:#x}"),
            Some(DataCheck::Differs { first_offset: None }) => "DIFFERS".into(),
            Some(DataCheck::Unreadable { what }) => what.clone(),
        };
        out.push_str(&format!(
            "  integrity #{} {} ({} bytes): at end {}, after teardown {}\n",
            c.call,
            c.target,
            c.bytes,
            one(&c.at_end),
            one(&c.after_teardown)
        ));
    }
    if let Some(e) = &r.coverage {
        out.push_str(&format!("  kcov: {} edges\n", e.len()));
    }
    out
}

/// Controller throughput against the in-guest floor for the same programs.
#[derive(Debug, serde::Serialize)]
pub struct ExecBench {
    pub kernel: String,
    pub programs: usize,
    pub rounds: u64,
    pub controller_per_second: f64,
    pub in_guest_per_second: f64,
    /// controller / in-guest (target ≥ 0.80).
    pub ratio: f64,
    /// The in-guest loop's milliseconds per program, per executor step (`program`,
    /// `refcounts`, …), in the order the steps run.
    pub in_guest_step_ms: Vec<(String, f64)>,
}

pub fn bench(
    vm: &mut Vm,
    corpus: &[(String, Program)],
    rounds: u64,
    timeout: Duration,
) -> Result<ExecBench> {
    let mut runner = Runner::start(vm)?;
    // One warm-up round so both sides start from the same state.
    for (_, p) in corpus {
        runner.run(vm, p, timeout)?;
    }
    let start = Instant::now();
    for _ in 0..rounds {
        for (_, p) in corpus {
            runner.run(vm, p, timeout)?;
        }
    }
    let n = corpus.len() as u64 * rounds;
    let controller = n as f64 / start.elapsed().as_secs_f64();
    drop(runner);
    let batch: String = corpus
        .iter()
        .enumerate()
        .map(|(i, (_, p))| {
            serde_json::to_string(&Request::new(
                i as u64,
                p.to_text(),
                timeout.as_millis() as u64,
            ))
            .unwrap()
                + "\n"
        })
        .collect();
    let out = vm.run_with_input(
        &format!("daxdiff-exec loop --count {rounds}"),
        Some(batch.as_bytes()),
        Duration::from_secs(3600),
    )?;
    if out.status != 0 {
        bail!("in-guest loop failed: {}", out.stderr_str());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("loop output: {}", out.stdout_str()))?;
    let in_guest = report["programs_per_second"]
        .as_f64()
        .context("loop report has programs_per_second")?;
    let programs = report["programs"].as_f64().unwrap_or(0.0).max(1.0);
    let mut in_guest_step_ms: Vec<(String, f64)> = report["step_seconds"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? * 1000.0 / programs)))
                .collect()
        })
        .unwrap_or_default();
    in_guest_step_ms
        .sort_by_key(|(k, _)| STEP_ORDER.iter().position(|s| s == k).unwrap_or(usize::MAX));
    Ok(ExecBench {
        kernel: vm.kernel_name.clone(),
        programs: corpus.len(),
        rounds,
        controller_per_second: controller,
        in_guest_per_second: in_guest,
        ratio: controller / in_guest.max(1e-9),
        in_guest_step_ms,
    })
}

/// The executor's steps in the order they run (`daxdiff_exec::run::steps::Step`), for
/// printing the loop's breakdown; a step not listed goes last.
const STEP_ORDER: [&str; 11] = [
    "parse",
    "prepare",
    "program",
    "exit",
    "teardown",
    "repair",
    "integrity",
    "remove_dirs",
    "zero_devdax",
    "refcounts",
    "reap",
];

impl Drop for Runner {
    /// End of input makes the guest executor exit; wait for the channel to close so the
    /// session is clean for the next command.
    fn drop(&mut self) {
        let _ = self.channel.send_eof();
        let _ = self.channel.wait_close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{BufReader, ErrorKind, Read};

    /// An executor stream as SSH delivers it: chunks, read timeouts, then the end.
    struct Stream(VecDeque<std::io::Result<Vec<u8>>>);

    impl Read for Stream {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.0.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    fn timeout() -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"))
    }

    fn read(parts: Vec<std::io::Result<Vec<u8>>>) -> (Result<Option<String>>, usize) {
        let mut r = BufReader::new(Stream(parts.into()));
        let mut waits = 0;
        let got = read_response(&mut r, |_| {
            waits += 1;
            if waits > 1000 {
                bail!("gave up waiting");
            }
            Ok(())
        });
        (got, waits)
    }

    #[test]
    fn a_line_split_by_timeouts_is_put_together() {
        let (got, waits) = read(vec![
            Ok(b"{\"id\":1,".to_vec()),
            timeout(),
            Ok(b"\"status\":\"ok\"}\n".to_vec()),
        ]);
        assert_eq!(got.unwrap().unwrap(), "{\"id\":1,\"status\":\"ok\"}\n");
        assert_eq!(waits, 1);
    }

    #[test]
    fn an_executor_that_dies_mid_line_is_an_error_at_once() {
        // Before, the end of the stream after a partial line was read again and again: a
        // campaign whose executor was killed while answering spun at full CPU for ever.
        let (got, waits) = read(vec![Ok(b"{\"id\":1,\"calls\":[".to_vec())]);
        let e = got.unwrap_err();
        let cut = e.downcast_ref::<CutResponse>().expect("CutResponse");
        assert_eq!(cut.partial, "{\"id\":1,\"calls\":[");
        assert!(e.to_string().contains("killed or died"), "{e}");
        assert_eq!(waits, 0, "the end of the stream is not waited on");
        // Also after a timeout in between.
        let (got, _) = read(vec![Ok(b"{\"id\"".to_vec()), timeout()]);
        assert!(got.unwrap_err().downcast_ref::<CutResponse>().is_some());
    }

    #[test]
    fn an_executor_that_exits_before_answering_is_none() {
        let (got, _) = read(vec![timeout(), timeout()]);
        assert!(got.unwrap().is_none());
    }

    #[test]
    fn a_hard_read_error_ends_the_wait() {
        let (got, waits) = read(vec![Err(std::io::Error::new(
            ErrorKind::ConnectionReset,
            "reset",
        ))]);
        assert!(got.unwrap_err().to_string().contains("response"));
        assert_eq!(waits, 0);
    }

    #[test]
    fn the_waiter_decides_when_a_silent_executor_is_given_up() {
        let parts = (0..5000).map(|_| timeout()).collect();
        let (got, waits) = read(parts);
        assert_eq!(got.unwrap_err().to_string(), "gave up waiting");
        assert_eq!(waits, 1001);
    }
}
