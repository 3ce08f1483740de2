//! Memory the interpreter hands to the kernel: page-aligned scratch buffers (usable for
//! O_DIRECT), and reading back what the kernel left in a buffer without ever taking a
//! SIGBUS from a DAX mapping whose blocks went away.

use std::io;

/// Checksum of bytes seen: 64-bit FNV-1a (stable across hosts and kernels).
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An anonymous, page-aligned buffer the interpreter owns until the program ends.
pub struct Scratch {
    ptr: *mut u8,
    len: usize,
    map_len: usize,
}

// SAFETY: plain memory owned by the Scratch; the program's threads use it as the kernel does.
unsafe impl Send for Scratch {}
unsafe impl Sync for Scratch {}

impl Scratch {
    /// Allocates `len` bytes (at least one page), filled with a pattern derived from `seed`
    /// so that writes carry recognizable, deterministic data.
    pub fn new(len: usize, seed: u8) -> io::Result<Scratch> {
        let map_len = len.max(1).div_ceil(4096) * 4096;
        // SAFETY: fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let s = Scratch {
            ptr: p.cast(),
            len,
            map_len,
        };
        // SAFETY: map_len bytes are mapped writable.
        let bytes = unsafe { std::slice::from_raw_parts_mut(s.ptr, map_len) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        Ok(s)
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: len <= map_len bytes are mapped and stay mapped while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: ptr/map_len come from mmap.
        unsafe { libc::munmap(self.ptr.cast(), self.map_len) };
    }
}

/// Copies `len` bytes at user address `addr` through the kernel (`write` into a memfd), so a
/// hole or a vanished DAX block becomes EFAULT instead of a SIGBUS in the executor.
/// The copy faults pages in like a user access would.
pub fn copy_user(addr: u64, len: usize) -> io::Result<Vec<u8>> {
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"daxdiff-copy".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut done = 0usize;
        while done < len {
            // SAFETY: the kernel validates the source range; we never dereference it.
            let n = unsafe {
                libc::write(
                    fd,
                    (addr as usize + done) as *const libc::c_void,
                    len - done,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        let mut out = vec![0u8; done];
        // SAFETY: out has done bytes of room.
        let n = unsafe { libc::pread(fd, out.as_mut_ptr().cast(), done, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        out.truncate(n as usize);
        Ok(out)
    })();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_fnv1a() {
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(checksum(b"ab"), checksum(b"ba"));
    }

    #[test]
    fn scratch_is_aligned_and_patterned() {
        let s = Scratch::new(5000, 3).unwrap();
        assert_eq!(s.addr() % 4096, 0);
        assert_eq!(s.len(), 5000);
        assert_eq!(s.bytes()[0], 3);
        assert_eq!(s.bytes()[1], 34);
        let t = Scratch::new(5000, 3).unwrap();
        assert_eq!(checksum(s.bytes()), checksum(t.bytes()));
    }

    #[test]
    fn copy_user_reads_memory_and_turns_faults_into_errors() {
        let s = Scratch::new(8192, 1).unwrap();
        assert_eq!(copy_user(s.addr(), 8192).unwrap(), s.bytes());
        // A file mapping past EOF would SIGBUS on a direct read.
        let path = format!("/dev/shm/daxdiff-copy-{}", std::process::id());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        use std::os::unix::io::AsRawFd;
        // SAFETY: test mapping of a file we own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let r = copy_user(p as u64 + 4096, 4096);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EFAULT));
        assert_eq!(copy_user(p as u64, 4096).unwrap(), vec![0u8; 4096]);
        // SAFETY: unmapping our test mapping.
        unsafe { libc::munmap(p, 8192) };
        std::fs::remove_file(&path).unwrap();
    }
}
