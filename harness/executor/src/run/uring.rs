//! A minimal io_uring on raw system calls: set up a ring, submit one SQE and wait for its
//! completion, or submit it and leave it in flight until a later wait. Raw so that every
//! kernel answer (including buffer registration on DAX mappings) reaches the program's
//! results unchanged.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

const SYS_IO_URING_SETUP: libc::c_long = 425;
const SYS_IO_URING_ENTER: libc::c_long = 426;
const SYS_IO_URING_REGISTER: libc::c_long = 427;

const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_ENTER_GETEVENTS: u32 = 1;
pub const IORING_REGISTER_BUFFERS_UPDATE: u32 = 16;
/// Marks the user_data of requests submitted without waiting.
const ASYNC: u64 = 1 << 63;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// One submission queue entry (`struct io_uring_sqe`, 64 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    pub rw_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    pub splice_fd_in: i32,
    pub addr3: u64,
    pub pad2: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// `struct io_uring_rsrc_update2`, the argument of IORING_REGISTER_BUFFERS_UPDATE.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct RsrcUpdate2 {
    pub offset: u32,
    pub resv: u32,
    pub data: u64,
    pub tags: u64,
    pub nr: u32,
    pub resv2: u32,
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn map_ring(fd: i32, len: usize, offset: i64) -> io::Result<Mapping> {
    // SAFETY: a fresh shared mapping of the ring fd at a kernel-defined offset.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping { ptr: p.cast(), len })
}

/// An io_uring instance with its rings mapped.
pub struct Ring {
    fd: i32,
    sq_ring: Mapping,
    /// `None` when the kernel maps SQ and CQ rings in one piece.
    cq_ring: Option<Mapping>,
    sqes: Mapping,
    p: Params,
    next_user_data: u64,
    close_fd: bool,
    /// Requests submitted without waiting and not yet waited for, and how many of those
    /// have completed.
    in_flight: usize,
    landed: usize,
}

// SAFETY: the raw pointers point into mappings owned by the Ring; access is serialized by
// whoever holds the Ring (a Mutex in the interpreter).
unsafe impl Send for Ring {}

impl Ring {
    /// `io_uring_setup(entries)` and the three ring mappings.
    pub fn setup(entries: u32) -> io::Result<Ring> {
        let mut p = Params::default();
        // SAFETY: p is a writable io_uring_params.
        let fd = unsafe { libc::syscall(SYS_IO_URING_SETUP, entries, &mut p as *mut Params) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = fd as i32;
        let result = (|| {
            let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
            let cq_len =
                p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
            let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
            let sq_ring = map_ring(
                fd,
                if single { sq_len.max(cq_len) } else { sq_len },
                IORING_OFF_SQ_RING,
            )?;
            let cq_ring = if single {
                None
            } else {
                Some(map_ring(fd, cq_len, IORING_OFF_CQ_RING)?)
            };
            let sqes = map_ring(
                fd,
                p.sq_entries as usize * std::mem::size_of::<Sqe>(),
                IORING_OFF_SQES,
            )?;
            Ok(Ring {
                fd,
                sq_ring,
                cq_ring,
                sqes,
                p,
                next_user_data: 1,
                close_fd: true,
                in_flight: 0,
                landed: 0,
            })
        })();
        if result.is_err() {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        }
        result
    }

    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Leaves the ring fd open on drop: a program owns it as a resource and may close it
    /// itself, after which the number may belong to another file.
    pub fn leave_fd_open(&mut self) {
        self.close_fd = false;
    }

    fn cq_base(&self) -> *mut u8 {
        self.cq_ring.as_ref().unwrap_or(&self.sq_ring).ptr
    }

    fn u32_at(&self, base: *mut u8, off: u32) -> &AtomicU32 {
        // SAFETY: the kernel-given offset points at an aligned u32 inside a mapping that
        // lives as long as self.
        unsafe { &*(base.add(off as usize) as *const AtomicU32) }
    }

    /// Puts `sqe` on the submission queue under `user_data`.
    fn push(&mut self, mut sqe: Sqe, user_data: u64) {
        sqe.user_data = user_data;
        let sq = self.sq_ring.ptr;
        let tail = self.u32_at(sq, self.p.sq_off.tail).load(Ordering::Acquire);
        let mask = self
            .u32_at(sq, self.p.sq_off.ring_mask)
            .load(Ordering::Relaxed);
        let idx = tail & mask;
        // SAFETY: idx < sq_entries; the SQE array and index array are inside their mappings.
        unsafe {
            (self.sqes.ptr as *mut Sqe).add(idx as usize).write(sqe);
            (sq.add(self.p.sq_off.array as usize) as *mut u32)
                .add(idx as usize)
                .write(idx);
        }
        self.u32_at(sq, self.p.sq_off.tail)
            .store(tail.wrapping_add(1), Ordering::Release);
    }

    fn enter(&self, to_submit: u32, min_complete: u32, flags: u32) -> io::Result<i64> {
        loop {
            // SAFETY: plain syscall on our ring fd, no sigset.
            let rc = unsafe {
                libc::syscall(
                    SYS_IO_URING_ENTER,
                    self.fd,
                    to_submit,
                    min_complete,
                    flags,
                    std::ptr::null::<libc::c_void>(),
                    0usize,
                )
            };
            if rc >= 0 {
                return Ok(rc);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Submits `sqe` and returns once the kernel has taken it, without waiting for its
    /// completion ([`Ring::wait_all`] does). For direct I/O the user buffer is pinned by then
    /// unless the kernel had to hand the request to a worker.
    pub fn submit(&mut self, sqe: Sqe) -> io::Result<()> {
        let user_data = ASYNC | self.next_user_data;
        self.next_user_data += 1;
        self.push(sqe, user_data);
        self.enter(1, 0, 0)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every request [`Ring::submit`] started since the last wait; returns how
    /// many there were.
    pub fn wait_all(&mut self) -> io::Result<usize> {
        loop {
            self.reap(0);
            if self.landed >= self.in_flight {
                let n = self.in_flight;
                self.in_flight = 0;
                self.landed = 0;
                return Ok(n);
            }
            self.enter(0, 1, IORING_ENTER_GETEVENTS)?;
        }
    }

    /// Requests submitted without waiting and not yet waited for.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Submits `sqe` and waits for its completion; returns the CQE result (`-errno` on
    /// failure). An error is returned only when the ring itself failed.
    pub fn submit_and_wait(&mut self, sqe: Sqe) -> io::Result<i32> {
        let user_data = self.next_user_data;
        self.next_user_data += 1;
        self.push(sqe, user_data);
        let mut to_submit = 1u32;
        loop {
            if let Some(res) = self.reap(user_data) {
                return Ok(res);
            }
            // SAFETY: plain syscall on our ring fd, no sigset.
            let rc = unsafe {
                libc::syscall(
                    SYS_IO_URING_ENTER,
                    self.fd,
                    to_submit,
                    1u32,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<libc::c_void>(),
                    0usize,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if rc as u32 >= to_submit {
                to_submit = 0;
            }
        }
    }

    /// Takes completions off the CQ (counting those of requests submitted without
    /// waiting); returns the result for `user_data` once seen.
    fn reap(&mut self, user_data: u64) -> Option<i32> {
        let cq = self.cq_base();
        let head_a = self.u32_at(cq, self.p.cq_off.head);
        let tail = self.u32_at(cq, self.p.cq_off.tail).load(Ordering::Acquire);
        let mask = self
            .u32_at(cq, self.p.cq_off.ring_mask)
            .load(Ordering::Relaxed);
        let mut head = head_a.load(Ordering::Relaxed);
        let mut found = None;
        let mut landed = 0;
        while head != tail {
            // SAFETY: index masked into the CQE array inside the mapping.
            let cqe = unsafe {
                (cq.add(self.p.cq_off.cqes as usize) as *const Cqe)
                    .add((head & mask) as usize)
                    .read()
            };
            head = head.wrapping_add(1);
            if cqe.user_data & ASYNC != 0 {
                landed += 1;
            }
            if cqe.user_data == user_data {
                found = Some(cqe.res);
            }
        }
        head_a.store(head, Ordering::Release);
        self.landed += landed;
        found
    }

    /// `io_uring_register(fd, opcode, arg, nr)`; returns the raw result or the errno.
    pub fn register(fd: i32, opcode: u32, arg: u64, nr: u32) -> Result<i64, i32> {
        // SAFETY: the caller passes an arg valid for opcode (or one the kernel rejects).
        let rc = unsafe { libc::syscall(SYS_IO_URING_REGISTER, fd, opcode, arg, nr) };
        if rc < 0 {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(rc)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.close_fd {
            // SAFETY: fd is ours; mappings drop after.
            unsafe { libc::close(self.fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::io::AsRawFd;

    const IORING_OP_READ: u8 = 22;
    const IORING_OP_WRITE: u8 = 23;
    const IORING_OP_READ_FIXED: u8 = 4;
    const IORING_REGISTER_BUFFERS: u32 = 0;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<Sqe>(), 64);
        assert_eq!(std::mem::size_of::<Params>(), 120);
        assert_eq!(std::mem::size_of::<Cqe>(), 16);
        assert_eq!(std::mem::size_of::<RsrcUpdate2>(), 32);
    }

    fn ring_or_skip() -> Option<Ring> {
        match Ring::setup(8) {
            Ok(r) => Some(r),
            // Hosts may forbid io_uring (sysctl kernel.io_uring_disabled, seccomp).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                eprintln!("io_uring unavailable on this host: {e}");
                None
            }
            Err(e) => panic!("io_uring_setup: {e}"),
        }
    }

    #[test]
    fn reads_and_writes_a_file_and_reports_errors() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let path = format!("/dev/shm/daxdiff-uring-{}", std::process::id());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        f.write_all(b"hello uring").unwrap();
        let mut buf = [0u8; 16];
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_READ,
                fd: f.as_raw_fd(),
                addr: buf.as_mut_ptr() as u64,
                len: buf.len() as u32,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, 11);
        assert_eq!(&buf[..11], b"hello uring");
        let data = *b"HELLO";
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_WRITE,
                fd: f.as_raw_fd(),
                addr: data.as_ptr() as u64,
                len: 5,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"HELLO uring");
        // A bad fd comes back as a negative errno in the CQE, not as a ring failure.
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_READ,
                fd: 9999,
                addr: buf.as_mut_ptr() as u64,
                len: 4,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, -libc::EBADF);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn submitted_requests_are_waited_for_together() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let path = format!("/dev/shm/daxdiff-uring-async-{}", std::process::id());
        std::fs::write(&path, [7u8; 8192]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut a = [0u8; 4096];
        let mut b = [0u8; 4096];
        for (buf, off) in [(&mut a, 0u64), (&mut b, 4096)] {
            ring.submit(Sqe {
                opcode: IORING_OP_READ,
                fd: f.as_raw_fd(),
                addr: buf.as_mut_ptr() as u64,
                len: 4096,
                off,
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(ring.in_flight(), 2);
        // A waited-for request on the same ring does not swallow the others' completions.
        let mut c = [0u8; 16];
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_READ,
                fd: f.as_raw_fd(),
                addr: c.as_mut_ptr() as u64,
                len: 16,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, 16);
        assert_eq!(ring.wait_all().unwrap(), 2);
        assert_eq!(ring.in_flight(), 0);
        assert!(a.iter().chain(b.iter()).all(|&x| x == 7));
        assert_eq!(ring.wait_all().unwrap(), 0, "nothing left to wait for");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn fixed_buffers_register_and_read() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let path = format!("/dev/shm/daxdiff-uring-fixed-{}", std::process::id());
        std::fs::write(&path, [9u8; 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let reg = Ring::register(
            ring.fd(),
            IORING_REGISTER_BUFFERS,
            &iov as *const _ as u64,
            1,
        );
        if reg == Err(libc::ENOMEM) {
            eprintln!("RLIMIT_MEMLOCK too small for buffer registration on this host");
            return;
        }
        assert_eq!(reg, Ok(0));
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_READ_FIXED,
                fd: f.as_raw_fd(),
                addr: buf.as_mut_ptr() as u64,
                len: 4096,
                buf_index: 0,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, 4096);
        assert!(buf.iter().all(|&b| b == 9));
        // Index 1 was never registered.
        let res = ring
            .submit_and_wait(Sqe {
                opcode: IORING_OP_READ_FIXED,
                fd: f.as_raw_fd(),
                addr: buf.as_mut_ptr() as u64,
                len: 4096,
                buf_index: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(res, -libc::EFAULT);
        std::fs::remove_file(&path).unwrap();
    }
}
