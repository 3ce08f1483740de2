//! The program interpreter that runs inside the forked child: resolves arguments to real
//! pointers and values, issues each call, keeps the resources calls produce, and runs
//! calls marked `[t1]` on a second thread.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use daxdiff_prog::target::{Dir, PipeEnd};
use daxdiff_prog::wire::{errno_name, CallResult};
use daxdiff_prog::{
    Arg, BufRef, CallDesc, CallKind, ParamType, Program, ResId, ResourceKind, Target, ThreadId,
};

use super::confine::ProgramMaps;
use super::env::{resolve_path, ProgDirs, RunEnv};
use super::integrity::{self, MapTarget, Mapped, MappingSeen};
use super::kcov::{self, ThreadCover};
use super::memory::{checksum, copy_user, Scratch};
use super::uring::Ring;

const PROT_READ: u64 = 0x1;
const PROT_WRITE: u64 = 0x2;
const MAP_SHARED: u64 = 0x1;
const MAP_POPULATE: u64 = 0x8000;
const MREMAP_DONTUNMAP: u64 = 4;
/// Calls that write a file's data through a descriptor (the integrity check then covers
/// every shared mapping the program still holds).
const FD_WRITERS: [&str; 5] = ["write", "pwrite64", "writev", "pwritev", "pwritev2"];
/// Bytes of a new mapping that are checksummed (only for MAP_POPULATE mappings, which are
/// already faulted in, so reading them changes nothing).
const MAP_CHECKSUM_BYTES: usize = 4096;

/// Where call results go as they complete.
pub trait Sink: Sync {
    fn emit(&self, r: &CallResult);
    /// A descriptor the sink writes to, which forked helpers must close.
    fn fd(&self) -> Option<i32> {
        None
    }
    /// The program's KCOV edges (only when the kernel has KCOV).
    fn coverage(&self, _edges: &BTreeSet<u32>) {}
    /// The program wrote (or let the kernel write) `len` bytes at `offset` of the device-dax
    /// device; sent as it happens, so a program killed later still has them zeroed.
    fn devdax_written(&self, _offset: u64, _len: u64) {}
    /// A shared mapping as the program left it.
    fn mapping(&self, _m: &MappingSeen) {}
}

/// Collects results in memory (tests, in-process runs).
#[derive(Default)]
pub struct VecSink {
    pub calls: Mutex<Vec<CallResult>>,
    pub devdax_written: Mutex<Vec<(u64, u64)>>,
    pub mappings: Mutex<Vec<MappingSeen>>,
}

impl Sink for VecSink {
    fn emit(&self, r: &CallResult) {
        self.calls.lock().unwrap().push(r.clone());
    }
    fn devdax_written(&self, offset: u64, len: u64) {
        self.devdax_written.lock().unwrap().push((offset, len));
    }
    fn mapping(&self, m: &MappingSeen) {
        self.mappings.lock().unwrap().push(m.clone());
    }
}

/// The runtime value of a resource.
pub(super) enum ResVal {
    Fd(i32),
    Map(u64),
    Ring {
        fd: i32,
        ring: Arc<Mutex<Ring>>,
    },
    RegBufs(i64),
    Pipe {
        r: i32,
        w: i32,
    },
    Pid(i32),
    Child(i32),
    /// An AIO context and how many requests are in flight on it.
    Aio {
        ctx: u64,
        in_flight: Arc<Mutex<usize>>,
    },
    /// The producing call failed; users get the kind's "invalid" value.
    Failed,
}

impl ResVal {
    fn value(&self, kind: ResourceKind, end: Option<PipeEnd>) -> u64 {
        match self {
            ResVal::Fd(fd) | ResVal::Ring { fd, .. } => *fd as i64 as u64,
            ResVal::Map(a) => *a,
            ResVal::RegBufs(v) => *v as u64,
            ResVal::Pipe { r, w } => {
                (if end == Some(PipeEnd::Write) { *w } else { *r }) as i64 as u64
            }
            ResVal::Pid(p) | ResVal::Child(p) => *p as i64 as u64,
            ResVal::Aio { ctx, .. } => *ctx,
            ResVal::Failed => match kind {
                ResourceKind::Fd | ResourceKind::Ring | ResourceKind::Pipe => u64::MAX,
                _ => 0,
            },
        }
    }
}

/// A pointer argument's memory, remembered to checksum what the kernel left there.
#[derive(Clone, Copy, Debug)]
pub(super) struct BufSeen {
    pub dir: Dir,
    pub addr: u64,
    pub len: usize,
}

/// Arguments resolved to register values.
pub(super) struct Marshaled {
    pub raw: Vec<u64>,
    pub bufs: Vec<BufSeen>,
}

impl Marshaled {
    pub fn arg(&self, i: usize) -> u64 {
        self.raw.get(i).copied().unwrap_or(0)
    }
}

/// What one call did.
pub(super) struct Done {
    pub ret: i64,
    pub errno: Option<i32>,
    pub checksum: Option<u64>,
    pub produced: Option<ResVal>,
    pub duration: Duration,
}

impl Done {
    pub fn from_rc(rc: i64, duration: Duration) -> Done {
        let errno = (rc == -1).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        Done {
            ret: rc,
            errno,
            checksum: None,
            produced: None,
            duration,
        }
    }

    pub fn errno(errno: i32) -> Done {
        Done {
            ret: -1,
            errno: Some(errno),
            checksum: None,
            produced: None,
            duration: Duration::ZERO,
        }
    }
}

pub struct Interp<'a> {
    pub(super) target: &'static Target,
    pub(super) prog: &'a Program,
    pub(super) env: &'a RunEnv,
    pub(super) dirs: &'a ProgDirs,
    pub(super) sink: &'a dyn Sink,
    pub(super) res: Mutex<HashMap<ResId, ResVal>>,
    done: Mutex<Vec<bool>>,
    done_cv: Condvar,
    /// Calls handed to the second thread, for barriers.
    pub(super) handed: Mutex<Vec<usize>>,
    /// Buffers the kernel may still hold (pinned pages): alive until the program ends.
    keep: Mutex<Vec<Scratch>>,
    /// Forked children that hold their mapping until killed.
    pub(super) holders: Mutex<HashSet<i32>>,
    /// Shared DAX mappings the program made, for the integrity check and the devdax reset.
    mapped: Mutex<Vec<Mapped>>,
    /// A write-family call succeeded on some descriptor.
    wrote_fd: AtomicBool,
    /// Mappings (by the call that made them) already checked.
    checked: Mutex<HashSet<usize>>,
    edges: Mutex<BTreeSet<u32>>,
    /// What the program mapped: its address-space calls act on that alone.
    maps: Mutex<ProgramMaps>,
    /// io_uring requests submitted without waiting and not yet waited for, on all rings.
    async_io: AtomicUsize,
}

impl<'a> Interp<'a> {
    pub fn new(
        target: &'static Target,
        prog: &'a Program,
        env: &'a RunEnv,
        dirs: &'a ProgDirs,
        sink: &'a dyn Sink,
    ) -> Interp<'a> {
        Interp {
            target,
            prog,
            env,
            dirs,
            sink,
            res: Mutex::new(HashMap::new()),
            done: Mutex::new(vec![false; prog.calls.len()]),
            done_cv: Condvar::new(),
            handed: Mutex::new(Vec::new()),
            keep: Mutex::new(Vec::new()),
            holders: Mutex::new(HashSet::new()),
            mapped: Mutex::new(Vec::new()),
            wrote_fd: AtomicBool::new(false),
            checked: Mutex::new(HashSet::new()),
            edges: Mutex::new(BTreeSet::new()),
            maps: Mutex::new(ProgramMaps::default()),
            async_io: AtomicUsize::new(0),
        }
    }

    pub(super) fn async_started(&self) {
        self.async_io.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn async_done(&self, n: usize) {
        let _ = self
            .async_io
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// Waits for every io_uring request still in flight, so that no DMA lands in a mapping
    /// while it is compared with its file.
    fn drain_rings(&self) {
        if self.async_io.load(Ordering::Relaxed) == 0 {
            return;
        }
        let rings: Vec<Arc<Mutex<Ring>>> = self
            .res
            .lock()
            .unwrap()
            .values()
            .filter_map(|v| match v {
                ResVal::Ring { ring, .. } => Some(ring.clone()),
                _ => None,
            })
            .collect();
        for r in rings {
            let _ = r.lock().unwrap().wait_all();
        }
        let aios: Vec<(u64, Arc<Mutex<usize>>)> = self
            .res
            .lock()
            .unwrap()
            .values()
            .filter_map(|v| match v {
                ResVal::Aio { ctx, in_flight } => Some((*ctx, in_flight.clone())),
                _ => None,
            })
            .collect();
        for (ctx, n) in aios {
            let mut n = n.lock().unwrap();
            // A context the program destroyed waited for its requests then.
            let _ = super::aio::wait(ctx, *n);
            *n = 0;
        }
        self.async_io.store(0, Ordering::Relaxed);
    }

    /// Runs every call; returns when both threads are done. Then checks the shared mappings
    /// the program left and, on a kernel with KCOV, sends the program's edges.
    pub fn run(&self) {
        let second = self.prog.calls.iter().any(|c| c.thread != ThreadId::MAIN);
        let with_kcov = kcov::available();
        let (tx, rx) = mpsc::channel::<usize>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            if second {
                s.spawn(move || {
                    let cover = self.start_cover(with_kcov);
                    let _ = ready_tx.send(());
                    for idx in rx {
                        self.exec(idx);
                    }
                    self.finish_cover(cover);
                });
            }
            // The second thread's stack and KCOV area are in place before the first call:
            // where the program's mappings land then does not depend on thread timing.
            if second {
                let _ = ready_rx.recv();
            }
            let cover = self.start_cover(with_kcov);
            for (idx, call) in self.prog.calls.iter().enumerate() {
                if call.thread == ThreadId::MAIN {
                    self.exec(idx);
                } else {
                    self.handed.lock().unwrap().push(idx);
                    let _ = tx.send(idx);
                }
            }
            drop(tx);
            self.finish_cover(cover);
        });
        self.drain_rings();
        self.check_mappings(None);
        if with_kcov {
            self.sink.coverage(&self.edges.lock().unwrap());
        }
    }

    fn start_cover(&self, with_kcov: bool) -> Option<ThreadCover> {
        with_kcov.then(ThreadCover::start).and_then(Result::ok)
    }

    fn finish_cover(&self, cover: Option<ThreadCover>) {
        if let Some(c) = cover {
            let pcs = c.finish();
            kcov::add_edges(&pcs, &mut self.edges.lock().unwrap());
        }
    }

    /// Each shared mapping that the program wrote through, or that it held while it wrote
    /// with write(): what it shows against what pread returns. Run for the mappings a
    /// `munmap` of `range` (address, length) is about to remove, and at the end of the
    /// program for those left; each mapping is checked once.
    fn check_mappings(&self, range: Option<(u64, u64)>) {
        let wrote_fd = self.wrote_fd.load(Ordering::Relaxed);
        let due: Vec<Mapped> = {
            let checked = self.checked.lock().unwrap();
            self.mapped
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.writable || wrote_fd)
                .filter(|m| !checked.contains(&m.call))
                .filter(|m| {
                    range.is_none_or(|(a, l)| m.addr < a.saturating_add(l) && a < m.addr + m.len)
                })
                .copied()
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        let vmas = integrity::parse_maps(&maps);
        for m in due {
            if let Some(seen) = integrity::at_end(&m, &vmas) {
                self.checked.lock().unwrap().insert(m.call);
                self.sink.mapping(&seen);
            }
        }
    }

    /// The program may have written `len` bytes at `addr`: the device-dax part of that is
    /// reported for the reset.
    pub(super) fn note_write(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        for m in self.mapped.lock().unwrap().iter() {
            if m.target != MapTarget::Devdax {
                continue;
            }
            let (s, e) = (addr.max(m.addr), (addr + len).min(m.addr + m.len));
            if s < e {
                self.sink.devdax_written(m.offset + (s - m.addr), e - s);
            }
        }
    }

    pub(super) fn note_fd_write(&self) {
        self.wrote_fd.store(true, Ordering::Relaxed);
    }

    pub(super) fn wait_done(&self, idxs: &[usize]) {
        let mut done = self.done.lock().unwrap();
        while !idxs.iter().all(|&i| done[i]) {
            done = self.done_cv.wait(done).unwrap();
        }
    }

    fn exec(&self, idx: usize) {
        let call = &self.prog.calls[idx];
        // Resources made on the other thread: wait for their producers.
        let producers: Vec<usize> = call
            .uses()
            .into_iter()
            .filter_map(|r| self.prog.producer(r))
            .filter(|&p| p < idx && self.prog.calls[p].thread != call.thread)
            .collect();
        self.wait_done(&producers);
        let done = match self.target.call(&call.name) {
            Some(desc) => {
                let mut m = self.marshal(idx, desc, &call.args);
                if let Some(i) = confined_len(desc) {
                    m.raw[i] = self.maps.lock().unwrap().confine(m.arg(0), m.arg(i));
                }
                // The check needs the mapping: before it goes, not at the end. Not while
                // io_uring requests are in flight, which may still be writing into it (and
                // munmap under a pinned request is the point of such programs).
                if desc.base_name() == "munmap" && self.async_io.load(Ordering::Relaxed) == 0 {
                    self.check_mappings(Some((m.arg(0), m.arg(1))));
                }
                match desc.kind {
                    CallKind::Syscall { nr } => self.syscall(idx, desc, nr, &m),
                    CallKind::Pseudo(p) => self.pseudo(idx, p, &m),
                }
            }
            None => Done::errno(libc::ENOSYS),
        };
        let result = CallResult {
            index: idx,
            name: call.name.clone(),
            thread: call.thread.0,
            ret: done.ret,
            errno: done.errno,
            errno_name: done.errno.and_then(errno_name).map(String::from),
            duration_us: done.duration.as_micros() as u64,
            checksum: done.checksum,
        };
        if let (Some(r), Some(v)) = (call.ret, done.produced) {
            self.res.lock().unwrap().insert(r, v);
        } else if let Some(r) = call.ret {
            self.res.lock().unwrap().insert(r, ResVal::Failed);
        }
        self.sink.emit(&result);
        self.done.lock().unwrap()[idx] = true;
        self.done_cv.notify_all();
    }

    /// Allocates program-lifetime memory holding `bytes` (or `len` patterned bytes).
    fn alloc(&self, len: usize, seed: u8, bytes: Option<&[u8]>) -> u64 {
        match Scratch::new(len, seed) {
            Ok(s) => {
                let addr = s.addr();
                if let Some(b) = bytes {
                    // SAFETY: the scratch has at least len >= b.len() writable bytes.
                    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), addr as *mut u8, b.len()) };
                }
                self.keep.lock().unwrap().push(s);
                addr
            }
            // Out of memory: the kernel sees a NULL pointer and answers EFAULT.
            Err(_) => 0,
        }
    }

    fn res_value(&self, r: ResId, kind: ResourceKind, end: Option<PipeEnd>) -> u64 {
        match self.res.lock().unwrap().get(&r) {
            Some(v) => v.value(kind, end),
            None => ResVal::Failed.value(kind, end),
        }
    }

    /// The AIO context an argument names, with its in-flight count; `None` for a value no
    /// daxdiff_aio_setup made (the kernel then judges the raw value).
    pub(super) fn aio_of(&self, arg: &Arg) -> Option<(u64, Arc<Mutex<usize>>)> {
        let Arg::Res(r) = arg else { return None };
        match self.res.lock().unwrap().get(r) {
            Some(ResVal::Aio { ctx, in_flight }) => Some((*ctx, in_flight.clone())),
            _ => None,
        }
    }

    pub(super) fn ring_of(&self, arg: &Arg) -> Option<Arc<Mutex<Ring>>> {
        let Arg::Res(r) = arg else { return None };
        match self.res.lock().unwrap().get(r) {
            Some(ResVal::Ring { ring, .. }) => Some(ring.clone()),
            _ => None,
        }
    }

    fn buf_addr(&self, b: &BufRef, seed: u8) -> (u64, bool) {
        match b {
            BufRef::Map { map, offset } => (
                self.res_value(*map, ResourceKind::Map, None)
                    .wrapping_add(*offset),
                false,
            ),
            BufRef::Scratch { size } => (self.alloc(*size as usize, seed, None), true),
            BufRef::Nil => (0, false),
        }
    }

    fn marshal(&self, idx: usize, desc: &CallDesc, args: &[Arg]) -> Marshaled {
        let seed = idx as u8;
        let mut raw = Vec::with_capacity(args.len());
        let mut bufs = Vec::new();
        for (i, arg) in args.iter().enumerate() {
            let ty = desc.params.get(i).map(|p| &p.ty);
            let v = match (ty, arg) {
                (_, Arg::Int(v)) => *v,
                (_, Arg::Flags(names)) => self.target.flags_value(names).unwrap_or(0),
                (Some(ParamType::Resource { kind, pipe_end, .. }), Arg::Res(r)) => {
                    self.res_value(*r, *kind, *pipe_end)
                }
                (_, Arg::Res(r)) => self.res_value(*r, ResourceKind::Map, None),
                (_, Arg::Path(name)) => {
                    let p = resolve_path(self.env, self.dirs, desc.file_target, name);
                    let mut bytes = p.into_os_string().into_encoded_bytes();
                    bytes.push(0);
                    self.alloc(bytes.len(), 0, Some(&bytes))
                }
                (ty, Arg::Buf(b)) => {
                    let (addr, _) = self.buf_addr(b, seed);
                    if let Some(ParamType::Buffer { dir }) = ty {
                        let len = buf_len(b, desc, args, i);
                        bufs.push(BufSeen {
                            dir: *dir,
                            addr,
                            len,
                        });
                    }
                    addr
                }
                (ty, Arg::Iovecs(iovs)) => {
                    let dir = match ty {
                        Some(ParamType::Iovecs { dir }) => *dir,
                        _ => Dir::In,
                    };
                    let mut bytes = Vec::with_capacity(iovs.len() * 16);
                    for iov in iovs {
                        let (addr, _) = self.buf_addr(&iov.base, seed);
                        bufs.push(BufSeen {
                            dir,
                            addr,
                            len: iov.len as usize,
                        });
                        bytes.extend_from_slice(&addr.to_le_bytes());
                        bytes.extend_from_slice(&iov.len.to_le_bytes());
                    }
                    self.alloc(bytes.len(), 0, Some(&bytes))
                }
                (ty, Arg::Struct(fields)) => {
                    let bytes = match ty {
                        Some(ParamType::Struct { name }) => self.target.struct_bytes(name, fields),
                        _ => None,
                    }
                    .unwrap_or_default();
                    self.alloc(bytes.len().max(1), 0, Some(&bytes))
                }
            };
            raw.push(v);
        }
        Marshaled { raw, bufs }
    }

    fn syscall(&self, idx: usize, desc: &CallDesc, nr: u64, m: &Marshaled) -> Done {
        let a = |i| m.arg(i) as libc::c_long;
        let start = Instant::now();
        // SAFETY: the descriptions define the call and its argument kinds; pointers point
        // at memory this interpreter owns or at the program's mappings. A wrong pointer is
        // the kernel's to reject (EFAULT), which is what the program is testing.
        let rc = unsafe { libc::syscall(nr as libc::c_long, a(0), a(1), a(2), a(3), a(4), a(5)) };
        let mut done = Done::from_rc(rc, start.elapsed());
        if done.errno.is_some() {
            return done;
        }
        match desc.base_name() {
            "munmap" => self.maps.lock().unwrap().remove(m.arg(0), m.arg(1)),
            "mremap" if m.arg(3) & MREMAP_DONTUNMAP == 0 => {
                self.maps.lock().unwrap().remove(m.arg(0), m.arg(1))
            }
            _ => {}
        }
        done.checksum = seen_checksum(&m.bufs, Dir::Out, rc);
        for b in m.bufs.iter().filter(|b| b.dir != Dir::In) {
            self.note_write(b.addr, b.len as u64);
        }
        if FD_WRITERS.contains(&desc.base_name()) {
            self.note_fd_write();
        }
        done.produced = desc.ret_kind.map(|k| match k {
            ResourceKind::Map => ResVal::Map(rc as u64),
            ResourceKind::RegBufs => ResVal::RegBufs(rc),
            ResourceKind::Pid => ResVal::Pid(rc as i32),
            ResourceKind::Child => ResVal::Child(rc as i32),
            ResourceKind::Fd | ResourceKind::Ring | ResourceKind::Pipe => ResVal::Fd(rc as i32),
            // Only daxdiff_aio_setup makes one.
            ResourceKind::Aio => ResVal::Failed,
        });
        if desc.ret_kind == Some(ResourceKind::Map) {
            let param = |name: &str| {
                desc.params
                    .iter()
                    .position(|p| p.name == name)
                    .map(|i| m.arg(i))
            };
            let populated = param("flags").is_some_and(|f| f & MAP_POPULATE != 0);
            let readable = param("prot").is_some_and(|p| p & PROT_READ != 0);
            let len = param("len").or_else(|| param("new_len")).unwrap_or(0) as usize;
            let flags = param("flags").unwrap_or(0);
            self.maps.lock().unwrap().add(rc as u64, len as u64);
            let target = param("fd").and_then(|fd| MapTarget::of_fd(self.env, fd as i32));
            if let (true, Some(target)) = (flags & MAP_SHARED != 0, target) {
                self.mapped.lock().unwrap().push(Mapped {
                    call: idx,
                    addr: rc as u64,
                    len: len as u64,
                    target,
                    offset: param("off").unwrap_or(0),
                    writable: param("prot").is_some_and(|p| p & PROT_WRITE != 0),
                });
            }
            if populated && readable && len > 0 {
                done.checksum = copy_user(rc as u64, len.min(MAP_CHECKSUM_BYTES))
                    .ok()
                    .map(|b| checksum(&b));
            }
        }
        done
    }
}

/// For a call on a range of the program's memory (an address inside a mapping, then its
/// length: `munmap`, `mremap`, `madvise`, `mprotect`, `msync`, `mlock`, the touch
/// pseudo-calls), the length's position.
fn confined_len(desc: &CallDesc) -> Option<usize> {
    let addr = desc.params.first()?;
    let len = desc.params.get(1)?;
    (matches!(addr.ty, ParamType::Vma) && (len.name == "len" || len.name == "old_len")).then_some(1)
}

/// Length of a buffer argument: a scratch buffer's own size, else the `len[...]` parameter
/// that refers to it.
fn buf_len(b: &BufRef, desc: &CallDesc, args: &[Arg], i: usize) -> usize {
    if let BufRef::Scratch { size } = b {
        return *size as usize;
    }
    desc.params
        .iter()
        .position(|p| matches!(p.ty, ParamType::Len { of } if of == i))
        .and_then(|li| match args.get(li) {
            Some(Arg::Int(v)) => Some(*v as usize),
            _ => None,
        })
        .unwrap_or(0)
}

/// Checksum of the bytes the kernel put in the buffers of direction `dir`: the first `ret`
/// bytes across them (a byte count), or all of them when the call returned 0.
pub(super) fn seen_checksum(bufs: &[BufSeen], dir: Dir, ret: i64) -> Option<u64> {
    let outs: Vec<&BufSeen> = bufs.iter().filter(|b| b.dir == dir).collect();
    if outs.is_empty() || ret < 0 {
        return None;
    }
    let mut left = if ret > 0 {
        ret as usize
    } else {
        outs.iter().map(|b| b.len).sum()
    };
    let mut seen = Vec::new();
    for b in outs {
        if left == 0 {
            break;
        }
        let n = b.len.min(left);
        if n > 0 && b.addr != 0 {
            seen.extend(copy_user(b.addr, n).ok()?);
        }
        left -= n;
    }
    Some(checksum(&seen))
}
