//! Nothing outlives us: every QEMU we start and every private directory we make (a guest's
//! run directory: its SSH key, NVDIMM copies, console) is registered here. A Ctrl-C, SIGTERM
//! or SIGHUP kills those QEMUs and removes those directories before exiting (`Drop` does not
//! run on `exit`); QEMU dies with us even if we are killed outright (PR_SET_PDEATHSIG); and
//! a directory left by a process that was killed outright is swept by the next one, which
//! knows its owner is gone because the owner's lock on it is free.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::lock::{self, Lock};

static PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn pids() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    PIDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn dirs() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    DIRS.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn register(pid: u32) {
    pids().insert(pid);
}

pub fn unregister(pid: u32) {
    pids().remove(&pid);
}

/// The pids of the QEMU processes this controller started and has not yet reaped.
pub fn live() -> Vec<u32> {
    pids().iter().copied().collect()
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

/// A directory removed when the process exits by a signal, as well as when it is dropped.
pub fn register_dir(dir: &Path) {
    dirs().insert(dir.to_path_buf());
}

pub fn unregister_dir(dir: &Path) {
    dirs().remove(dir);
}

/// A directory registered for removal on a signal while this guard lives (a build directory
/// that becomes a cache entry when the build succeeds).
pub struct Registered(PathBuf);

impl Registered {
    pub fn new(dir: &Path) -> Registered {
        register_dir(dir);
        Registered(dir.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        unregister_dir(&self.0);
    }
}

/// Removes every registered directory (what the signal handler does after killing QEMU).
pub fn remove_dirs() -> usize {
    let all: Vec<PathBuf> = std::mem::take(&mut *dirs()).into_iter().collect();
    all.iter()
        .filter(|d| std::fs::remove_dir_all(d).is_ok())
        .count()
}

/// Installs the Ctrl-C / SIGTERM / SIGHUP handler: kill our QEMUs, remove our private
/// directories, then exit 130. (The `ctrlc` crate runs it on a thread of its own, not in
/// signal context, so it may take locks and touch files.)
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        let guests = live().len();
        kill_all();
        let removed = remove_dirs();
        eprintln!(
            "\ninterrupted: stopped {guests} guest(s), removed {removed} run director(y/ies)"
        );
        std::process::exit(130);
    });
}

/// The child gets SIGKILL when the thread that started it goes away. If we died between the
/// fork and the prctl, the signal will never come: the child sees it has been re-parented and
/// does not start.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch only the child's own state.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the controller exited before this child started",
                ));
            }
            Ok(())
        });
    }
}

/// Name of the lock file that marks a private directory's owner as alive.
const OWNER: &str = ".owner";

/// A private directory (mode 0700) in the temporary directory, owned by this process: its
/// `.owner` lock is held while it lives; removed on drop, on a signal, or — if we are killed
/// outright — by the next daxdiff's [`sweep_stale`].
pub struct PrivateDir {
    path: PathBuf,
    _owner: Lock,
    _registered: Registered,
}

impl PrivateDir {
    pub fn new(prefix: &str) -> anyhow::Result<PrivateDir> {
        PrivateDir::new_in(&std::env::temp_dir(), prefix)
    }

    pub fn new_in(parent: &Path, prefix: &str) -> anyhow::Result<PrivateDir> {
        // tempfile makes the directory 0700 with a unique name; we keep it ourselves.
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| {
                anyhow::anyhow!("create a private directory in {}: {e}", parent.display())
            })?
            .keep();
        let registered = Registered::new(&path);
        let owner = Lock::try_take(&path.join(OWNER), "run directory")?;
        Ok(PrivateDir {
            path,
            _owner: owner,
            _registered: registered,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    /// Removes the directory; the registration ends right after (field drop order).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the `prefix*` directories in `parent` whose owner is gone (their `.owner` lock is
/// free): what a daxdiff killed with SIGKILL left. Directories without an owner file, of
/// another user, or still owned are left alone. Returns what it removed.
pub fn sweep_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let named = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !named || !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let owner = path.join(OWNER);
        if owner.exists() && !lock::is_held(&owner) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These tests share the process-wide registry, which `remove_dirs` empties.
    static SERIAL: Mutex<()> = Mutex::new(());
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_private_directory_is_0700_and_gone_when_dropped() {
        let _serial = serial();
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let d = PrivateDir::new_in(parent.path(), "daxdiff-vm-").unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dirs().contains(d.path()));
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
        assert!(!dirs().contains(&p));
    }

    #[test]
    fn the_sweep_removes_only_directories_whose_owner_is_gone() {
        let _serial = serial();
        let parent = tempfile::tempdir().unwrap();
        let live = PrivateDir::new_in(parent.path(), "daxdiff-vm-").unwrap();
        // What a killed daxdiff leaves: the owner file is there, nobody holds its lock.
        let dead = parent.path().join("daxdiff-vm-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(OWNER), "12345\n").unwrap();
        std::fs::write(dead.join("id_ed25519"), "secret").unwrap();
        // Not ours to judge: no owner file, or another prefix.
        let foreign = parent.path().join("daxdiff-vm-foreign");
        std::fs::create_dir(&foreign).unwrap();
        let other = parent.path().join("other-dead");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(OWNER), "1\n").unwrap();

        let removed = sweep_stale(parent.path(), "daxdiff-vm-");
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.path().exists());
        assert!(foreign.exists());
        assert!(other.exists());
    }

    #[test]
    fn registered_directories_are_removed_as_on_a_signal() {
        let _serial = serial();
        let parent = tempfile::tempdir().unwrap();
        let d = parent.path().join("run");
        std::fs::create_dir(&d).unwrap();
        register_dir(&d);
        assert!(remove_dirs() >= 1);
        assert!(!d.exists());
    }
}
