//! Linux AIO on raw system calls: a context, one-request submissions left in flight, and
//! waiting for all of them. The other asynchronous way, beside io_uring, to keep direct I/O
//! (and the pin on its user buffer) in flight while later calls run.

use std::io;

const SYS_IO_SETUP: libc::c_long = 206;
const SYS_IO_GETEVENTS: libc::c_long = 208;
const SYS_IO_SUBMIT: libc::c_long = 209;

/// `struct iocb` (64 bytes; x86-64 little-endian field order).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iocb {
    pub data: u64,
    pub key: u32,
    pub rw_flags: u32,
    pub opcode: u16,
    pub reqprio: i16,
    pub fd: u32,
    pub buf: u64,
    pub nbytes: u64,
    pub offset: i64,
    pub reserved2: u64,
    pub flags: u32,
    pub resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Event {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

fn retrying(mut f: impl FnMut() -> libc::c_long) -> io::Result<i64> {
    loop {
        let rc = f();
        if rc >= 0 {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `io_setup(nr)`: the new context's id.
pub fn setup(nr: u32) -> io::Result<u64> {
    let mut ctx: u64 = 0;
    // SAFETY: ctx is a writable aio_context_t.
    retrying(|| unsafe { libc::syscall(SYS_IO_SETUP, nr, &mut ctx as *mut u64) })?;
    Ok(ctx)
}

/// `io_submit` of one request; returns once the kernel took it.
pub fn submit(ctx: u64, cb: Iocb) -> io::Result<()> {
    let mut cb = cb;
    let mut list = [&mut cb as *mut Iocb];
    // SAFETY: a one-element array of pointers to a valid iocb; the kernel copies the iocb
    // in io_submit, so it may go out of scope afterwards.
    retrying(|| unsafe {
        libc::syscall(SYS_IO_SUBMIT, ctx, 1 as libc::c_long, list.as_mut_ptr())
    })?;
    Ok(())
}

/// Waits until `n` requests of `ctx` have completed.
pub fn wait(ctx: u64, n: usize) -> io::Result<()> {
    let mut got = 0usize;
    let mut ev = [Event::default(); 16];
    while got < n {
        // SAFETY: ev has room for 16 events; no timeout.
        let rc = retrying(|| unsafe {
            libc::syscall(
                SYS_IO_GETEVENTS,
                ctx,
                1 as libc::c_long,
                ev.len() as libc::c_long,
                ev.as_mut_ptr(),
                std::ptr::null::<libc::timespec>(),
            )
        })?;
        got += rc as usize;
    }
    Ok(())
}

/// Whether `ctx` is a context the kernel knows (a zero-wait getevents on it).
pub fn check(ctx: u64) -> io::Result<()> {
    let mut ev = Event::default();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one event of room, a zero timeout.
    retrying(|| unsafe {
        libc::syscall(
            SYS_IO_GETEVENTS,
            ctx,
            0 as libc::c_long,
            1 as libc::c_long,
            &mut ev as *mut Event,
            &zero as *const libc::timespec,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn iocb_matches_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<Iocb>(), 64);
        assert_eq!(std::mem::size_of::<Event>(), 32);
    }

    #[test]
    fn a_submitted_read_is_waited_for() {
        let ctx = match setup(4) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("AIO unavailable on this host: {e}");
                return;
            }
        };
        let path = format!("/dev/shm/daxdiff-aio-{}", std::process::id());
        std::fs::write(&path, [3u8; 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = [0u8; 4096];
        submit(
            ctx,
            Iocb {
                opcode: 0, // IOCB_CMD_PREAD
                fd: f.as_raw_fd() as u32,
                buf: buf.as_mut_ptr() as u64,
                nbytes: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        wait(ctx, 1).unwrap();
        assert!(buf.iter().all(|&b| b == 3));
        assert!(check(ctx).is_ok());
        assert_eq!(check(12345).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        // SAFETY: destroying our own context.
        unsafe { libc::syscall(207, ctx) };
        std::fs::remove_file(&path).unwrap();
    }
}
