//! Advisory locks on files (`flock(2)`): one process owns a workdir, a cache entry, a build
//! directory or a state file at a time. A lock goes with the process that holds it, so a
//! killed process never leaves one behind, and "can I take it?" tells whether the owner of a
//! leftover directory is still alive.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock could not be taken because another live process holds it.
#[derive(Debug, thiserror::Error)]
#[error("{what} {} is in use by another daxdiff process{}; wait for it to finish or stop it",
        .path.display(), .holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
pub struct Busy {
    pub what: String,
    pub path: PathBuf,
    /// The pid the holder wrote into the lock file, when it did.
    pub holder: Option<u32>,
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    file: fs::File,
    path: PathBuf,
}

fn flock(f: &fs::File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor this module owns for the call's duration.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

impl Lock {
    /// Takes the lock at `path` (created if missing) without waiting; [`Busy`] if another
    /// process holds it. `what` names the thing locked in the error ("workdir", "cache entry").
    pub fn try_take(path: &Path, what: &str) -> anyhow::Result<Lock> {
        let file = open(path)
            .map_err(|e| anyhow::anyhow!("cannot create the lock file {}: {e}", path.display()))?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                let holder = fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                let owner = path.parent().unwrap_or(path).to_path_buf();
                return Err(Busy {
                    what: what.to_string(),
                    path: owner,
                    holder,
                }
                .into());
            }
            Err(e) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
        let lock = Lock {
            file,
            path: path.to_path_buf(),
        };
        lock.write_pid();
        Ok(lock)
    }

    /// Takes the lock at `path`, waiting for another holder to let go; `waiting` is called
    /// once, before the wait, when it has to wait (to say so).
    pub fn take(path: &Path, what: &str, waiting: impl FnOnce(&Busy)) -> anyhow::Result<Lock> {
        match Lock::try_take(path, what) {
            Ok(l) => Ok(l),
            Err(e) => {
                let Some(busy) = e.downcast_ref::<Busy>() else {
                    return Err(e);
                };
                waiting(busy);
                let file = open(path).map_err(|e| {
                    anyhow::anyhow!("cannot open the lock file {}: {e}", path.display())
                })?;
                flock(&file, libc::LOCK_EX)
                    .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", path.display()))?;
                let lock = Lock {
                    file,
                    path: path.to_path_buf(),
                };
                lock.write_pid();
                Ok(lock)
            }
        }
    }

    fn write_pid(&self) {
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = (&self.file).write_all(format!("{}\n", std::process::id()).as_bytes());
        let _ = f.flush();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether some live process holds the lock at `path` (a missing file: nobody).
pub fn is_held(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {
            let _ = flock(&f, libc::LOCK_UN);
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let first = Lock::try_take(&p, "workdir").unwrap();
        assert!(is_held(&p));
        // flock locks belong to open file descriptions: a second open in the same process
        // conflicts just as another process would.
        let e = Lock::try_take(&p, "workdir").unwrap_err();
        let busy = e.downcast_ref::<Busy>().expect("Busy");
        assert_eq!(busy.holder, Some(std::process::id()));
        assert!(e.to_string().contains("workdir"), "{e}");
        drop(first);
        assert!(!is_held(&p));
        Lock::try_take(&p, "workdir").unwrap();
    }

    #[test]
    fn take_waits_for_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let first = Lock::try_take(&p, "entry").unwrap();
        let p2 = p.clone();
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = waited.clone();
        let t = std::thread::spawn(move || {
            Lock::take(&p2, "entry", |_| {
                w.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .unwrap()
        });
        while !waited.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        drop(first);
        let second = t.join().unwrap();
        assert_eq!(second.path(), p.as_path());
    }

    #[test]
    fn a_missing_lock_file_is_not_held() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_held(&d.path().join("nothing")));
    }
}
