//! Data integrity: at the end of a program, each shared DAX mapping it wrote through (or held
//! while writing with write()) against pread of the same range; after the teardown, the
//! mapping's bytes against the file or device read afresh. And the device-dax reset: the
//! ranges a program wrote are zeroed so the next program starts from the same bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use daxdiff_prog::wire::{DataCheck, IntegrityCheck};
use serde::{Deserialize, Serialize};

use super::env::RunEnv;
use super::memory::{checksum, copy_user};

/// Bytes of one mapping compared, from its start: enough for every program's writes
/// (the descriptions write at offsets below 2 MiB), bounded so a 1 GiB mapping costs little.
pub const CHECK_BYTES: u64 = 4 << 20;

/// Where a mapping's pages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapTarget {
    Ext4,
    Xfs,
    Devdax,
}

impl MapTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            MapTarget::Ext4 => "ext4",
            MapTarget::Xfs => "xfs",
            MapTarget::Devdax => "devdax",
        }
    }

    /// What the descriptor `fd` of the calling process refers to, if it is a DAX target.
    pub fn of_fd(env: &RunEnv, fd: i32) -> Option<MapTarget> {
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        MapTarget::of_path(env, &path)
    }

    pub fn of_path(env: &RunEnv, path: &Path) -> Option<MapTarget> {
        if let Some(d) = &env.devdax {
            if path == env.dev_dir.join(&d.chardev) {
                return Some(MapTarget::Devdax);
            }
        }
        let under = |fs: &Option<super::env::FsTarget>| {
            fs.as_ref().is_some_and(|f| path.starts_with(&f.mountpoint))
        };
        if under(&env.ext4) {
            Some(MapTarget::Ext4)
        } else if under(&env.xfs) {
            Some(MapTarget::Xfs)
        } else {
            None
        }
    }
}

/// A shared mapping made by a program call.
#[derive(Clone, Copy, Debug)]
pub struct Mapped {
    pub call: usize,
    pub addr: u64,
    pub len: u64,
    pub target: MapTarget,
    /// File (or device) offset of `addr`.
    pub offset: u64,
    pub writable: bool,
}

/// What the child saw of one mapping at the end of the program; the parent finishes the
/// check after the teardown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingSeen {
    pub call: usize,
    pub target: MapTarget,
    /// The mapped file (`None` for devdax, or when the file was unlinked).
    pub path: Option<PathBuf>,
    pub offset: u64,
    pub bytes: u64,
    /// Checksum of the mapping's bytes; `None` when they could not be read.
    pub checksum: Option<u64>,
    pub at_end: Option<DataCheck>,
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub shared: bool,
    pub offset: u64,
    pub path: String,
}

pub fn parse_maps(text: &str) -> Vec<Vma> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (s, e) = w.next()?.split_once('-')?;
            let perms = w.next()?;
            let offset = u64::from_str_radix(w.next()?, 16).ok()?;
            let _dev = w.next()?;
            let _ino = w.next()?;
            let path = w.collect::<Vec<_>>().join(" ");
            Some(Vma {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                shared: perms.ends_with('s'),
                offset,
                path,
            })
        })
        .collect()
}

fn errno_text(e: &std::io::Error) -> String {
    e.raw_os_error()
        .and_then(daxdiff_prog::wire::errno_name)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
}

/// First differing byte of two buffers, or the shorter length when one is a prefix.
fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
        .map(|p| p as u64)
}

/// Checks one mapping at the end of the program, in the process that owns it.
pub fn at_end(m: &Mapped, vmas: &[Vma]) -> Option<MappingSeen> {
    let vma = vmas.iter().find(|v| v.start <= m.addr && m.addr < v.end)?;
    if !vma.shared {
        return None;
    }
    let bytes = (vma.end - m.addr).min(m.len).min(CHECK_BYTES);
    let offset = vma.offset + (m.addr - vma.start);
    let mapped = copy_user(m.addr, bytes as usize);
    let path = (m.target != MapTarget::Devdax && !vma.path.ends_with(" (deleted)"))
        .then(|| PathBuf::from(&vma.path));
    let at_end = match (&mapped, m.target) {
        (Err(e), _) => Some(DataCheck::Unreadable {
            what: format!("mapping: {}", errno_text(e)),
        }),
        (Ok(_), MapTarget::Devdax) => None,
        (Ok(seen), _) => {
            // The same file through the mapping itself, so an unlinked file still reads.
            let through = format!("/proc/self/map_files/{:x}-{:x}", vma.start, vma.end);
            Some(match File::open(&through) {
                Err(e) => DataCheck::Unreadable {
                    what: format!("open: {}", errno_text(&e)),
                },
                Ok(f) => {
                    let mut buf = vec![0u8; seen.len()];
                    match read_full(&f, &mut buf, offset) {
                        Err(e) => DataCheck::Unreadable {
                            what: format!("pread: {}", errno_text(&e)),
                        },
                        Ok(n) => match first_difference(seen, &buf[..n]) {
                            None => DataCheck::Same,
                            Some(o) => DataCheck::Differs {
                                first_offset: Some(o),
                            },
                        },
                    }
                }
            })
        }
    };
    Some(MappingSeen {
        call: m.call,
        target: m.target,
        path,
        offset,
        bytes,
        checksum: mapped.ok().map(|b| checksum(&b)),
        at_end,
    })
}

fn read_full(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// A shared mapping of the device-dax device, unmapped on drop.
struct DevMap {
    ptr: *mut libc::c_void,
    len: usize,
}

impl DevMap {
    /// Maps `[offset, offset+len)` of `dev`, widened to the device's alignment.
    fn new(dev: &Path, align: u64, offset: u64, len: u64) -> std::io::Result<(DevMap, u64)> {
        let align = align.max(4096);
        let start = offset / align * align;
        let end = (offset + len).div_ceil(align) * align;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)?;
        // SAFETY: a fresh shared mapping of the device; unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (end - start) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok((
            DevMap {
                ptr: p,
                len: (end - start) as usize,
            },
            offset - start,
        ))
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for DevMap {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Finishes a check after the teardown: the bytes the mapping showed at the end against the
/// file (by path) or the device (mapped afresh) now.
pub fn after_teardown(env: &RunEnv, seen: &MappingSeen) -> IntegrityCheck {
    let after = seen.checksum.map(|sum| {
        let now: Result<Vec<u8>, String> = match seen.target {
            MapTarget::Devdax => match &env.devdax {
                None => Err("no device-dax device".into()),
                Some(d) => DevMap::new(
                    &env.dev_dir.join(&d.chardev),
                    d.align,
                    seen.offset,
                    seen.bytes,
                )
                .map_err(|e| format!("mmap: {}", errno_text(&e)))
                .and_then(|(m, skip)| {
                    copy_user(m.addr() + skip, seen.bytes as usize)
                        .map_err(|e| format!("mapping: {}", errno_text(&e)))
                }),
            },
            _ => match &seen.path {
                None => Err("file unlinked".into()),
                Some(p) => File::open(p)
                    .map_err(|e| format!("open: {}", errno_text(&e)))
                    .and_then(|f| {
                        let mut buf = vec![0u8; seen.bytes as usize];
                        read_full(&f, &mut buf, seen.offset)
                            .map(|n| {
                                buf.truncate(n);
                                buf
                            })
                            .map_err(|e| format!("pread: {}", errno_text(&e)))
                    }),
            },
        };
        match now {
            Err(what) => DataCheck::Unreadable { what },
            Ok(b) if checksum(&b) == sum => DataCheck::Same,
            Ok(_) => DataCheck::Differs { first_offset: None },
        }
    });
    IntegrityCheck {
        call: seen.call,
        target: seen.target.as_str().to_string(),
        bytes: seen.bytes,
        at_end: seen.at_end.clone(),
        after_teardown: after,
    }
}

/// Merges written device ranges (`offset`, `len`) into disjoint sorted ranges.
pub fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.retain(|&(_, l)| l > 0);
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in r {
        match out.last_mut() {
            Some((po, pl)) if o <= *po + *pl => *pl = (*pl).max(o + l - *po),
            _ => out.push((o, l)),
        }
    }
    out
}

/// Zeroes what programs wrote on the device-dax device; returns the bytes zeroed.
pub fn zero_devdax(env: &RunEnv, ranges: &[(u64, u64)]) -> Result<u64, String> {
    let Some(d) = &env.devdax else {
        return Ok(0);
    };
    let dev = env.dev_dir.join(&d.chardev);
    let mut total = 0;
    for &(offset, len) in &merge_ranges(ranges.to_vec()) {
        let (m, skip) = DevMap::new(&dev, d.align, offset, len).map_err(|e| {
            format!(
                "zeroing {len:#x} bytes at {offset:#x} of {}: mmap: {e}",
                dev.display()
            )
        })?;
        // SAFETY: the mapping covers [skip, skip+len) and is writable.
        unsafe { std::ptr::write_bytes((m.addr() + skip) as *mut u8, 0, len as usize) };
        total += len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_shared_flag_offset_and_path() {
        let text = "7f00a0000000-7f00a0200000 rw-s 00200000 00:06 123 /dev/dax2.0\n\
                    7f00a0200000-7f00a0201000 rw-p 00000000 00:00 0 \n\
                    7f00b0000000-7f00b0001000 r--s 00001000 103:00 12 /mnt/xfs/p3/file0 (deleted)\n";
        let v = parse_maps(text);
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0].start, v[0].end, v[0].shared),
            (0x7f00a0000000, 0x7f00a0200000, true)
        );
        assert_eq!(v[0].offset, 0x200000);
        assert_eq!(v[0].path, "/dev/dax2.0");
        assert!(!v[1].shared);
        assert_eq!(v[2].path, "/mnt/xfs/p3/file0 (deleted)");
    }

    #[test]
    fn written_ranges_merge() {
        assert_eq!(
            merge_ranges(vec![
                (0x1000, 0x1000),
                (0, 0x1000),
                (0x10000, 0x10),
                (0x3000, 0)
            ]),
            vec![(0, 0x2000), (0x10000, 0x10)]
        );
        assert_eq!(
            merge_ranges(vec![(0, 0x4000), (0x1000, 0x1000)]),
            vec![(0, 0x4000)]
        );
    }

    /// A shared mapping of a fresh tmpfs file; `tag` keeps concurrent tests off each other's
    /// file (one test truncating another's file would SIGBUS the other).
    fn shared_file(tag: &str, len: u64) -> (PathBuf, File, u64) {
        let path = PathBuf::from(format!(
            "/dev/shm/daxdiff-integrity-{tag}-{}",
            std::process::id()
        ));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        // SAFETY: test mapping of a file we own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        (path, f, p as u64)
    }

    #[test]
    fn a_mapping_agrees_with_pread_and_a_changed_file_is_caught_after_teardown() {
        let (path, f, addr) = shared_file("agrees", 8192);
        // SAFETY: writing into our own shared mapping.
        unsafe { std::ptr::write_bytes((addr + 100) as *mut u8, 0xab, 10) };
        let m = Mapped {
            call: 1,
            addr,
            len: 8192,
            target: MapTarget::Ext4,
            offset: 0,
            writable: true,
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let seen = at_end(&m, &parse_maps(&maps)).unwrap();
        assert_eq!(seen.at_end, Some(DataCheck::Same));
        assert_eq!(seen.bytes, 8192);
        assert_eq!(seen.path.as_deref(), Some(path.as_path()));
        // SAFETY: unmapping our test mapping.
        unsafe { libc::munmap(addr as *mut libc::c_void, 8192) };
        let env = RunEnv::plain_dirs(Path::new("/dev/shm"), Path::new("/nonexistent"));
        assert_eq!(
            after_teardown(&env, &seen).after_teardown,
            Some(DataCheck::Same)
        );
        f.write_at(b"x", 5).unwrap();
        assert_eq!(
            after_teardown(&env, &seen).after_teardown,
            Some(DataCheck::Differs { first_offset: None })
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            after_teardown(&env, &seen).after_teardown,
            Some(DataCheck::Unreadable {
                what: "open: ENOENT".into()
            })
        );
        // Gone from the address space: nothing to check.
        assert_eq!(
            at_end(
                &m,
                &parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap())
            ),
            None
        );
    }

    #[test]
    fn a_truncated_file_makes_the_mapping_unreadable() {
        let (path, f, addr) = shared_file("truncated", 8192);
        f.set_len(0).unwrap();
        let m = Mapped {
            call: 0,
            addr,
            len: 8192,
            target: MapTarget::Xfs,
            offset: 0,
            writable: true,
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let seen = at_end(&m, &parse_maps(&maps)).unwrap();
        assert_eq!(
            seen.at_end,
            Some(DataCheck::Unreadable {
                what: "mapping: EFAULT".into()
            })
        );
        assert_eq!(seen.checksum, None);
        // SAFETY: unmapping our test mapping.
        unsafe { libc::munmap(addr as *mut libc::c_void, 8192) };
        std::fs::remove_file(&path).unwrap();
    }
}
