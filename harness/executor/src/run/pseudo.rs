//! The pseudo-calls: eviction, device-dax teardown and reconfiguration, fork-and-touch,
//! pipes, io_uring setup, submission and waiting, sleeps and barriers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daxdiff_prog::target::{Dir, Pseudo};

use super::interp::{seen_checksum, BufSeen, Done, Interp, Marshaled, ResVal};

use super::uring::{Ring, RsrcUpdate2, Sqe, IORING_REGISTER_BUFFERS_UPDATE};
use crate::command;
use crate::mounts;

// Values of the modes, from syscall-descs/pseudo_amd64.const.
const EVICT_DROP_CACHES: u64 = 1;
const EVICT_REMOUNT_EXT4: u64 = 2;
const EVICT_REMOUNT_XFS: u64 = 3;
const NS_DEVDAX: u64 = 1;
const NS_FSDAX: u64 = 2;
const NS_RAW: u64 = 3;
const TOUCH_READ: u64 = 1;
const TOUCH_WRITE: u64 = 2;
const TOUCH_WRITE_HOLD: u64 = 3;

const AIO_PREAD: u64 = 0;
const AIO_PWRITE: u64 = 1;
const AIO_PREADV: u64 = 7;
const AIO_PWRITEV: u64 = 8;

const IORING_OP_READV: u8 = 1;
const IORING_OP_WRITEV: u8 = 2;
const IORING_OP_READ_FIXED: u8 = 4;
const IORING_OP_WRITE_FIXED: u8 = 5;
const IORING_OP_READ: u8 = 22;
const IORING_OP_WRITE: u8 = 23;

/// Device teardown may legitimately block for as long as a pin is held; the program's own
/// timeout (enforced by the supervisor) is what ends a hang, not this.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3600);

fn is_read_op(op: u8) -> bool {
    matches!(op, IORING_OP_READ | IORING_OP_READV | IORING_OP_READ_FIXED)
}

fn is_write_op(op: u8) -> bool {
    matches!(
        op,
        IORING_OP_WRITE | IORING_OP_WRITEV | IORING_OP_WRITE_FIXED
    )
}

/// An administration command as a call result: its exit status, -1 when it did not exit.
fn admin(program: &str, args: &[&str]) -> Done {
    let out = command::run(program, args, ADMIN_TIMEOUT);
    let mut d = Done::from_rc(0, out.duration);
    d.errno = None;
    d.ret = match (&out.spawn_error, out.code) {
        (Some(_), _) => {
            d.errno = Some(libc::ENOENT);
            -1
        }
        (None, Some(c)) => i64::from(c),
        (None, None) => -1,
    };
    d
}

fn io_done(r: std::io::Result<()>, start: Instant) -> Done {
    match r {
        Ok(()) => Done::from_rc(0, start.elapsed()),
        Err(e) => {
            let mut d = Done::errno(e.raw_os_error().unwrap_or(libc::EIO));
            d.duration = start.elapsed();
            d
        }
    }
}

impl Interp<'_> {
    pub(super) fn pseudo(&self, idx: usize, p: Pseudo, m: &Marshaled) -> Done {
        let args = &self.prog.calls[idx].args;
        let start = Instant::now();
        match p {
            Pseudo::Evict => self.evict(m.arg(0), start),
            Pseudo::DevdaxDisable | Pseudo::DevdaxEnable => {
                let Some(dd) = &self.env.devdax else {
                    return Done::errno(libc::ENODEV);
                };
                let verb = if p == Pseudo::DevdaxDisable {
                    "disable-device"
                } else {
                    "enable-device"
                };
                admin("daxctl", &[verb, &dd.chardev])
            }
            Pseudo::NsReconfigure => {
                let Some(dd) = &self.env.devdax else {
                    return Done::errno(libc::ENODEV);
                };
                let align = dd.align.to_string();
                match m.arg(0) {
                    NS_DEVDAX => admin(
                        "ndctl",
                        &[
                            "create-namespace",
                            "-f",
                            "-e",
                            &dd.namespace,
                            "-m",
                            "devdax",
                            "-a",
                            &align,
                        ],
                    ),
                    NS_FSDAX => admin(
                        "ndctl",
                        &["create-namespace", "-f", "-e", &dd.namespace, "-m", "fsdax"],
                    ),
                    NS_RAW => admin(
                        "ndctl",
                        &["create-namespace", "-f", "-e", &dd.namespace, "-m", "raw"],
                    ),
                    _ => Done::errno(libc::EINVAL),
                }
            }
            Pseudo::ForkTouch => self.fork_touch(m.arg(0), m.arg(1), m.arg(2), start),
            Pseudo::Wait => {
                let pid = m.arg(0) as i32;
                if self.holders.lock().unwrap().remove(&pid) {
                    // A holder never exits by itself: waiting for it means ending it.
                    // SAFETY: signalling a child we forked.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                let mut d = Done::from_rc(rc as i64, start.elapsed());
                if rc >= 0 {
                    d.ret = i64::from(status);
                }
                d
            }
            Pseudo::Sleep => {
                std::thread::sleep(Duration::from_millis(m.arg(0).min(10_000)));
                Done::from_rc(0, start.elapsed())
            }
            Pseudo::Barrier => {
                let handed: Vec<usize> = self
                    .handed
                    .lock()
                    .unwrap()
                    .iter()
                    .copied()
                    .filter(|&i| i < idx)
                    .collect();
                self.wait_done(&handed);
                Done::from_rc(0, start.elapsed())
            }
            Pseudo::Pipe => {
                let mut fds = [0i32; 2];
                // SAFETY: fds has room for two descriptors.
                let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), m.arg(0) as i32) };
                let mut d = Done::from_rc(rc as i64, start.elapsed());
                if rc == 0 {
                    d.produced = Some(ResVal::Pipe {
                        r: fds[0],
                        w: fds[1],
                    });
                }
                d
            }
            Pseudo::UringSetup => match Ring::setup(m.arg(0) as u32) {
                Ok(mut ring) => {
                    ring.leave_fd_open();
                    let fd = ring.fd();
                    let mut d = Done::from_rc(i64::from(fd), start.elapsed());
                    d.produced = Some(ResVal::Ring {
                        fd,
                        ring: Arc::new(Mutex::new(ring)),
                    });
                    d
                }
                Err(e) => Done {
                    duration: start.elapsed(),
                    ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                },
            },
            Pseudo::UringRw => {
                let Some(ring) = self.ring_of(&args[0]) else {
                    return Done::errno(libc::EBADF);
                };
                let op = m.arg(1) as u8;
                let sqe = Sqe {
                    opcode: op,
                    fd: m.arg(2) as i32,
                    addr: m.arg(3),
                    len: m.arg(4) as u32,
                    off: m.arg(5),
                    ..Default::default()
                };
                let mut d = submit(&ring, sqe, start);
                if is_read_op(op) {
                    // The buffers are in/out in the descriptions: a read op filled them.
                    d.checksum = seen_checksum(&m.bufs, Dir::InOut, d.ret);
                    for b in &m.bufs {
                        self.note_write(b.addr, b.len as u64);
                    }
                }
                if is_write_op(op) && d.ret > 0 {
                    self.note_fd_write();
                }
                d
            }
            Pseudo::UringSubmit => {
                let Some(ring) = self.ring_of(&args[0]) else {
                    return Done::errno(libc::EBADF);
                };
                let op = m.arg(1) as u8;
                let sqe = Sqe {
                    opcode: op,
                    fd: m.arg(2) as i32,
                    addr: m.arg(3),
                    len: m.arg(4) as u32,
                    off: m.arg(5),
                    ..Default::default()
                };
                // The request may still be writing its buffers when later calls run, so
                // whatever it reads goes into the device-dax reset, by what the call asks
                // for rather than by what it did.
                if is_read_op(op) {
                    for b in &m.bufs {
                        self.note_write(b.addr, b.len as u64);
                    }
                }
                if is_write_op(op) {
                    self.note_fd_write();
                }
                let r = ring.lock().unwrap().submit(sqe);
                match r {
                    Ok(()) => {
                        self.async_started();
                        Done::from_rc(0, start.elapsed())
                    }
                    Err(e) => Done {
                        duration: start.elapsed(),
                        ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                    },
                }
            }
            Pseudo::UringWait => {
                let Some(ring) = self.ring_of(&args[0]) else {
                    return Done::errno(libc::EBADF);
                };
                let r = ring.lock().unwrap().wait_all();
                match r {
                    Ok(n) => {
                        self.async_done(n);
                        Done::from_rc(n as i64, start.elapsed())
                    }
                    Err(e) => Done {
                        duration: start.elapsed(),
                        ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                    },
                }
            }
            Pseudo::AioSetup => match super::aio::setup(m.arg(0) as u32) {
                Ok(ctx) => {
                    let mut d = Done::from_rc(0, start.elapsed());
                    d.produced = Some(ResVal::Aio {
                        ctx,
                        in_flight: Arc::new(Mutex::new(0)),
                    });
                    d
                }
                Err(e) => Done {
                    duration: start.elapsed(),
                    ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                },
            },
            Pseudo::AioSubmit => {
                let op = m.arg(1);
                let cb = super::aio::Iocb {
                    opcode: op as u16,
                    fd: m.arg(2) as u32,
                    buf: m.arg(3),
                    nbytes: m.arg(4),
                    offset: m.arg(5) as i64,
                    ..Default::default()
                };
                // As for io_uring: what the request may write is reset, whatever it did.
                if matches!(op, AIO_PREAD | AIO_PREADV) {
                    for b in &m.bufs {
                        self.note_write(b.addr, b.len as u64);
                    }
                }
                if matches!(op, AIO_PWRITE | AIO_PWRITEV) {
                    self.note_fd_write();
                }
                let aio = self.aio_of(&args[0]);
                match super::aio::submit(m.arg(0), cb) {
                    Ok(()) => {
                        if let Some((_, n)) = aio {
                            *n.lock().unwrap() += 1;
                        }
                        self.async_started();
                        Done::from_rc(0, start.elapsed())
                    }
                    Err(e) => Done {
                        duration: start.elapsed(),
                        ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                    },
                }
            }
            Pseudo::AioWait => {
                let r = match self.aio_of(&args[0]) {
                    Some((ctx, n)) => {
                        let mut n = n.lock().unwrap();
                        let want = *n;
                        super::aio::wait(ctx, want).map(|()| {
                            *n = 0;
                            want
                        })
                    }
                    None => super::aio::check(m.arg(0)).map(|()| 0),
                };
                match r {
                    Ok(n) => {
                        self.async_done(n);
                        Done::from_rc(n as i64, start.elapsed())
                    }
                    Err(e) => Done {
                        duration: start.elapsed(),
                        ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
                    },
                }
            }
            Pseudo::UringUpdateBuffers => {
                let Some(ring) = self.ring_of(&args[0]) else {
                    return Done::errno(libc::EBADF);
                };
                let fd = ring.lock().unwrap().fd();
                let upd = RsrcUpdate2 {
                    offset: m.arg(2) as u32,
                    data: m.arg(3),
                    nr: m.arg(4) as u32,
                    ..Default::default()
                };
                let r = Ring::register(
                    fd,
                    IORING_REGISTER_BUFFERS_UPDATE,
                    &upd as *const RsrcUpdate2 as u64,
                    std::mem::size_of::<RsrcUpdate2>() as u32,
                );
                match r {
                    Ok(v) => Done::from_rc(v, start.elapsed()),
                    Err(e) => Done {
                        duration: start.elapsed(),
                        ..Done::errno(e)
                    },
                }
            }
            Pseudo::UringRwFixed => {
                let Some(ring) = self.ring_of(&args[0]) else {
                    return Done::errno(libc::EBADF);
                };
                let op = m.arg(2) as u8;
                let sqe = Sqe {
                    opcode: op,
                    fd: m.arg(3) as i32,
                    buf_index: m.arg(4) as u16,
                    addr: m.arg(5),
                    len: m.arg(6) as u32,
                    off: m.arg(7),
                    ..Default::default()
                };
                let mut d = submit(&ring, sqe, start);
                if is_read_op(op) {
                    self.note_write(sqe.addr, u64::from(sqe.len));
                }
                if is_write_op(op) && d.ret > 0 {
                    self.note_fd_write();
                }
                if is_read_op(op) && d.ret > 0 {
                    let seen = [BufSeen {
                        dir: Dir::Out,
                        addr: sqe.addr,
                        len: d.ret as usize,
                    }];
                    d.checksum = seen_checksum(&seen, Dir::Out, d.ret);
                }
                d
            }
        }
    }

    fn evict(&self, mode: u64, start: Instant) -> Done {
        let remount = |fs: Option<&super::env::FsTarget>| {
            let Some(fs) = fs else {
                return Done::errno(libc::ENODEV);
            };
            let Some(dev) = &fs.blockdev else {
                return Done::errno(libc::ENOTBLK);
            };
            let mp = fs.mountpoint.to_string_lossy();
            let r = mounts::umount(&mp)
                .and_then(|()| mounts::mount(dev, &mp, &fs.fstype, &fs.mount_data));
            io_done(r, start)
        };
        match mode {
            EVICT_DROP_CACHES => {
                // SAFETY: sync(2) has no arguments.
                unsafe { libc::sync() };
                io_done(std::fs::write("/proc/sys/vm/drop_caches", "3"), start)
            }
            EVICT_REMOUNT_EXT4 => remount(self.env.ext4.as_ref()),
            EVICT_REMOUNT_XFS => remount(self.env.xfs.as_ref()),
            _ => Done::errno(libc::EINVAL),
        }
    }

    /// Forks a child that touches every page of the range and exits (or, for
    /// WRITE_HOLD, keeps its copy of the mapping until killed). Returns 0; the child's
    /// pid is the resource.
    fn fork_touch(&self, addr: u64, len: u64, mode: u64, start: Instant) -> Done {
        if !matches!(mode, TOUCH_READ | TOUCH_WRITE | TOUCH_WRITE_HOLD) {
            return Done::errno(libc::EINVAL);
        }
        if mode != TOUCH_READ {
            self.note_write(addr, len);
        }
        let sink_fd = self.sink.fd();
        // SAFETY: the child only touches memory and makes async-signal-safe calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls and raw memory accesses only, then _exit.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(fd) = sink_fd {
                    libc::close(fd);
                }
                let mut off = 0u64;
                while off < len {
                    let p = (addr + off) as *mut u8;
                    if mode == TOUCH_READ {
                        std::ptr::read_volatile(p);
                    } else {
                        std::ptr::write_volatile(p, std::ptr::read_volatile(p) ^ 0x5a);
                    }
                    off += 4096;
                }
                if mode == TOUCH_WRITE_HOLD {
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0);
            }
        }
        let mut d = Done::from_rc(if pid < 0 { -1 } else { 0 }, start.elapsed());
        if pid > 0 {
            if mode == TOUCH_WRITE_HOLD {
                self.holders.lock().unwrap().insert(pid);
            }
            d.produced = Some(ResVal::Child(pid));
        }
        d
    }
}

fn submit(ring: &Mutex<Ring>, sqe: Sqe, start: Instant) -> Done {
    let r = ring.lock().unwrap().submit_and_wait(sqe);
    let duration = start.elapsed();
    match r {
        Ok(res) if res >= 0 => Done::from_rc(i64::from(res), duration),
        Ok(res) => Done {
            duration,
            ..Done::errno(-res)
        },
        Err(e) => Done {
            duration,
            ..Done::errno(e.raw_os_error().unwrap_or(libc::EIO))
        },
    }
}
