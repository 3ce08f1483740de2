//! What a program does to DAX state, call by call: which resources exist and are live,
//! which mappings are DAX mappings, and which calls pin a DAX page.
//! Generation and mutation read the same state to build resource chains in order.

use crate::program::{Arg, BufRef, Call, Iovec, Program, ResId, ThreadId};
use crate::target::{FileTarget, ResourceKind, Target};

/// A file descriptor a program opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdInfo {
    pub res: ResId,
    /// Resource type (`fd_ext4`).
    pub ty: String,
    pub target: Option<FileTarget>,
    pub path: Option<String>,
    /// Opened with O_DIRECT or switched to it with fcntl(F_SETFL).
    pub direct: bool,
    /// ftruncate/fallocate/write gave the file a size (devdax devices always have one).
    pub sized: bool,
    pub live: bool,
}

impl FdInfo {
    /// Direct I/O on this descriptor pins its user buffer: O_DIRECT on a non-DAX target.
    pub fn pins_buffers(&self) -> bool {
        self.direct && self.target.is_some_and(|t| !t.is_dax())
    }
}

/// A mapping a program created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    pub res: ResId,
    pub len: u64,
    /// `Some` when it maps a DAX file or device on that target.
    pub dax: Option<FileTarget>,
    pub live: bool,
}

/// Any other resource (ring, registered buffers, pipe, pid, child).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherInfo {
    pub res: ResId,
    pub ty: String,
    pub kind: ResourceKind,
    /// For registered buffers: the ring they were registered on and the iovecs.
    pub ring: Option<ResId>,
    pub iovecs: Vec<Iovec>,
    pub live: bool,
}

/// Program state after a prefix of calls.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub fds: Vec<FdInfo>,
    pub maps: Vec<MapInfo>,
    pub others: Vec<OtherInfo>,
    /// Indexes of calls that pinned a DAX page.
    pub pins: Vec<usize>,
    /// Indexes of calls that disturb DAX pages (truncate, punch, evict, device removal, …).
    pub disruptions: Vec<usize>,
    /// Files created so far, by target and name.
    pub files: Vec<(FileTarget, String)>,
    /// Calls marked for the second thread.
    pub second_thread_calls: usize,
}

/// Why a call pins pages, by base call name: which parameters hold the pinned buffers, and
/// whether the pin needs an O_DIRECT file (the fd parameter's name). Direct I/O pins only on a
/// non-DAX file or block device: on a DAX file it is a copy ([`FileTarget::is_dax`]).
pub(crate) fn pin_rule(base: &str) -> Option<(&'static [&'static str], Option<&'static str>)> {
    Some(match base {
        "vmsplice" => (&["iov"], None),
        "process_vm_readv" | "process_vm_writev" => (&["remote"], None),
        "io_uring_register" | "daxdiff_uring_update_buffers" => (&["iov"], None),
        "read" | "write" | "pread64" | "pwrite64" => (&["buf"], Some("fd")),
        "readv" | "writev" | "preadv" | "pwritev" => (&["iov"], Some("fd")),
        "daxdiff_uring_rw" | "daxdiff_uring_submit" | "daxdiff_aio_submit" => {
            (&["buf", "iov"], Some("file"))
        }
        _ => return None,
    })
}

/// Base names of calls that take DAX pages away from under users.
pub(crate) const DISRUPTORS: &[&str] = &[
    "ftruncate",
    "truncate",
    "fallocate",
    "unlink",
    "munmap",
    "madvise",
    "mremap",
    "daxdiff_evict",
    "daxdiff_devdax_disable",
    "daxdiff_ns_reconfigure",
    "daxdiff_fork_touch",
    "close",
];

/// Whether the program pins a DAX page: some pinning call's buffer lies in a DAX mapping
/// created earlier in the program (O_DIRECT I/O only counts on an O_DIRECT non-DAX file).
pub fn pins_dax_page(target: &Target, prog: &Program) -> bool {
    !State::at(target, prog, prog.calls.len()).pins.is_empty()
}

impl State {
    /// The state after the first `upto` calls of `prog`.
    pub fn at(target: &Target, prog: &Program, upto: usize) -> State {
        let mut st = State::default();
        for (i, call) in prog.calls.iter().take(upto).enumerate() {
            st.apply(target, i, call);
        }
        st
    }

    pub fn fd(&self, r: ResId) -> Option<&FdInfo> {
        self.fds.iter().find(|f| f.res == r)
    }

    pub fn map(&self, r: ResId) -> Option<&MapInfo> {
        self.maps.iter().find(|m| m.res == r)
    }

    pub fn other(&self, r: ResId) -> Option<&OtherInfo> {
        self.others.iter().find(|o| o.res == r)
    }

    /// Whether `b` points into a DAX mapping.
    pub fn is_dax_buf(&self, b: &BufRef) -> bool {
        matches!(b, BufRef::Map { map, .. } if self.map(*map).is_some_and(|m| m.dax.is_some()))
    }

    fn kill(&mut self, r: ResId) {
        self.fds
            .iter_mut()
            .filter(|f| f.res == r)
            .for_each(|f| f.live = false);
        self.maps
            .iter_mut()
            .filter(|m| m.res == r)
            .for_each(|m| m.live = false);
        self.others
            .iter_mut()
            .filter(|o| o.res == r)
            .for_each(|o| o.live = false);
    }

    /// Account for call `idx`.
    pub fn apply(&mut self, target: &Target, idx: usize, call: &Call) {
        let Some(desc) = target.call(&call.name) else {
            return;
        };
        if call.thread != ThreadId::MAIN {
            self.second_thread_calls += 1;
        }
        let arg = |name: &str| {
            let i = desc.params.iter().position(|p| p.name == name)?;
            call.args.get(i)
        };
        let res_arg = |name: &str| match arg(name) {
            Some(Arg::Res(r)) => Some(*r),
            _ => None,
        };
        let base = call.base_name();
        if let Some((bufs, direct_fd)) = pin_rule(base) {
            let direct_ok = match direct_fd {
                None => true,
                Some(p) => res_arg(p)
                    .and_then(|r| self.fd(r))
                    .is_some_and(FdInfo::pins_buffers),
            };
            let dax = bufs.iter().filter_map(|b| arg(b)).any(|a| match a {
                Arg::Buf(b) => self.is_dax_buf(b),
                Arg::Iovecs(iovs) => iovs.iter().any(|v| self.is_dax_buf(&v.base)),
                _ => false,
            });
            if direct_ok && dax {
                self.pins.push(idx);
            }
        }
        if DISRUPTORS.contains(&base) {
            self.disruptions.push(idx);
        }
        let flag_has = |name: &str, flag: &str| target.has_flag(arg(name), flag);
        match base {
            "ftruncate" | "fallocate" | "pwrite64" | "write" => {
                if let Some(r) = res_arg("fd") {
                    self.fds
                        .iter_mut()
                        .filter(|f| f.res == r)
                        .for_each(|f| f.sized = true);
                }
            }
            "fcntl" if flag_has("flags", "O_DIRECT") => {
                if let Some(r) = res_arg("fd") {
                    self.fds
                        .iter_mut()
                        .filter(|f| f.res == r)
                        .for_each(|f| f.direct = true);
                }
            }
            "close" | "daxdiff_wait" => {
                if let Some(r) = res_arg("fd").or(res_arg("c")) {
                    self.kill(r);
                }
            }
            "munmap" | "mremap" => {
                if let Some(Arg::Buf(BufRef::Map { map, offset: 0 })) = arg("addr") {
                    self.kill(*map);
                }
            }
            _ => {}
        }
        let Some(r) = call.ret else { return };
        let (Some(ty), Some(kind)) = (desc.ret.clone(), desc.ret_kind) else {
            return;
        };
        match kind {
            ResourceKind::Fd => {
                let path = match arg("file") {
                    Some(Arg::Path(p)) => Some(p.clone()),
                    _ => None,
                };
                if let (Some(t), Some(p)) = (desc.file_target, &path) {
                    if !self.files.contains(&(t, p.clone())) {
                        self.files.push((t, p.clone()));
                    }
                }
                let sized = desc.file_target == Some(FileTarget::Devdax)
                    || path.as_ref().is_some_and(|p| {
                        self.fds.iter().any(|f| {
                            f.sized && f.path.as_ref() == Some(p) && f.target == desc.file_target
                        })
                    });
                self.fds.push(FdInfo {
                    res: r,
                    ty,
                    target: desc.file_target,
                    path,
                    direct: flag_has("flags", "O_DIRECT"),
                    sized,
                    live: true,
                });
            }
            ResourceKind::Map => {
                let len = match arg("new_len").or(arg("len")) {
                    Some(a) => target.scalar_value(a).unwrap_or(0),
                    None => 0,
                };
                let dax = if base == "mremap" {
                    match arg("addr") {
                        Some(Arg::Buf(BufRef::Map { map, .. })) => {
                            self.map(*map).and_then(|m| m.dax)
                        }
                        _ => None,
                    }
                } else if flag_has("flags", "MAP_ANONYMOUS") {
                    None
                } else {
                    res_arg("fd")
                        .and_then(|f| self.fd(f))
                        .and_then(|f| f.target)
                };
                self.maps.push(MapInfo {
                    res: r,
                    len,
                    dax,
                    live: true,
                });
            }
            _ => {
                let ring = res_arg("fd").filter(|_| kind == ResourceKind::RegBufs);
                let iovecs = match arg("iov") {
                    Some(Arg::Iovecs(v)) => v.clone(),
                    _ => Vec::new(),
                };
                self.others.push(OtherInfo {
                    res: r,
                    ty,
                    kind,
                    ring,
                    iovecs,
                    live: true,
                });
            }
        }
    }
}

/// Figures over a batch of generated programs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenStats {
    pub programs: usize,
    /// Programs that pin a DAX page ([`pins_dax_page`]).
    pub pinning: usize,
    /// Programs that pin a DAX page and disturb it afterwards (truncate, evict, …).
    pub pin_then_disrupt: usize,
    /// Programs with a call on the second thread.
    pub concurrent: usize,
    pub calls: usize,
}

impl GenStats {
    /// Share of programs that pin a DAX page, 0.0–1.0.
    pub fn pin_share(&self) -> f64 {
        self.pinning as f64 / self.programs.max(1) as f64
    }
}

/// Generate `n` programs from seeds `seed, seed+1, …` and count what they reach.
pub fn generation_stats(target: &Target, n: usize, seed: u64) -> GenStats {
    let mut s = GenStats::default();
    for i in 0..n {
        let mut rng = crate::rng::Rng::new(seed.wrapping_add(i as u64));
        let prog = crate::generate::generate(target, &mut rng);
        let st = State::at(target, &prog, prog.calls.len());
        s.programs += 1;
        s.calls += prog.calls.len();
        if let Some(&first_pin) = st.pins.first() {
            s.pinning += 1;
            if st.disruptions.iter().any(|&d| d > first_pin) {
                s.pin_then_disrupt += 1;
            }
        }
        if st.second_thread_calls > 0 {
            s.concurrent += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn pins(text: &str) -> bool {
        let t = Target::builtin();
        pins_dax_page(t, &parse(t, text).unwrap())
    }

    const OPEN_MAP: &str = "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\nr1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n";

    #[test]
    fn odirect_read_into_a_dax_mapping_pins_only_from_a_non_dax_file() {
        let direct = "r2 = openat$nodax(AT_FDCWD, &\"file0\", O_RDWR|O_DIRECT, 0x1b6)\npread64(r2, &r1+0x0, 0x1000, 0x0)\n";
        let buffered = "r2 = openat$nodax(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\npread64(r2, &r1+0x0, 0x1000, 0x0)\n";
        assert!(pins(&format!("{OPEN_MAP}{direct}")));
        assert!(!pins(&format!("{OPEN_MAP}{buffered}")));
        let switched = "r2 = openat$nodax(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\nfcntl$setfl(r2, F_SETFL, O_DIRECT)\npread64(r2, &r1+0x0, 0x1000, 0x0)\n";
        assert!(pins(&format!("{OPEN_MAP}{switched}")));
        let blkdev = "r2 = openat$blkdev(AT_FDCWD, &\"blk0\", O_RDWR|O_DIRECT, 0x0)\npwrite64(r2, &r1+0x0, 0x1000, 0x0)\n";
        assert!(pins(&format!("{OPEN_MAP}{blkdev}")));
        // O_DIRECT on a DAX file is a copy through the DAX path: nothing is pinned.
        let dax_to_dax = "r2 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR|O_DIRECT, 0x1b6)\npread64(r2, &r1+0x0, 0x1000, 0x0)\n";
        assert!(!pins(&format!("{OPEN_MAP}{dax_to_dax}")));
    }

    #[test]
    fn uring_read_submitted_without_waiting_pins_from_a_non_dax_file() {
        let submit = |open: &str| {
            format!("{OPEN_MAP}{open}r3 = daxdiff_uring_setup(0x8)\ndaxdiff_uring_submit$buf(r3, IORING_OP_READ, r2, &r1+0x0, 0x10000, 0x0)\ndaxdiff_uring_wait(r3)\n")
        };
        assert!(pins(&submit(
            "r2 = openat$nodax(AT_FDCWD, &\"file0\", O_RDWR|O_DIRECT, 0x1b6)\n"
        )));
        assert!(!pins(&submit(
            "r2 = openat$ext4(AT_FDCWD, &\"file1\", O_RDWR|O_DIRECT, 0x1b6)\n"
        )));
    }

    #[test]
    fn vmsplice_and_uring_registration_of_a_dax_mapping_pin() {
        assert!(pins(&format!("{OPEN_MAP}r2 = daxdiff_pipe(0x0)\nvmsplice(r2, [{{&buf[0x1000], 0x1000}}, {{&r1+0x0, 0x1000}}], 0x2, 0x0)\n")));
        assert!(pins(&format!("{OPEN_MAP}r2 = daxdiff_uring_setup(0x8)\nr3 = io_uring_register$REGISTER_BUFFERS(r2, IORING_REGISTER_BUFFERS, [{{&r1+0x0, 0x1000}}], 0x1)\n")));
    }

    #[test]
    fn scratch_and_anonymous_buffers_do_not_pin_dax_pages() {
        assert!(!pins(&format!("{OPEN_MAP}r2 = daxdiff_pipe(0x0)\nvmsplice(r2, [{{&buf[0x1000], 0x1000}}], 0x1, 0x0)\n")));
        let anon = "r0 = mmap$anon(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\nr1 = daxdiff_pipe(0x0)\nvmsplice(r1, [{&r0+0x0, 0x1000}], 0x1, 0x0)\n";
        assert!(!pins(anon));
        // process_vm_readv pins the remote side only.
        let local_only = format!("{OPEN_MAP}r2 = getpid()\nprocess_vm_readv(r2, [{{&r1+0x0, 0x1000}}], 0x1, [{{&buf[0x1000], 0x1000}}], 0x1, 0x0)\n");
        assert!(!pins(&local_only));
    }

    #[test]
    fn a_remapped_dax_mapping_is_still_dax() {
        assert!(pins(&format!("{OPEN_MAP}r2 = mremap(&r1+0x0, 0x200000, 0x400000, MREMAP_MAYMOVE, 0x0)\nr3 = daxdiff_pipe(0x0)\nvmsplice(r3, [{{&r2+0x0, 0x1000}}], 0x1, 0x0)\n")));
    }

    #[test]
    fn state_tracks_liveness_and_sizes() {
        let t = Target::builtin();
        let p = parse(
            t,
            &format!("{OPEN_MAP}ftruncate(r0, 0x1000)\nmunmap(&r1+0x0, 0x200000)\nclose(r0)\n"),
        )
        .unwrap();
        let st = State::at(t, &p, p.calls.len());
        assert!(st.fds[0].sized && !st.fds[0].live);
        assert_eq!(st.maps[0].dax, Some(FileTarget::Ext4));
        assert!(!st.maps[0].live);
        assert_eq!(st.disruptions, vec![2, 3, 4]);
    }
}
