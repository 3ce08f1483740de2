//! Running one program in a fresh child process: fork, stream the child's call results
//! back over a pipe, enforce the timeout, dump the kernel stacks of a hung program, and
//! kill whatever it left behind.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::os::unix::io::FromRawFd;
use std::time::{Duration, Instant};

use daxdiff_prog::wire::{CallResult, Status};
use daxdiff_prog::{Program, Target};
use serde::{Deserialize, Serialize};

use super::env::{ProgDirs, RunEnv};
use super::hang::{self, HangWatch};
use super::integrity::MappingSeen;
use super::interp::{Interp, Sink};
use super::stacks;

/// Lowest descriptor number for the result pipe in the child, above what programs
/// name as raw integers, so a program closing "fd 3" does not cut the channel.
const RESULT_FD_FLOOR: i32 = 900;
/// How long a killed child may take to die before it is reported unkillable.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often a program that sends nothing is looked at for a hang (`hang`).
const HANG_SAMPLE: Duration = Duration::from_millis(250);

/// One line from the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildMsg {
    Call(CallResult),
    Coverage(Vec<u32>),
    DevdaxWritten { offset: u64, len: u64 },
    Mapping(MappingSeen),
}

struct PipeSink {
    fd: i32,
}

impl Sink for PipeSink {
    fn emit(&self, r: &CallResult) {
        self.send(&ChildMsg::Call(r.clone()));
    }

    fn fd(&self) -> Option<i32> {
        Some(self.fd)
    }

    fn coverage(&self, edges: &BTreeSet<u32>) {
        self.send(&ChildMsg::Coverage(edges.iter().copied().collect()));
    }

    fn devdax_written(&self, offset: u64, len: u64) {
        self.send(&ChildMsg::DevdaxWritten { offset, len });
    }

    fn mapping(&self, m: &MappingSeen) {
        self.send(&ChildMsg::Mapping(m.clone()));
    }
}

impl PipeSink {
    fn send(&self, msg: &ChildMsg) {
        let mut line = serde_json::to_string(msg).unwrap_or_default();
        line.push('\n');
        let b = line.as_bytes();
        let mut off = 0;
        while off < b.len() {
            // SAFETY: writing our own buffer to our pipe.
            let n = unsafe { libc::write(self.fd, b[off..].as_ptr().cast(), b.len() - off) };
            if n <= 0 {
                return;
            }
            off += n as usize;
        }
    }
}

/// How the child run went, before cleanup.
pub struct ChildRun {
    pub status: Status,
    pub calls: Vec<CallResult>,
    pub stack: Option<String>,
    pub detail: Option<String>,
    /// The child (or a helper in its group) could not be killed: it is stuck in the kernel.
    pub unkillable: bool,
    /// KCOV edges, when the child got to send them.
    pub coverage: Option<Vec<u32>>,
    /// Device-dax ranges (offset, length) the program wrote.
    pub devdax_written: Vec<(u64, u64)>,
    pub mappings: Vec<MappingSeen>,
    /// How long the program's processes took to go after its last call (or the kill).
    pub exit_duration: Duration,
}

fn describe_wait(status: i32) -> (Status, Option<String>) {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => (Status::Completed, None),
            c => (
                Status::Error,
                Some(format!("program child exited with status {c}")),
            ),
        }
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: strsignal returns a static or thread-local string.
        let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(sig)) }
            .to_string_lossy()
            .into_owned();
        (
            Status::Crashed,
            Some(format!("program child killed by signal {sig} ({name})")),
        )
    } else {
        (
            Status::Error,
            Some(format!("program child ended with wait status {status:#x}")),
        )
    }
}

/// Waits for `pid` until `deadline`; `None` when it is still there.
pub(super) fn wait_until(pid: i32, deadline: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking waitpid with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(status);
        }
        if rc < 0 || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills the whole process group and reaps what can be reaped.
pub(super) fn kill_group(pgid: i32) {
    // SAFETY: signalling a process group we created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Runs `prog` in a forked child and collects its results. The program ends at its timeout,
/// or earlier when it is hung (`hang`): both are `Status::Timeout` with the stacks.
pub fn run_child(
    target: &'static Target,
    prog: &Program,
    env: &RunEnv,
    dirs: &ProgDirs,
    timeout: Duration,
) -> io::Result<ChildRun> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    // SAFETY: fork; the child runs the interpreter and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing our pipe ends.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: child-side setup on descriptors we own.
        let fd = unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(rfd);
            let fd = libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, RESULT_FD_FLOOR);
            libc::close(wfd);
            // The protocol runs on stdout: the program must not be able to write to it.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
            libc::chdir(c"/".as_ptr());
            fd
        };
        let sink = PipeSink { fd };
        Interp::new(target, prog, env, dirs, &sink).run();
        // SAFETY: leave without running the parent's exit handlers or flushing its buffers.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the parent's copy of the write end; the child has its own.
    unsafe {
        libc::setpgid(pid, pid);
        libc::close(wfd);
    }
    // SAFETY: rfd is ours from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(rfd) };
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut eof = false;
    let mut timed_out = false;
    let mut hung = false;
    let mut watch = HangWatch::default();
    while !eof {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut pfd = libc::pollfd {
            fd: rfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.min(HANG_SAMPLE).as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            kill_group(pid);
            return Err(e);
        }
        if n == 0 {
            if watch.observe(hang::snapshot(pid), Instant::now(), hang::HUNG_AFTER) {
                timed_out = true;
                hung = true;
                break;
            }
            continue;
        }
        let mut chunk = [0u8; 8192];
        match pipe.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => eof = true,
        }
    }
    let mut stack = None;
    let mut detail = None;
    let mut status = Status::Completed;
    let mut unkillable = false;
    if timed_out {
        // The stacks first: killing would unwind whatever is interruptible.
        stack = Some(stacks::dump_group(pid));
        status = Status::Timeout;
        detail = Some(if hung {
            format!(
                "program hung: every task in uninterruptible sleep, not woken for {} s \
                 (of its {} ms)",
                hang::HUNG_AFTER.as_secs(),
                timeout.as_millis()
            )
        } else {
            format!("program did not finish within {} ms", timeout.as_millis())
        });
    }
    // A child past its last result may still be tearing down (unmapping, io_uring exit):
    // it gets what is left of its time, and at least a grace period.
    let now = Instant::now();
    let exit_started = now;
    let wait_deadline = if timed_out {
        now
    } else {
        deadline.max(now + KILL_GRACE)
    };
    let mut exit = wait_until(pid, wait_deadline);
    if exit.is_none() {
        kill_group(pid);
        exit = wait_until(pid, Instant::now() + KILL_GRACE);
    }
    match exit {
        Some(ws) if !timed_out => {
            let (s, d) = describe_wait(ws);
            status = s;
            detail = d;
        }
        Some(_) => {}
        None => {
            unkillable = true;
            let note = "program child did not die after SIGKILL (stuck in the kernel)";
            detail = Some(match detail {
                Some(d) => format!("{d}; {note}"),
                None => note.to_string(),
            });
            if stack.is_none() {
                stack = Some(stacks::dump_group(pid));
            }
            if status == Status::Completed {
                status = Status::Timeout;
            }
        }
    }
    let exit_duration = exit_started.elapsed();
    // Leftovers: forked holders, helpers still running.
    kill_group(pid);
    if !eof {
        // Whatever the child managed to write before dying.
        // SAFETY: rfd is valid; make the drain non-blocking.
        unsafe { libc::fcntl(rfd, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut chunk = [0u8; 8192];
        while let Ok(k) = pipe.read(&mut chunk) {
            if k == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..k]);
        }
    }
    let mut run = ChildRun {
        status,
        calls: Vec::new(),
        stack,
        detail,
        unkillable,
        coverage: None,
        devdax_written: Vec::new(),
        mappings: Vec::new(),
        exit_duration,
    };
    for line in String::from_utf8_lossy(&buf).lines() {
        match serde_json::from_str::<ChildMsg>(line) {
            Ok(ChildMsg::Call(c)) => run.calls.push(c),
            Ok(ChildMsg::Coverage(e)) => run.coverage = Some(e),
            Ok(ChildMsg::DevdaxWritten { offset, len }) => run.devdax_written.push((offset, len)),
            Ok(ChildMsg::Mapping(m)) => run.mappings.push(m),
            Err(_) => {}
        }
    }
    Ok(run)
}

/// Reaps any finished process re-parented to the executor (it is a child subreaper).
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc <= 0 {
            return;
        }
    }
}
