//! The mount table (`/proc/mounts`) and the mount/umount system calls bring-up uses.

use std::ffi::CString;
use std::io;

/// One line of `/proc/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

impl MountEntry {
    /// True when the options force DAX for every file (`dax` or `dax=always`).
    pub fn has_dax_always(&self) -> bool {
        self.options.iter().any(|o| o == "dax" || o == "dax=always")
    }
}

/// Undoes the octal escapes (`\040` for a space, …) the kernel writes in mount fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let source = unescape(f.next()?);
            let target = unescape(f.next()?);
            let fstype = f.next()?.to_string();
            let options = f.next()?.split(',').map(str::to_string).collect();
            Some(MountEntry {
                source,
                target,
                fstype,
                options,
            })
        })
        .collect()
}

pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/mounts")?))
}

/// The topmost mount at `target`, if any.
pub fn find<'a>(table: &'a [MountEntry], target: &str) -> Option<&'a MountEntry> {
    table.iter().rev().find(|m| m.target == target)
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

/// `mount(2)` of a block device with filesystem-specific `data` (e.g. `dax=always`).
pub fn mount(source: &str, target: &str, fstype: &str, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, d.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn umount(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: t is a NUL-terminated string.
    if unsafe { libc::umount2(t.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
rootfs / rootfs rw,size=1012344k,nr_inodes=253086 0 0
proc /proc proc rw,relatime 0 0
devtmpfs /dev devtmpfs rw,relatime,size=1012344k,nr_inodes=253086,mode=755 0 0
/dev/pmem0 /mnt/ext4 ext4 rw,relatime,dax=always 0 0
/dev/pmem1 /mnt/xfs xfs rw,relatime,attr2,dax=always,inode64,logbufs=8,logbsize=32k,noquota 0 0
/dev/pmem3 /mnt/old\\040dir ext4 rw,relatime,dax 0 0
/dev/pmem4 /mnt/plain ext4 rw,relatime 0 0
";

    #[test]
    fn parses_and_finds_dax_mounts() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 7);
        let e = find(&t, "/mnt/ext4").unwrap();
        assert_eq!(e.source, "/dev/pmem0");
        assert_eq!(e.fstype, "ext4");
        assert!(e.has_dax_always());
        assert!(find(&t, "/mnt/xfs").unwrap().has_dax_always());
        // Older kernels print the legacy ext4 option as plain "dax"; names are unescaped.
        assert!(find(&t, "/mnt/old dir").unwrap().has_dax_always());
        assert!(!find(&t, "/mnt/plain").unwrap().has_dax_always());
        assert!(find(&t, "/mnt/none").is_none());
    }

    #[test]
    fn host_mount_table_has_root() {
        let t = read().unwrap();
        assert!(find(&t, "/").is_some());
    }
}
