//! Proof that DAX is really on: a freshly written file on the mount must carry
//! `STATX_ATTR_DAX`, and the device-dax character device must map.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::statx::{statx, STATX_ATTR_DAX};

const PROBE_NAME: &str = ".daxdiff-dax-probe";

/// What the probe file showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileProbe {
    pub dax: bool,
    /// Whether the filesystem reports the DAX attribute at all (mask bit set).
    pub dax_reported: bool,
}

/// Writes, syncs and `statx`es a probe file in `dir`, then removes it.
pub fn probe_file(dir: &Path) -> Result<FileProbe, String> {
    let path = dir.join(PROBE_NAME);
    let result = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        f.write_all(&[0xa5u8; 2 * 4096])
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        f.sync_all()
            .map_err(|e| format!("fsync of {}: {e}", path.display()))?;
        drop(f);
        let st = statx(&path).map_err(|e| format!("statx of {}: {e}", path.display()))?;
        Ok(FileProbe {
            dax: st.attributes & STATX_ATTR_DAX != 0,
            dax_reported: st.attributes_mask & STATX_ATTR_DAX != 0,
        })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Checks `/dev/daxX.Y` is a character device and that one `align`-sized piece maps and reads.
pub fn probe_chardev(chardev: &Path, align: u64) -> Result<(), String> {
    let meta =
        std::fs::metadata(chardev).map_err(|e| format!("{} is missing: {e}", chardev.display()))?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{} is not a character device", chardev.display()));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(chardev)
        .map_err(|e| format!("opening {}: {e}", chardev.display()))?;
    let len = align.max(4096) as usize;
    // SAFETY: a fresh shared mapping of an fd we own; unmapped below before f is dropped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {len} bytes of {}: {}",
            chardev.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: p maps len readable bytes; a volatile read forces the fault.
    unsafe {
        std::ptr::read_volatile(p as *const u8);
        libc::munmap(p, len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_probe_reports_no_dax_and_cleans_up() {
        let dir =
            std::path::PathBuf::from(format!("/dev/shm/daxdiff-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = probe_file(&dir).unwrap();
        assert!(!p.dax);
        assert!(!dir.join(PROBE_NAME).exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn probe_in_missing_dir_fails_with_path() {
        let e = probe_file(Path::new("/nonexistent/daxdiff")).unwrap_err();
        assert!(e.contains("/nonexistent/daxdiff"), "{e}");
    }

    #[test]
    fn chardev_probe_rejects_regular_files_and_missing_nodes() {
        let e = probe_chardev(Path::new("/dev/dax-daxdiff-none"), 2 << 20).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        let e = probe_chardev(Path::new("/proc/self/status"), 4096).unwrap_err();
        assert!(e.contains("not a character device"), "{e}");
    }
}
