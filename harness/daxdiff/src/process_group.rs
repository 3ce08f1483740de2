//! A command run in its own process group that goes with daxdiff: everything it starts is
//! killed when it ends, when its caller drops it early, and when daxdiff dies, even by
//! SIGKILL (a user's build command must not go on building into a directory the next run
//! of daxdiff builds into too).

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};

/// The direct child is this shell: it gets SIGTERM when daxdiff dies (PR_SET_PDEATHSIG,
/// which reaches only the direct child) and kills its whole group then. The command starts
/// only after the trap is set, so a death before that leaves nothing behind.
const SUPERVISOR: &str = r#"trap 'kill -KILL 0' TERM
"$@" &
wait $!"#;

/// A running command and its process group.
pub struct Group {
    child: Child,
    done: Option<ExitStatus>,
}

impl Group {
    /// `program args…` under the supervisor shell: set its directory, environment and
    /// stdio on the command returned, then [`Group::start`] it.
    pub fn command(program: impl AsRef<OsStr>, args: &[&OsStr]) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(program)
            .args(args);
        sh
    }

    /// Starts a command from [`Group::command`] in a new process group.
    pub fn start(mut sh: Command) -> io::Result<Group> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: setpgid, prctl and getppid are async-signal-safe and change only the child.
        unsafe {
            sh.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl: nobody would signal us then.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        Ok(Group {
            child: sh.spawn()?,
            done: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the command; what it left running in its group is killed before it is
    /// reaped (its pid, the group's id, stays reserved until then).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.done {
            return Ok(s);
        }
        let pid = self.child.id() as libc::pid_t;
        loop {
            // SAFETY: waitid on our own child, leaving it waitable (WNOWAIT).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.kill_group();
        let s = self.child.wait()?;
        self.done = Some(s);
        Ok(s)
    }

    fn kill_group(&self) {
        // SAFETY: the group's leader is our unreaped child, so the id is still ours.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
}

impl Drop for Group {
    /// Given up before it ended: the whole group goes.
    fn drop(&mut self) {
        if self.done.is_none() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn alive(pid: i32) -> bool {
        // A zombie is gone for our purpose: /proc says so.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    fn wait_gone(pid: i32) -> bool {
        let t = Instant::now();
        while alive(pid) {
            if t.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn grandchild_of(script: &str, dir: &std::path::Path) -> (Group, i32) {
        let pidfile = dir.join("grandchild");
        let mut cmd = Group::command("sh", &[OsStr::new("-c"), OsStr::new(script)]);
        cmd.env("PIDFILE", &pidfile);
        let g = Group::start(cmd).unwrap();
        let t = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return (g, pid);
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no grandchild");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn what_a_finished_command_left_running_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let (mut g, pid) = grandchild_of(
            "sleep 300 & echo $! > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; exit 3",
            d.path(),
        );
        assert_eq!(g.wait().unwrap().code(), Some(3));
        assert!(wait_gone(pid), "the command's background sleep outlived it");
    }

    #[test]
    fn a_command_given_up_early_goes_with_everything_it_started() {
        let d = tempfile::tempdir().unwrap();
        let (g, pid) = grandchild_of(
            "sleep 300 & echo $! > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; wait",
            d.path(),
        );
        let leader = g.id() as i32;
        drop(g);
        assert!(wait_gone(pid) && wait_gone(leader));
    }
}
