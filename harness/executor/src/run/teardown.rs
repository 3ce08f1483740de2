//! Teardown liveness: after a program, the DAX filesystems are unmounted and mounted again
//! and the device-dax device disabled and enabled, each step in its own process under a
//! deadline. A step that does not finish is an outcome (`blocked`, with the kernel stacks of
//! the task running it), not a lost guest.

use std::io::Read;
use std::os::unix::io::FromRawFd;
use std::time::{Duration, Instant};

use daxdiff_prog::wire::{errno_name, StepResult, TeardownStep};

use super::env::RunEnv;
use super::stacks;
use super::supervise::{kill_group, wait_until};
use crate::command;
use crate::mounts;

/// How long a killed step may take to die before it is left behind.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// io_uring and deferred file release can hold a mount busy a moment after the program.
const UMOUNT_BUSY_RETRY: Duration = Duration::from_secs(2);

/// Runs `f` in a child process (its own process group) with a deadline.
pub fn bounded(
    step: &str,
    timeout: Duration,
    f: impl FnOnce() -> Result<(), String>,
) -> TeardownStep {
    let start = Instant::now();
    let done = |result| TeardownStep {
        step: step.to_string(),
        result,
        duration_ms: start.elapsed().as_millis() as u64,
    };
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return done(StepResult::Failed {
            detail: format!("pipe: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: fork; the child runs the step and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        // SAFETY: closing our pipe ends.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        return done(StepResult::Failed {
            detail: format!("fork: {}", std::io::Error::last_os_error()),
        });
    }
    if pid == 0 {
        // SAFETY: child-side setup, then the step, then _exit without the parent's handlers.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(fds[0]);
        }
        let code = match f() {
            Ok(()) => 0,
            Err(msg) => {
                // SAFETY: writing our own buffer to our pipe end.
                unsafe { libc::write(fds[1], msg.as_ptr().cast(), msg.len()) };
                1
            }
        };
        // SAFETY: leave the child.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the parent's copy of the write end; its own group for the stacks and the kill.
    unsafe {
        libc::setpgid(pid, pid);
        libc::close(fds[1]);
    }
    // SAFETY: fds[0] is ours from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    match wait_until(pid, start + timeout) {
        Some(ws) => {
            let mut msg = String::new();
            let _ = pipe.read_to_string(&mut msg);
            if libc::WIFEXITED(ws) && libc::WEXITSTATUS(ws) == 0 {
                done(StepResult::Ok)
            } else if msg.is_empty() {
                done(StepResult::Failed {
                    detail: format!("step ended with wait status {ws:#x}"),
                })
            } else {
                done(StepResult::Failed { detail: msg })
            }
        }
        None => {
            // The stacks first: killing unwinds whatever is interruptible.
            let stack = stacks::dump_group(pid);
            let r = done(StepResult::Blocked { stack });
            kill_group(pid);
            let _ = wait_until(pid, Instant::now() + KILL_GRACE);
            r
        }
    }
}

fn errno_of(e: &std::io::Error) -> String {
    e.raw_os_error()
        .and_then(errno_name)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
}

fn umount_retrying(mp: &str) -> Result<(), String> {
    let until = Instant::now() + UMOUNT_BUSY_RETRY;
    loop {
        match mounts::umount(mp) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("umount: {}", errno_of(&e))),
        }
    }
}

fn daxctl(verb: &str, chardev: &str) -> Result<(), String> {
    // The step's own deadline is what bounds it; this one only keeps a child from lingering.
    let out = command::run("daxctl", &[verb, chardev], Duration::from_secs(3600));
    if out.success() {
        Ok(())
    } else {
        Err(format!("daxctl {verb}: {}", out.failure_reason()))
    }
}

/// The steps after the program's own `exit` step: each filesystem unmounted and mounted,
/// then the device-dax device disabled and enabled. A blocked step skips the rest; a failed
/// unmount skips its mount (the cleanup repairs the mount).
pub fn run(env: &RunEnv, timeout: Duration) -> Vec<TeardownStep> {
    let mut steps: Vec<TeardownStep> = Vec::new();
    let blocked = |steps: &[TeardownStep]| {
        steps
            .iter()
            .any(|s| matches!(s.result, StepResult::Blocked { .. }))
    };
    let skipped = |step: String| TeardownStep {
        step,
        result: StepResult::Skipped,
        duration_ms: 0,
    };
    for fs in env.fs_targets() {
        let Some(dev) = &fs.blockdev else { continue };
        let mp = fs.mountpoint.to_string_lossy().into_owned();
        let (u, m) = (
            format!("umount {}", fs.fstype),
            format!("mount {}", fs.fstype),
        );
        if blocked(&steps) {
            steps.push(skipped(u));
            steps.push(skipped(m));
            continue;
        }
        let um = bounded(&u, timeout, || umount_retrying(&mp));
        let ok = um.result == StepResult::Ok;
        steps.push(um);
        if !ok {
            steps.push(skipped(m));
            continue;
        }
        steps.push(bounded(&m, timeout, || {
            mounts::mount(dev, &mp, &fs.fstype, &fs.mount_data)
                .map_err(|e| format!("mount: {}", errno_of(&e)))
        }));
    }
    if let Some(dd) = &env.devdax {
        for verb in ["disable", "enable"] {
            let name = format!("{verb} devdax");
            if blocked(&steps) {
                steps.push(skipped(name));
            } else {
                steps.push(bounded(&name, timeout, || {
                    daxctl(&format!("{verb}-device"), &dd.chardev)
                }));
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_that_finishes_is_ok_or_failed_with_its_message() {
        let _turn = super::super::FORK_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let ok = bounded("noop", Duration::from_secs(5), || Ok(()));
        assert_eq!(ok.result, StepResult::Ok);
        assert_eq!(ok.step, "noop");
        let failed = bounded("mount", Duration::from_secs(5), || {
            Err("mount: EINVAL".to_string())
        });
        assert_eq!(
            failed.result,
            StepResult::Failed {
                detail: "mount: EINVAL".into()
            },
            "{failed:?}"
        );
    }

    #[test]
    fn a_step_past_its_deadline_is_blocked_with_its_stack_and_killed() {
        let _turn = super::super::FORK_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let step = bounded("sleep", Duration::from_millis(300), || {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        });
        assert!(start.elapsed() < Duration::from_secs(5));
        let StepResult::Blocked { stack } = &step.result else {
            panic!("expected blocked, got {step:?}")
        };
        assert!(stack.contains("== pid "), "{stack}");
        assert!(step.duration_ms >= 300);
    }

    #[test]
    fn plain_directories_have_no_steps() {
        let env = RunEnv::plain_dirs(std::path::Path::new("/tmp"), std::path::Path::new("/tmp"));
        assert!(run(&env, Duration::from_secs(1)).is_empty());
    }
}
