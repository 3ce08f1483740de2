//! The C reproducer of a finding: written beside it (`repro.c`, `repro.sh`, `setup.sh`), built on the
//! host with `gcc -static` (the guest has no compiler), then copied into a freshly booted
//! guest of each kernel over SSH and run there, its results normalized like the executor's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use daxdiff_prog::wire::{Response, Status, HUNG_TASK_TIMEOUT_SECS};
use daxdiff_prog::{csource, Program, Target};

use crate::cache::write_atomic;
use crate::diff::{normalize, Outcome};
use crate::setup::Prepared;
use crate::vm::MachineProfile;

pub const SOURCE: &str = "repro.c";
pub const SCRIPT: &str = "repro.sh";
/// Prepares a machine's NVDIMMs for the reproducer (once, before `repro.sh`).
pub const SETUP: &str = "setup.sh";
pub const BINARY: &str = "repro";
/// Starts the line the guest-side wrapper prints with the reproducer's exit status.
const MARK: &str = "@@daxdiff-repro";

/// Writes `repro.c`, `repro.sh` and `setup.sh` into `dir` and builds `repro`; returns the
/// binary.
pub fn build(dir: &Path, prog: &Program, header: &[String]) -> Result<PathBuf> {
    let c = csource::emit(Target::builtin(), prog, header)?;
    write_atomic(&dir.join(SOURCE), c.as_bytes())?;
    write_atomic(&dir.join(SCRIPT), csource::RUN_SCRIPT.as_bytes())?;
    write_atomic(
        &dir.join(SETUP),
        csource::setup_script(Target::builtin(), prog).as_bytes(),
    )?;
    let bin = dir.join(BINARY);
    let tmp = dir.join(format!(".{BINARY}.tmp"));
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-pthread", "-Wall", "-o"])
        .arg(&tmp)
        .arg(dir.join(SOURCE))
        .output()
        .context("run gcc (install it: apt-get install gcc libc6-dev)")?;
    if !out.status.success() {
        bail!(
            "gcc could not build {}: {}",
            dir.join(SOURCE).display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, &bin).with_context(|| format!("write {}", bin.display()))?;
    Ok(bin)
}

/// One run of the reproducer in a fresh guest.
pub struct GuestRun {
    pub outcome: Outcome,
    /// `completed`, `exit N`, `timeout` or `crashed`.
    pub status: String,
    pub stdout: String,
    pub console: Vec<String>,
}

/// Boots `kernel`, copies the reproducer and its script in, runs it with a deadline of
/// `timeout`, and shuts the guest down. A reproducer still running at the deadline (a task
/// blocked in the kernel) is a timeout; a guest whose kernel died is a crash.
pub fn run_in_guest(kernel: &Prepared, binary: &Path, timeout: Duration) -> Result<GuestRun> {
    let bin = std::fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    let mut vm = kernel.boot(MachineProfile::default(), None)?;
    let copy = Duration::from_secs(120);
    for (path, bytes, mode) in [
        ("/tmp/repro", bin.as_slice(), "755"),
        ("/tmp/repro.sh", csource::RUN_SCRIPT.as_bytes(), "644"),
    ] {
        let out = vm
            .run_with_input(
                &format!("cat > {path} && chmod {mode} {path}"),
                Some(bytes),
                copy,
            )
            .with_context(|| format!("copy {path} into the guest"))?;
        if out.status != 0 {
            bail!("copy {path} into the guest: {}", out.stderr_str());
        }
    }
    let from = vm.console.len();
    // In the background with a marker file: a reproducer blocked in the kernel cannot be
    // killed, but its results so far can still be read.
    let secs = timeout.as_secs().max(1);
    // As while fuzzing: a task the reproducer leaves blocked is reported within seconds,
    // not after the kernel's default two minutes.
    let cmd = format!(
        "h=/proc/sys/kernel/hung_task_timeout_secs; [ -w $h ] && echo {HUNG_TASK_TIMEOUT_SECS} >$h; \
         (sh /tmp/repro.sh /tmp/repro >/tmp/repro.out 2>/tmp/repro.err; echo $? >/tmp/repro.rc) \
         </dev/null >/dev/null 2>&1 & \
         i=0; while [ ! -f /tmp/repro.rc ] && [ $i -lt {secs} ]; do sleep 1; i=$((i+1)); done; \
         if [ -f /tmp/repro.rc ]; then echo \"{MARK} exit $(cat /tmp/repro.rc)\"; \
         else echo '{MARK} timeout'; fi; cat /tmp/repro.out"
    );
    let result = vm.run(&cmd, timeout + Duration::from_secs(60));
    // The kernel may still be printing the report the last call caused. A reproducer still
    // blocked at the deadline is given the time khungtaskd needs to notice it (it looks
    // once per timeout period, so up to twice the timeout).
    let timed_out = matches!(&result, Ok(o) if o.stdout_str().contains(&format!("{MARK} timeout")));
    if timed_out {
        let until = std::time::Instant::now() + Duration::from_secs(2 * HUNG_TASK_TIMEOUT_SECS + 5);
        let _ = vm
            .console
            .wait_for(from, until, |l| l.text.contains("blocked for more than"));
    }
    std::thread::sleep(Duration::from_secs(2));
    let console: Vec<String> = vm.console.since(from).into_iter().map(|l| l.text).collect();
    let dead = vm.console.first_fatal(from).is_some();
    let (status, wire_status, stdout) = match result {
        Ok(o) => {
            let out = o.stdout_str();
            let status = out
                .lines()
                .find_map(|l| l.strip_prefix(MARK))
                .map(str::trim)
                .unwrap_or("no status")
                .to_string();
            let wire = match status.as_str() {
                "exit 0" => Status::Completed,
                "timeout" => Status::Timeout,
                _ => Status::Error,
            };
            let status = if status == "exit 0" {
                "completed".to_string()
            } else {
                status
            };
            (status, wire, out)
        }
        Err(_) if dead => ("crashed".to_string(), Status::Crashed, String::new()),
        Err(e) => bail!(
            "{}: the guest stopped answering while the reproducer ran: {e:#}",
            kernel.kernel.name
        ),
    };
    let _ = vm.shutdown();
    let resp = Response {
        id: 0,
        status: wire_status,
        calls: csource::parse_output(&stdout),
        stack: None,
        detail: None,
        // The C program reports call results only: no teardown, probe or coverage.
        protocol: daxdiff_prog::wire::PROTOCOL_VERSION,
        teardown: Vec::new(),
        refcounts: None,
        integrity: Vec::new(),
        coverage: None,
    };
    Ok(GuestRun {
        outcome: normalize(&resp, &console),
        status,
        stdout,
        console,
    })
}
