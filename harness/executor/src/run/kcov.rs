//! KCOV coverage of a program's threads: each thread traces the kernel PCs it reaches
//! (`KCOV_TRACE_PC`), and the sequence becomes deduplicated edge hashes in a fixed-size map.

use std::collections::BTreeSet;
use std::io;

use daxdiff_prog::wire::COVERAGE_MAP_SIZE;

/// Where the kernel offers KCOV (debugfs, mounted by the guest's `/init`).
pub const KCOV_PATH: &str = "/sys/kernel/debug/kcov";

// From include/uapi/linux/kcov.h.
const KCOV_INIT_TRACE: libc::c_ulong = 0x8008_6301; // _IOR('c', 1, unsigned long)
const KCOV_ENABLE: libc::c_ulong = 0x6364; // _IO('c', 100)
const KCOV_DISABLE: libc::c_ulong = 0x6365; // _IO('c', 101)
const KCOV_TRACE_PC: libc::c_ulong = 0;

/// PCs one thread may record per program; later ones are dropped by the kernel.
const COVER_WORDS: usize = 256 * 1024;

/// Whether this kernel has KCOV.
pub fn available() -> bool {
    std::path::Path::new(KCOV_PATH).exists()
}

/// KCOV enabled on the calling thread.
pub struct ThreadCover {
    fd: i32,
    area: *mut u64,
}

impl ThreadCover {
    /// Opens KCOV and starts tracing the calling thread.
    pub fn start() -> io::Result<ThreadCover> {
        // SAFETY: open with a static NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/sys/kernel/debug/kcov".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd: i32| {
            let e = io::Error::last_os_error();
            // SAFETY: closing our descriptor.
            unsafe { libc::close(fd) };
            Err(e)
        };
        // SAFETY: KCOV ioctls on our descriptor, with the documented argument types.
        if unsafe { libc::ioctl(fd, KCOV_INIT_TRACE, COVER_WORDS as libc::c_ulong) } != 0 {
            return fail(fd);
        }
        let len = COVER_WORDS * 8;
        // SAFETY: shared mapping of the KCOV buffer, as kcov.rst describes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return fail(fd);
        }
        let area = p.cast::<u64>();
        // SAFETY: enable tracing for this thread; area[0] is the count of PCs recorded.
        unsafe {
            if libc::ioctl(fd, KCOV_ENABLE, KCOV_TRACE_PC) != 0 {
                let e = io::Error::last_os_error();
                libc::munmap(p, len);
                libc::close(fd);
                return Err(e);
            }
            std::ptr::write_volatile(area, 0);
        }
        Ok(ThreadCover { fd, area })
    }

    /// Stops tracing and returns the PCs recorded, in order.
    pub fn finish(self) -> Vec<u64> {
        // SAFETY: area maps COVER_WORDS words; the kernel stops writing once disabled.
        unsafe {
            let n = std::ptr::read_volatile(self.area) as usize;
            libc::ioctl(self.fd, KCOV_DISABLE, 0);
            let n = n.min(COVER_WORDS - 1);
            std::slice::from_raw_parts(self.area.add(1), n).to_vec()
        }
    }
}

impl Drop for ThreadCover {
    fn drop(&mut self) {
        // SAFETY: our mapping and descriptor.
        unsafe {
            libc::munmap(self.area.cast(), COVER_WORDS * 8);
            libc::close(self.fd);
        }
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer: neighbouring PCs land far apart in the map.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Edges of a PC trace (`prev_pc ^ pc`, AFL style, the previous hash shifted so that A→B and
/// B→A differ), hashed into `COVERAGE_MAP_SIZE` slots, added to `edges`.
pub fn add_edges(pcs: &[u64], edges: &mut BTreeSet<u32>) {
    let mut prev = 0u64;
    for &pc in pcs {
        let cur = mix(pc);
        edges.insert(((cur ^ (prev >> 1)) % COVERAGE_MAP_SIZE as u64) as u32);
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_depend_on_order_and_stay_in_the_map() {
        let mut ab = BTreeSet::new();
        add_edges(&[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0010], &mut ab);
        let mut ba = BTreeSet::new();
        add_edges(&[0xffff_ffff_8100_0010, 0xffff_ffff_8100_0000], &mut ba);
        assert_eq!(ab.len(), 2);
        assert_ne!(ab, ba);
        assert!(ab.iter().all(|&e| (e as usize) < COVERAGE_MAP_SIZE));
        // A loop over the same two PCs adds nothing new after its first round.
        let mut looped = BTreeSet::new();
        add_edges(
            &[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0010].repeat(50),
            &mut looped,
        );
        assert!(looped.len() <= 3, "{looped:?}");
    }

    #[test]
    fn a_kernel_without_kcov_is_reported_as_such() {
        if available() {
            return;
        }
        assert!(ThreadCover::start().is_err());
    }
}
