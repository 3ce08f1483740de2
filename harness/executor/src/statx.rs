//! The `statx(2)` call, for the one attribute bring-up depends on: `STATX_ATTR_DAX`, the
//! kernel's word on whether a file's data is accessed through DAX.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `STATX_ATTR_DAX` from `<linux/stat.h>` (Linux 5.8+).
pub const STATX_ATTR_DAX: u64 = 0x0020_0000;

/// The fields of `struct statx` the harness reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statx {
    pub mode: u32,
    pub size: u64,
    pub blocks: u64,
    pub attributes: u64,
    /// Which bits of `attributes` the filesystem supports reporting.
    pub attributes_mask: u64,
    pub ino: u64,
}

impl Statx {
    pub fn is_dax(&self) -> bool {
        self.attributes & STATX_ATTR_DAX != 0
    }
}

pub fn statx(path: &Path) -> io::Result<Statx> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and buf is a writable statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS,
            &mut buf,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Statx {
        mode: buf.stx_mode as u32,
        size: buf.stx_size,
        blocks: buf.stx_blocks,
        attributes: buf.stx_attributes,
        attributes_mask: buf.stx_attributes_mask,
        ino: buf.stx_ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tmpfs_file_is_not_dax() {
        // /dev/shm is tmpfs on every Linux host and guest this runs on.
        let path =
            std::path::PathBuf::from(format!("/dev/shm/daxdiff-statx-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        drop(f);
        let st = statx(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(st.size, 8192);
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFREG);
        assert!(!st.is_dax(), "a tmpfs file reported STATX_ATTR_DAX");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = statx(Path::new("/nonexistent/daxdiff")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
