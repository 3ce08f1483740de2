//! Generating programs from a seed, weighted toward chains that build DAX state in order:
//! open → size → mmap → pin → disrupt (truncate, punch, evict, device removal) → teardown.
//! Missing resources are created on demand by inserting their producers first.

mod values;

use crate::analysis::{pin_rule, State};
use crate::program::{Arg, BufRef, Call, Iovec, Program, ResId, ThreadId};
use crate::rng::Rng;
use crate::target::{CallDesc, FileTarget, ParamType, ResourceKind, Target};
use values::Bias;

/// Longest program generation and mutation produce.
pub const MAX_CALLS: usize = 24;

/// How deep producers of producers may be inserted (pin → mmap → open).
const MAX_DEPTH: u32 = 4;

/// Where in the chain a program is, judged from its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Open,
    Size,
    Map,
    Pin,
    Disrupt,
}

const OPEN: &[(&str, u32)] = &[
    ("openat$ext4", 30),
    ("openat$xfs", 30),
    ("openat$devdax", 15),
    ("openat$nodax", 8),
    ("openat$blkdev", 4),
    ("open$ext4", 5),
    ("open$xfs", 5),
    ("creat$ext4", 3),
    ("creat$xfs", 3),
];
const SIZE: &[(&str, u32)] = &[
    ("ftruncate", 60),
    ("fallocate", 20),
    ("pwrite64", 10),
    ("ioctl$FS_IOC_FSSETXATTR", 5),
    ("openat$ext4", 5),
];
const MAP: &[(&str, u32)] = &[("mmap", 90), ("mmap$anon", 4), ("fallocate", 6)];
const PIN: &[(&str, u32)] = &[
    ("pread64", 20),
    ("pwrite64", 10),
    ("preadv", 5),
    ("readv", 3),
    ("writev", 3),
    ("pwritev", 3),
    ("vmsplice", 15),
    ("process_vm_readv", 6),
    ("process_vm_writev", 4),
    ("io_uring_register$REGISTER_BUFFERS", 15),
    ("daxdiff_uring_rw$buf", 8),
    ("daxdiff_uring_rw$iov", 3),
    ("daxdiff_uring_submit$buf", 8),
    ("daxdiff_uring_submit$iov", 3),
    ("daxdiff_aio_submit$buf", 5),
    ("daxdiff_aio_submit$iov", 2),
    ("daxdiff_fork_touch", 3),
    ("madvise", 2),
];
const DISRUPT: &[(&str, u32)] = &[
    ("ftruncate", 15),
    ("fallocate", 15),
    ("truncate$ext4", 4),
    ("truncate$xfs", 4),
    ("unlink$ext4", 3),
    ("unlink$xfs", 3),
    ("daxdiff_evict", 8),
    ("daxdiff_devdax_disable", 6),
    ("daxdiff_devdax_enable", 2),
    ("daxdiff_ns_reconfigure", 3),
    ("daxdiff_fork_touch", 8),
    ("daxdiff_wait", 2),
    ("madvise", 8),
    ("munmap", 6),
    ("mremap", 4),
    ("msync", 3),
    ("mprotect", 2),
    ("mlock", 2),
    ("close", 6),
    ("fsync", 2),
    ("io_uring_register$UNREGISTER_BUFFERS", 4),
    ("daxdiff_uring_rw_fixed", 6),
    ("daxdiff_uring_update_buffers", 2),
    ("splice$pipe_to_file", 4),
    ("read$pipe", 4),
    ("daxdiff_sleep", 3),
    ("daxdiff_barrier", 2),
    ("daxdiff_uring_wait", 3),
    ("daxdiff_aio_wait", 2),
    ("io_destroy", 1),
    ("ioctl$FS_IOC_FSSETXATTR", 3),
    ("pread64", 5),
    ("vmsplice", 3),
];

/// Generate a program from `rng`; the same seed gives the same program.
pub fn generate(target: &Target, rng: &mut Rng) -> Program {
    let mut prog = Program::default();
    let want = 6 + rng.below(11) as usize;
    while prog.calls.len() < want {
        let pos = prog.calls.len();
        insert_call(target, &mut prog, pos, rng);
    }
    prog.calls.truncate(MAX_CALLS);
    if rng.percent(35) {
        race(target, &mut prog, rng);
    }
    prog.renumber();
    prog
}

/// Insert at `pos` one call chosen for the state the calls before `pos` leave, preceded by
/// producers of any resource it needs that does not exist yet.
pub(crate) fn insert_call(target: &Target, prog: &mut Program, pos: usize, rng: &mut Rng) {
    let st = State::at(target, prog, pos);
    let stage = stage(&st);
    let name = if rng.percent(15) {
        target.calls[rng.index(target.calls.len())].name.clone()
    } else {
        let table = match stage {
            Stage::Open => OPEN,
            Stage::Size => SIZE,
            Stage::Map => MAP,
            Stage::Pin => PIN,
            Stage::Disrupt => DISRUPT,
        };
        rng.weighted_pick(table).to_string()
    };
    let mut g = Gen::new(target, prog, st, pos, rng);
    g.bias.disrupt = stage == Stage::Disrupt;
    g.call(&name, 0);
    let new = g.out;
    prog.calls.splice(pos..pos, new);
}

fn stage(st: &State) -> Stage {
    let dax_fd = |f: &&crate::analysis::FdInfo| f.live && f.target.is_some();
    if !st.fds.iter().any(|f| dax_fd(&f)) {
        Stage::Open
    } else if !st.fds.iter().any(|f| dax_fd(&f) && f.sized) {
        Stage::Size
    } else if !st.maps.iter().any(|m| m.live && m.dax.is_some()) {
        Stage::Map
    } else if st.pins.is_empty() {
        Stage::Pin
    } else {
        Stage::Disrupt
    }
}

/// Mark one pinning or disrupting call to run on the second thread, so it races the rest.
pub(crate) fn race(target: &Target, prog: &mut Program, rng: &mut Rng) {
    let st = State::at(target, prog, prog.calls.len());
    let mut cands: Vec<usize> = st.pins.clone();
    cands.extend(st.disruptions.iter().copied());
    if cands.is_empty() {
        return;
    }
    let i = *rng.pick(&cands);
    prog.calls[i].thread = ThreadId::SECOND;
}

/// Builds one call (and its producers) against a state.
pub(crate) struct Gen<'a> {
    target: &'a Target,
    st: State,
    /// Index in the program of the next call pushed to `out`.
    pos: usize,
    next_label: u32,
    rng: &'a mut Rng,
    pub(crate) bias: Bias,
    /// Calls to insert, in order.
    pub(crate) out: Vec<Call>,
    /// Forbid inserting producers (argument mutation).
    pub(crate) no_producers: bool,
}

impl<'a> Gen<'a> {
    pub(crate) fn new(
        target: &'a Target,
        prog: &Program,
        st: State,
        pos: usize,
        rng: &'a mut Rng,
    ) -> Gen<'a> {
        Gen {
            target,
            st,
            pos,
            next_label: prog.fresh_res().0,
            rng,
            bias: Bias::default(),
            out: Vec::new(),
            no_producers: false,
        }
    }

    /// Generate call `name` with fresh arguments and push it (after its producers).
    pub(crate) fn call(&mut self, name: &str, depth: u32) -> Option<ResId> {
        let desc = self.target.call(name)?.clone();
        let mut lens = Vec::with_capacity(desc.params.len());
        let mut args = Vec::with_capacity(desc.params.len());
        for i in 0..desc.params.len() {
            let (arg, len) = self.arg(&desc, i, &args, depth);
            lens.push(len);
            args.push(arg);
        }
        for (i, p) in desc.params.iter().enumerate() {
            if let ParamType::Len { of } = p.ty {
                args[i] = Arg::Int(lens[of].unwrap_or(0x1000));
            }
        }
        self.fixup(&desc, &mut args);
        let mut call = Call::new(name, args);
        if desc.ret.is_some() {
            call.ret = Some(ResId(self.next_label));
            self.next_label += 1;
        }
        self.st.apply(self.target, self.pos, &call);
        self.pos += 1;
        let ret = call.ret;
        self.out.push(call);
        ret
    }

    /// A fresh value for parameter `i` of `desc`, and its length if it is a buffer.
    pub(crate) fn arg(
        &mut self,
        desc: &CallDesc,
        i: usize,
        prev: &[Arg],
        depth: u32,
    ) -> (Arg, Option<u64>) {
        let p = &desc.params[i];
        match &p.ty {
            ParamType::Int { range, .. } => (Arg::Int(values::int_value(*range, self.rng)), None),
            ParamType::Const { value, name } => match name {
                Some(n) => (Arg::Flags(vec![n.clone()]), None),
                None => (Arg::Int(*value), None),
            },
            ParamType::Flags { set } => {
                let fs = self.target.flag_set(set).expect("validated flag set");
                let mut v = values::flag_value(fs, self.bias, self.rng);
                if let Some(room) = self.vma_room(desc, i, prev) {
                    v = Arg::Int(room);
                }
                (v, None)
            }
            ParamType::Len { .. } => (Arg::Int(0), None),
            ParamType::Resource { name, kind, .. } => {
                (self.resource(desc, &p.name, name, *kind, depth), None)
            }
            ParamType::Path { names } => (Arg::Path(self.path(desc, names)), None),
            ParamType::Buffer { .. } => {
                let (b, len) = self.buffer(desc, depth);
                (Arg::Buf(b), Some(len))
            }
            ParamType::Vma => (Arg::Buf(self.vma(depth)), None),
            ParamType::Iovecs { .. } => {
                let n = self.rng.weighted_pick(&[(1usize, 60), (2, 30), (3, 10)]);
                let iovs: Vec<Iovec> = (0..n)
                    .map(|_| {
                        let (base, len) = self.buffer(desc, depth);
                        Iovec { base, len }
                    })
                    .collect();
                (Arg::Iovecs(iovs), Some(n as u64))
            }
            ParamType::Struct { name } => {
                let sd = self
                    .target
                    .struct_desc(name)
                    .expect("validated struct")
                    .clone();
                let fields = sd
                    .fields
                    .iter()
                    .map(|(_, _, ty)| match ty {
                        ParamType::Flags { set } => values::flag_value(
                            self.target.flag_set(set).expect("flag set"),
                            self.bias,
                            self.rng,
                        ),
                        ParamType::Const { value, .. } => Arg::Int(*value),
                        _ => Arg::Int(0),
                    })
                    .collect();
                (Arg::Struct(fields), None)
            }
        }
    }

    /// For a length right after a `vma` parameter: a length that fits the mapping.
    fn vma_room(&mut self, desc: &CallDesc, i: usize, prev: &[Arg]) -> Option<u64> {
        let p = &desc.params[i];
        if !(p.name == "len" || p.name == "old_len") || i == 0 {
            return None;
        }
        let Some(Arg::Buf(BufRef::Map { map, offset })) = prev.get(i - 1) else {
            return None;
        };
        let m = self.st.map(*map)?;
        let room = m.len.checked_sub(*offset).filter(|r| *r > 0)?;
        Some(if p.name == "old_len" || self.rng.percent(50) {
            room
        } else {
            values::io_len(room, self.rng)
        })
    }

    fn fixup(&mut self, desc: &CallDesc, args: &mut [Arg]) {
        let idx = |n: &str| desc.params.iter().position(|p| p.name == n);
        // Device DAX only maps whole 2 MiB-aligned pieces (its default alignment).
        if let (Some(fi), Some(li), Some(oi)) = (idx("fd"), idx("len"), idx("off")) {
            let devdax = match args[fi] {
                Arg::Res(r) => self.st.fd(r).and_then(|f| f.target) == Some(FileTarget::Devdax),
                _ => false,
            };
            if devdax && desc.base_name() == "mmap" && self.rng.percent(80) {
                if let Arg::Int(l) = args[li] {
                    args[li] = Arg::Int(l.max(0x200000) & !0x1fffff);
                }
                args[oi] = Arg::Int(0);
            }
        }
        // Registered buffers belong to one ring: submit on that ring, inside those buffers.
        if let (Some(bi), Some(fi)) = (idx("bufs"), idx("fd")) {
            if let Arg::Res(rb) = args[bi] {
                if let Some(o) = self.st.other(rb) {
                    if let Some(ring) = o.ring {
                        args[fi] = Arg::Res(ring);
                    }
                    let iovs = o.iovecs.clone();
                    if let (Some(ii), Some(ai), Some(li)) = (idx("index"), idx("addr"), idx("len"))
                    {
                        if !iovs.is_empty() && self.rng.percent(85) {
                            let k = self.rng.index(iovs.len());
                            if let BufRef::Map { .. } = iovs[k].base {
                                args[ii] = Arg::Int(k as u64);
                                args[ai] = Arg::Buf(iovs[k].base.clone());
                                args[li] = Arg::Int(iovs[k].len);
                            }
                        }
                    }
                }
            }
        }
    }

    fn resource(
        &mut self,
        desc: &CallDesc,
        pname: &str,
        wanted: &str,
        kind: ResourceKind,
        depth: u32,
    ) -> Arg {
        let needs_direct = pin_rule(desc.base_name()).and_then(|r| r.1) == Some(pname);
        let mut cands: Vec<(ResId, u32)> = Vec::new();
        let t = self.target;
        for f in &self.st.fds {
            if t.res_compatible(&f.ty, wanted) {
                let mut w = if f.live { 10 } else { 1 };
                if f.target.is_some() {
                    w *= 4;
                }
                if needs_direct && f.pins_buffers() {
                    w *= 20;
                }
                if desc.name == "mmap" && f.sized {
                    w *= 5;
                }
                cands.push((f.res, w));
            }
        }
        for m in &self.st.maps {
            if t.res_compatible(ResourceKind::Map.root_name(), wanted) {
                cands.push((m.res, if m.live { 10 } else { 1 }));
            }
        }
        for o in &self.st.others {
            if t.res_compatible(&o.ty, wanted) {
                cands.push((o.res, if o.live { 10 } else { 1 }));
            }
        }
        let have_direct = self.st.fds.iter().any(|f| f.live && f.pins_buffers());
        let create = !self.no_producers
            && depth < MAX_DEPTH
            && (cands.is_empty()
                || (needs_direct && !have_direct && self.rng.percent(85))
                || self.rng.percent(5));
        if create {
            if let Some(r) = self.produce(wanted, kind, needs_direct, depth) {
                return Arg::Res(r);
            }
        }
        if cands.is_empty() {
            let special = t.resource(wanted).and_then(|r| r.specials.first().copied());
            return Arg::Int(special.unwrap_or(u64::MAX));
        }
        let w: Vec<u32> = cands.iter().map(|c| c.1).collect();
        Arg::Res(cands[self.rng.weighted(&w)].0)
    }

    /// Insert a call that produces a resource usable as `wanted`.
    fn produce(
        &mut self,
        wanted: &str,
        kind: ResourceKind,
        direct: bool,
        depth: u32,
    ) -> Option<ResId> {
        let name = match kind {
            // Direct I/O pins a DAX buffer only on a non-DAX file or device.
            ResourceKind::Fd if direct => *self.rng.pick(&["openat$nodax", "openat$blkdev"]),
            ResourceKind::Fd => {
                let opts: Vec<(&str, u32)> = OPEN
                    .iter()
                    .copied()
                    .filter(|(n, _)| {
                        let ret = self.target.call(n).and_then(|c| c.ret.clone());
                        ret.is_some_and(|r| self.target.res_compatible(&r, wanted))
                    })
                    .collect();
                if opts.is_empty() {
                    return None;
                }
                self.rng.weighted_pick(&opts)
            }
            ResourceKind::Map => "mmap",
            ResourceKind::Ring => "daxdiff_uring_setup",
            ResourceKind::RegBufs => "io_uring_register$REGISTER_BUFFERS",
            ResourceKind::Pipe => "daxdiff_pipe",
            ResourceKind::Pid => "getpid",
            ResourceKind::Child => "daxdiff_fork_touch",
            ResourceKind::Aio => "daxdiff_aio_setup",
        };
        let saved = self.bias;
        self.bias = Bias {
            disrupt: false,
            direct,
        };
        let r = self.call(name, depth + 1);
        self.bias = saved;
        r
    }

    fn path(&mut self, desc: &CallDesc, names: &[String]) -> String {
        let existing: Vec<&String> = self
            .st
            .files
            .iter()
            .filter(|(t, _)| Some(*t) == desc.file_target)
            .map(|(_, n)| n)
            .collect();
        let reuse = if desc.ret.is_some() { 60 } else { 85 };
        if !existing.is_empty() && self.rng.percent(reuse) {
            return (*self.rng.pick(&existing)).clone();
        }
        if names.is_empty() {
            return format!("file{}", self.rng.below(3));
        }
        self.rng.pick(names).clone()
    }

    /// A map to point into: live DAX maps first; creates one if allowed and none exists.
    fn pick_map(&mut self, depth: u32, create_pct: u64) -> Option<ResId> {
        let weights: Vec<(ResId, u32)> = self
            .st
            .maps
            .iter()
            .map(|m| {
                (
                    m.res,
                    if m.live { 10 } else { 1 } * if m.dax.is_some() { 10 } else { 1 },
                )
            })
            .collect();
        let has_live_dax = self.st.maps.iter().any(|m| m.live && m.dax.is_some());
        if !has_live_dax && !self.no_producers && depth < MAX_DEPTH && self.rng.percent(create_pct)
        {
            if let Some(r) = self.produce(
                ResourceKind::Map.root_name(),
                ResourceKind::Map,
                false,
                depth,
            ) {
                return Some(r);
            }
        }
        if weights.is_empty() {
            return None;
        }
        let w: Vec<u32> = weights.iter().map(|c| c.1).collect();
        Some(weights[self.rng.weighted(&w)].0)
    }

    fn map_ptr(&mut self, map: ResId) -> (BufRef, u64) {
        let len = self.st.map(map).map(|m| m.len).unwrap_or(0);
        let mut offset =
            self.rng
                .weighted_pick(&[(0u64, 60), (0x1000, 20), ((len / 2) & !0xfff, 20)]);
        if offset >= len {
            offset = 0;
        }
        let room = len.saturating_sub(offset).max(0x1000);
        (BufRef::Map { map, offset }, values::io_len(room, self.rng))
    }

    /// A data buffer: mostly inside a DAX mapping (pins need one), else scratch or nil.
    fn buffer(&mut self, desc: &CallDesc, depth: u32) -> (BufRef, u64) {
        let pinning = pin_rule(desc.base_name()).is_some();
        let map_pct = if pinning { 90 } else { 50 };
        if self.rng.percent(map_pct) {
            if let Some(m) = self.pick_map(depth, if pinning { 90 } else { 20 }) {
                return self.map_ptr(m);
            }
        }
        if self.rng.percent(3) {
            return (BufRef::Nil, 0x1000);
        }
        let size = values::io_len(0x200000, self.rng);
        (BufRef::Scratch { size }, size)
    }

    /// An address inside a mapping for `vma` parameters; creates a mapping when there is
    /// none (past the depth limit too: a vma needs one). `nil` only when producers are off.
    fn vma(&mut self, depth: u32) -> BufRef {
        let mut picked = self.pick_map(depth, 95);
        if picked.is_none() && !self.no_producers {
            picked = self.produce(
                ResourceKind::Map.root_name(),
                ResourceKind::Map,
                false,
                depth,
            );
        }
        match picked {
            Some(m) => {
                let len = self.st.map(m).map(|x| x.len).unwrap_or(0);
                let offset = if len > 0x1000 && self.rng.percent(20) {
                    self.rng
                        .weighted_pick(&[(0x1000u64, 50), ((len / 2) & !0xfff, 50)])
                } else {
                    0
                };
                BufRef::Map { map: m, offset }
            }
            None => BufRef::Nil,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{generation_stats, pins_dax_page};
    use crate::validate::validate;

    #[test]
    fn same_seed_same_program_other_seed_other_program() {
        let t = Target::builtin();
        let a = generate(t, &mut Rng::new(1234));
        let b = generate(t, &mut Rng::new(1234));
        let c = generate(t, &mut Rng::new(1235));
        assert_eq!(a.to_text(), b.to_text());
        assert_ne!(a.to_text(), c.to_text());
    }

    #[test]
    fn generated_programs_are_valid_and_bounded() {
        let t = Target::builtin();
        for seed in 0..3000 {
            let p = generate(t, &mut Rng::new(seed));
            if let Err(e) = validate(t, &p) {
                panic!("seed {seed}: {e}\n{p}");
            }
            assert!((1..=MAX_CALLS).contains(&p.calls.len()), "seed {seed}");
        }
    }

    #[test]
    fn at_least_half_of_generated_programs_pin_a_dax_page() {
        let s = generation_stats(Target::builtin(), 2000, 99);
        assert!(s.pin_share() >= 0.5, "pin share {:.2}", s.pin_share());
        assert!(
            s.pin_then_disrupt * 3 >= s.programs,
            "too few disruptions after a pin: {s:?}"
        );
        assert!(s.concurrent * 5 >= s.programs, "too few races: {s:?}");
    }

    #[test]
    fn chains_build_resources_in_order() {
        // The first pin of a program comes after an open and an mmap of a DAX file.
        let t = Target::builtin();
        for seed in 0..200 {
            let p = generate(t, &mut Rng::new(seed));
            let st = State::at(t, &p, p.calls.len());
            let Some(&pin) = st.pins.first() else {
                continue;
            };
            let before = &p.calls[..pin];
            assert!(
                before.iter().any(|c| c.base_name() == "mmap"),
                "seed {seed}:\n{p}"
            );
            assert!(before
                .iter()
                .any(|c| c.name.starts_with("open") || c.name.starts_with("creat")));
            assert!(pins_dax_page(t, &p));
        }
    }

    #[test]
    fn generation_reaches_every_stage_table_call() {
        let t = Target::builtin();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..3000 {
            for c in generate(t, &mut Rng::new(seed)).calls {
                seen.insert(c.name);
            }
        }
        for table in [OPEN, SIZE, MAP, PIN, DISRUPT] {
            for (name, _) in table {
                assert!(
                    t.call(name).is_some(),
                    "{name} in a stage table is not described"
                );
                assert!(seen.contains(*name), "{name} never generated");
            }
        }
    }
}
