//! No orphaned QEMU: every QEMU we start is registered here, killed by a Ctrl-C/SIGTERM
//! handler, and dies with us even if we are killed outright (PR_SET_PDEATHSIG).

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

static PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

pub fn register(pid: u32) {
    PIDS.lock().unwrap().insert(pid);
}

pub fn unregister(pid: u32) {
    PIDS.lock().unwrap().remove(&pid);
}

/// The pids of the QEMU processes this controller started and has not yet reaped.
pub fn live() -> Vec<u32> {
    PIDS.lock().unwrap().iter().copied().collect()
}

/// Kills every registered process (by pid, only ours).
pub fn kill_all() {
    for pid in live() {
        // SAFETY: kill(2) on a pid we started and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Installs the Ctrl-C / SIGTERM / SIGHUP handler: kill our QEMUs, then exit 130.
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        kill_all();
        eprintln!("\ninterrupted: stopped {} guest(s)", live().len());
        std::process::exit(130);
    });
}

/// The child gets SIGKILL when the thread that started it goes away.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
