//! Argument simplification, after call dropping: sizes and offsets shrink (0, else the
//! smallest value of their halving ladder that keeps the signal) and flags lose the bits the
//! signal does not need. Which argument is which comes from the call descriptions.

use daxdiff_prog::{validate, Arg, BufRef, ParamType, Program, Target};

const PAGE: u64 = 0x1000;
const HUGE: u64 = 0x20_0000;

/// One argument simplification that was kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgChange {
    /// Index of the call in the minimized program.
    pub call: usize,
    pub call_name: String,
    /// The parameter, with the element for iovecs and struct fields (`iov[0].len`).
    pub param: String,
    pub from: String,
    pub to: String,
}

impl ArgChange {
    /// `#2 mmap len: 0x200000 -> 0x1000`.
    pub fn describe(&self) -> String {
        format!(
            "#{} {} {}: {} -> {}",
            self.call, self.call_name, self.param, self.from, self.to
        )
    }
}

/// Where a simplifiable number sits inside a call's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// A whole argument (`Int` for a size, offset, count or integer).
    Arg(usize),
    /// The length of a scratch buffer argument given by `len[buf]` at `len`: the buffer
    /// shrinks with it (rounded up to a page), so the kernel never writes past it.
    ScratchLen { len: usize, buf: usize },
    /// `&rN+off`: the offset into a mapping.
    MapOffset(usize),
    /// Element `elem` of an iovec array: its length (a scratch base shrinks with it).
    IovLen(usize, usize),
    /// Element `elem` of an iovec array: the offset of its mapping base.
    IovOffset(usize, usize),
    /// Field `field` of a struct argument.
    Field(usize, usize),
}

/// A number worth shrinking, or a flag set worth thinning, in `call`.
#[derive(Clone, Debug)]
enum Site {
    Number {
        call: usize,
        slot: Slot,
        param: String,
    },
    Flags {
        call: usize,
        arg: usize,
        param: String,
    },
}

/// The candidates this phase asks about, each with the change it makes.
pub struct Candidate {
    pub program: Program,
    pub change: ArgChange,
}

/// What the simplification kept, and whether it stopped early.
pub struct Simplified {
    pub program: Program,
    pub changes: Vec<ArgChange>,
    pub candidates: usize,
    /// The oracle declined to go on (budget spent); later arguments were not tried.
    pub stopped: bool,
}

/// The answer for one candidate: keep it, drop it, or stop the search here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keeps,
    Loses,
    Stop,
}

/// Simplifies every argument of `prog` in call and argument order. `ask` runs a candidate
/// on the kernels; `prog` itself shows the signal.
pub fn simplify(
    target: &Target,
    prog: &Program,
    ask: &mut dyn FnMut(&Candidate) -> anyhow::Result<Verdict>,
) -> anyhow::Result<Simplified> {
    let mut out = Simplified {
        program: prog.clone(),
        changes: Vec::new(),
        candidates: 0,
        stopped: false,
    };
    for site in sites(target, prog) {
        let go_on = match &site {
            Site::Number { call, slot, param } => {
                shrink_number(target, &mut out, *call, *slot, param, ask)?
            }
            Site::Flags { call, arg, param } => {
                thin_flags(target, &mut out, *call, *arg, param, ask)?
            }
        };
        if !go_on {
            out.stopped = true;
            break;
        }
    }
    Ok(out)
}

fn sites(target: &Target, prog: &Program) -> Vec<Site> {
    let mut out = Vec::new();
    for (ci, call) in prog.calls.iter().enumerate() {
        let Some(desc) = target.call(&call.name) else {
            continue;
        };
        for (ai, (arg, p)) in call.args.iter().zip(&desc.params).enumerate() {
            let number = |slot, param: String| Site::Number {
                call: ci,
                slot,
                param,
            };
            match (&p.ty, arg) {
                (ParamType::Flags { set }, Arg::Flags(_) | Arg::Int(_))
                    if is_bitmask(target, set) =>
                {
                    out.push(Site::Flags {
                        call: ci,
                        arg: ai,
                        param: p.name.clone(),
                    })
                }
                // A value set of plain numbers (`map_lens`, `file_sizes`, `file_offsets`);
                // sets of named values (`MADV_*`) are choices, not quantities.
                (ParamType::Flags { set }, Arg::Int(_)) if is_numeric(target, set) => {
                    out.push(number(Slot::Arg(ai), p.name.clone()))
                }
                (ParamType::Int { .. }, Arg::Int(_)) => {
                    out.push(number(Slot::Arg(ai), p.name.clone()))
                }
                (ParamType::Len { of }, Arg::Int(_)) => {
                    let scratch =
                        matches!(call.args.get(*of), Some(Arg::Buf(BufRef::Scratch { .. })));
                    let slot = if scratch {
                        Slot::ScratchLen { len: ai, buf: *of }
                    } else {
                        Slot::Arg(ai)
                    };
                    out.push(number(slot, p.name.clone()))
                }
                (_, Arg::Buf(BufRef::Map { .. })) => {
                    out.push(number(Slot::MapOffset(ai), format!("{} offset", p.name)))
                }
                (_, Arg::Iovecs(iovs)) => {
                    for (e, iov) in iovs.iter().enumerate() {
                        if matches!(iov.base, BufRef::Map { .. }) {
                            out.push(number(
                                Slot::IovOffset(ai, e),
                                format!("{}[{e}] offset", p.name),
                            ));
                        }
                        out.push(number(Slot::IovLen(ai, e), format!("{}[{e}].len", p.name)));
                    }
                }
                (ParamType::Struct { name }, Arg::Struct(fields)) => {
                    let Some(sd) = target.struct_desc(name) else {
                        continue;
                    };
                    for (fi, ((fname, _, fty), f)) in sd.fields.iter().zip(fields).enumerate() {
                        let numeric = match fty {
                            ParamType::Int { .. } => true,
                            ParamType::Flags { set } => is_numeric(target, set),
                            _ => false,
                        };
                        if numeric && matches!(f, Arg::Int(_)) {
                            out.push(number(Slot::Field(ai, fi), format!("{}.{fname}", p.name)));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn is_bitmask(target: &Target, set: &str) -> bool {
    target.flag_set(set).is_some_and(|s| s.bitmask)
}

fn is_numeric(target: &Target, set: &str) -> bool {
    target
        .flag_set(set)
        .is_some_and(|s| !s.bitmask && s.values.iter().all(|(name, _)| name.is_none()))
}

fn read(prog: &Program, call: usize, slot: Slot) -> Option<u64> {
    let args = &prog.calls[call].args;
    match (slot, args.get(slot_arg(slot))?) {
        (Slot::Arg(_) | Slot::ScratchLen { .. }, Arg::Int(v)) => Some(*v),
        (Slot::MapOffset(_), Arg::Buf(BufRef::Map { offset, .. })) => Some(*offset),
        (Slot::IovLen(_, e), Arg::Iovecs(iovs)) => iovs.get(e).map(|i| i.len),
        (Slot::IovOffset(_, e), Arg::Iovecs(iovs)) => match iovs.get(e)?.base {
            BufRef::Map { offset, .. } => Some(offset),
            _ => None,
        },
        (Slot::Field(_, f), Arg::Struct(fields)) => match fields.get(f)? {
            Arg::Int(v) => Some(*v),
            _ => None,
        },
        _ => None,
    }
}

fn slot_arg(slot: Slot) -> usize {
    match slot {
        Slot::Arg(a) | Slot::MapOffset(a) | Slot::IovLen(a, _) | Slot::IovOffset(a, _) => a,
        Slot::ScratchLen { len, .. } => len,
        Slot::Field(a, _) => a,
    }
}

/// A scratch buffer big enough for `len` bytes: whole pages, at least one.
fn scratch_for(len: u64) -> u64 {
    len.div_ceil(PAGE).max(1) * PAGE
}

fn write(prog: &mut Program, call: usize, slot: Slot, v: u64) {
    let args = &mut prog.calls[call].args;
    match slot {
        Slot::Arg(a) => args[a] = Arg::Int(v),
        Slot::ScratchLen { len, buf } => {
            args[len] = Arg::Int(v);
            if let Arg::Buf(BufRef::Scratch { size }) = &mut args[buf] {
                *size = (*size).min(scratch_for(v));
            }
        }
        Slot::MapOffset(a) => {
            if let Arg::Buf(BufRef::Map { offset, .. }) = &mut args[a] {
                *offset = v;
            }
        }
        Slot::IovLen(a, e) => {
            if let Arg::Iovecs(iovs) = &mut args[a] {
                iovs[e].len = v;
                if let BufRef::Scratch { size } = &mut iovs[e].base {
                    *size = (*size).min(scratch_for(v));
                }
            }
        }
        Slot::IovOffset(a, e) => {
            if let Arg::Iovecs(iovs) = &mut args[a] {
                if let BufRef::Map { offset, .. } = &mut iovs[e].base {
                    *offset = v;
                }
            }
        }
        Slot::Field(a, f) => {
            if let Arg::Struct(fields) = &mut args[a] {
                fields[f] = Arg::Int(v);
            }
        }
    }
}

/// The values below `v` to try, largest first: halvings of `v`, kept on 2 MiB boundaries
/// while they stay at least 2 MiB when `v` is 2 MiB-aligned, and on page boundaries when
/// `v` is page-aligned (a PMD-sized or page-sized value stays one).
pub fn ladder(v: u64) -> Vec<u64> {
    let align = if v > 0 && v.is_multiple_of(HUGE) {
        HUGE
    } else if v > 0 && v.is_multiple_of(PAGE) {
        PAGE
    } else {
        1
    };
    let mut out = Vec::new();
    let mut x = v;
    loop {
        let half = x / 2;
        let next = if align == HUGE && half >= HUGE {
            half / HUGE * HUGE
        } else if align >= PAGE {
            half / PAGE * PAGE
        } else {
            half
        };
        if next == 0 || next >= x {
            break;
        }
        out.push(next);
        x = next;
    }
    out
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

/// Asks about one candidate that changes `slot` to `v`; keeps it when it still shows.
fn try_value(
    target: &Target,
    out: &mut Simplified,
    call: usize,
    slot: Slot,
    param: &str,
    v: u64,
    ask: &mut dyn FnMut(&Candidate) -> anyhow::Result<Verdict>,
) -> anyhow::Result<Verdict> {
    let mut cand = out.program.clone();
    let from = read(&out.program, call, slot).unwrap_or(0);
    write(&mut cand, call, slot, v);
    if validate(target, &cand).is_err() {
        return Ok(Verdict::Loses);
    }
    out.judge(cand, call, param, hex(from), hex(v), ask)
}

impl Simplified {
    /// Asks about `program`, which changes `param` of call `call` from `from` to `to`; it
    /// becomes the program when it keeps the signal.
    fn judge(
        &mut self,
        program: Program,
        call: usize,
        param: &str,
        from: String,
        to: String,
        ask: &mut dyn FnMut(&Candidate) -> anyhow::Result<Verdict>,
    ) -> anyhow::Result<Verdict> {
        let c = Candidate {
            program,
            change: ArgChange {
                call,
                call_name: self.program.calls[call].name.clone(),
                param: param.to_string(),
                from,
                to,
            },
        };
        self.candidates += 1;
        let verdict = ask(&c)?;
        if verdict == Verdict::Keeps {
            self.program = c.program;
        }
        Ok(verdict)
    }
}

/// Tries 0, then searches the halving ladder for the smallest value that keeps the signal
/// (assuming a value that works makes every larger one work, as sizes and offsets do);
/// records the change. Returns false when the search must stop.
fn shrink_number(
    target: &Target,
    out: &mut Simplified,
    call: usize,
    slot: Slot,
    param: &str,
    ask: &mut dyn FnMut(&Candidate) -> anyhow::Result<Verdict>,
) -> anyhow::Result<bool> {
    let Some(orig) = read(&out.program, call, slot) else {
        return Ok(true);
    };
    if orig == 0 {
        return Ok(true);
    }
    let mut best = orig;
    match try_value(target, out, call, slot, param, 0, ask)? {
        Verdict::Stop => return Ok(false),
        Verdict::Keeps => best = 0,
        Verdict::Loses => {
            // Ladder indices: -1 is `orig` (shows), `steps.len()` is 0 (lost).
            let steps = ladder(orig);
            let (mut lo, mut hi) = (-1i64, steps.len() as i64);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                let v = steps[mid as usize];
                match try_value(target, out, call, slot, param, v, ask)? {
                    Verdict::Stop => {
                        record(out, call, slot, param, orig, best);
                        return Ok(false);
                    }
                    Verdict::Keeps => {
                        best = v;
                        lo = mid;
                    }
                    Verdict::Loses => hi = mid,
                }
            }
            // A lost candidate left the program at the last value kept.
            write(&mut out.program, call, slot, best);
        }
    }
    record(out, call, slot, param, orig, best);
    Ok(true)
}

fn record(out: &mut Simplified, call: usize, slot: Slot, param: &str, from: u64, to: u64) {
    write(&mut out.program, call, slot, to);
    if to != from {
        out.changes.push(ArgChange {
            call,
            call_name: out.program.calls[call].name.clone(),
            param: param.to_string(),
            from: hex(from),
            to: hex(to),
        });
    }
}

/// Clears each set flag in turn (named flags by name, a raw value bit by bit), keeping each
/// clear after which the signal survives. Returns false when the search must stop.
fn thin_flags(
    target: &Target,
    out: &mut Simplified,
    call: usize,
    arg: usize,
    param: &str,
    ask: &mut dyn FnMut(&Candidate) -> anyhow::Result<Verdict>,
) -> anyhow::Result<bool> {
    let orig = out.program.calls[call].args[arg].clone();
    let show = |a: &Arg| match a {
        Arg::Flags(n) if n.is_empty() => "0x0".to_string(),
        Arg::Flags(n) => n.join("|"),
        Arg::Int(v) => hex(*v),
        _ => String::new(),
    };
    // The parts to clear, in order, each as the argument without it.
    let parts: Vec<u64> = match &orig {
        Arg::Flags(names) => (0..names.len() as u64).collect(),
        Arg::Int(v) => (0..64).filter(|b| v & (1u64 << b) != 0).collect(),
        _ => return Ok(true),
    };
    let mut dropped: Vec<String> = Vec::new();
    let mut stopped = false;
    for part in parts {
        let current = out.program.calls[call].args[arg].clone();
        let (without, name) = match &current {
            Arg::Flags(names) => {
                let name = match &orig {
                    Arg::Flags(o) => o[part as usize].clone(),
                    _ => unreachable!("parts of a named flag set come from its names"),
                };
                // A zero-valued name (O_RDONLY) sets nothing to clear.
                if target.consts.get(&name).copied().unwrap_or(1) == 0 {
                    continue;
                }
                let rest: Vec<String> = names.iter().filter(|n| **n != name).cloned().collect();
                let arg = if rest.is_empty() {
                    Arg::Int(0)
                } else {
                    Arg::Flags(rest)
                };
                (arg, name)
            }
            Arg::Int(v) => (Arg::Int(v & !(1u64 << part)), hex(1u64 << part)),
            _ => break,
        };
        let mut cand = out.program.clone();
        cand.calls[call].args[arg] = without.clone();
        if validate(target, &cand).is_err() {
            continue;
        }
        match out.judge(cand, call, param, show(&current), show(&without), ask)? {
            Verdict::Keeps => dropped.push(name),
            Verdict::Loses => {}
            Verdict::Stop => {
                stopped = true;
                break;
            }
        }
    }
    if !dropped.is_empty() {
        out.changes.push(ArgChange {
            call,
            call_name: out.program.calls[call].name.clone(),
            param: param.to_string(),
            from: show(&orig),
            to: show(&out.program.calls[call].args[arg]),
        });
    }
    Ok(!stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = r#"r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
ftruncate(r0, 0x200000)
r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, r0, 0x0)
r2 = daxdiff_pipe(0x0)
vmsplice(r2, [{&r1+0x1000, 0x4000}], 0x1, 0x0)
daxdiff_evict(DAXDIFF_EVICT_DROP_CACHES)
read$pipe(r2, &buf[0x4000], 0x4000)
"#;

    fn parse(text: &str) -> Program {
        daxdiff_prog::parse(Target::builtin(), text).unwrap()
    }

    fn value(target: &Target, p: &Program, call: usize, arg: usize) -> u64 {
        target.scalar_value(&p.calls[call].args[arg]).unwrap()
    }

    /// Runs the simplification against a synthetic kernel `shows`.
    fn run(p: &Program, shows: impl Fn(&Program) -> bool) -> (Simplified, Vec<String>) {
        let mut asked = Vec::new();
        let s = simplify(Target::builtin(), p, &mut |c: &Candidate| {
            asked.push(c.change.describe());
            Ok(if shows(&c.program) {
                Verdict::Keeps
            } else {
                Verdict::Loses
            })
        })
        .unwrap();
        (s, asked)
    }

    #[test]
    fn the_halving_ladder_keeps_page_and_huge_page_alignment() {
        assert_eq!(
            ladder(0x600000),
            [
                0x200000, 0x100000, 0x80000, 0x40000, 0x20000, 0x10000, 0x8000, 0x4000, 0x2000,
                0x1000
            ]
        );
        assert_eq!(ladder(0x3000), [0x1000]);
        assert_eq!(ladder(0x1000), Vec::<u64>::new());
        assert_eq!(ladder(0x9), [0x4, 0x2, 0x1]);
    }

    #[test]
    fn a_length_that_must_be_at_least_a_page_shrinks_to_a_page() {
        let t = Target::builtin();
        let p = parse(PROG);
        // The "kernel": the file must hold at least one page; nothing else matters.
        let (s, asked) = run(&p, |c| value(t, c, 1, 1) >= 0x1000);
        assert_eq!(
            value(t, &s.program, 1, 1),
            0x1000,
            "{}",
            s.program.to_text()
        );
        assert!(
            s.changes
                .iter()
                .any(|c| c.describe() == "#1 ftruncate len: 0x200000 -> 0x1000"),
            "{:?}",
            s.changes
        );
        // 0, then a binary search over 9 halvings: far fewer candidates than the ladder.
        let on_ftruncate = asked.iter().filter(|a| a.starts_with("#1 ")).count();
        assert!(on_ftruncate <= 5, "{asked:#?}");
        // Everything the signal does not need went to its simplest form.
        assert_eq!(value(t, &s.program, 2, 1), 0, "mmap len");
        assert_eq!(s.program.calls[0].args[2], Arg::Int(0), "open flags");
        assert!(validate(t, &s.program).is_ok());
        assert!(!s.stopped);
    }

    #[test]
    fn a_needed_flag_stays_while_an_unneeded_one_goes() {
        let t = Target::builtin();
        let p = parse(PROG);
        let shared = t.consts["MAP_SHARED"];
        let (s, _) = run(&p, |c| value(t, c, 2, 3) & shared != 0);
        assert_eq!(
            s.program.calls[2].args[3],
            Arg::Flags(vec!["MAP_SHARED".into()])
        );
        assert!(
            s.changes
                .iter()
                .any(|c| c.describe() == "#2 mmap flags: MAP_SHARED|MAP_POPULATE -> MAP_SHARED"),
            "{:?}",
            s.changes
        );
    }

    #[test]
    fn a_signal_that_needs_the_exact_value_keeps_it() {
        let t = Target::builtin();
        let p = parse(PROG);
        let (s, _) = run(&p, |c| {
            value(t, c, 2, 1) == 0x200000
                && matches!(c.calls[4].args[1], Arg::Iovecs(ref v) if v[0].len == 0x4000)
        });
        assert_eq!(value(t, &s.program, 2, 1), 0x200000);
        match &s.program.calls[4].args[1] {
            Arg::Iovecs(v) => {
                assert_eq!(v[0].len, 0x4000);
                // The mapping offset it did not need went to 0.
                assert_eq!(
                    v[0].base,
                    BufRef::Map {
                        map: daxdiff_prog::ResId(1),
                        offset: 0
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.changes.iter().any(|c| c.call == 2 && c.param == "len"));
    }

    #[test]
    fn a_scratch_buffer_shrinks_with_its_length_and_never_below_it() {
        let p = parse(PROG);
        let (s, _) = run(&p, |c| match (&c.calls[6].args[1], &c.calls[6].args[2]) {
            (Arg::Buf(BufRef::Scratch { size }), Arg::Int(n)) => *n >= 0x1800 && size >= n,
            _ => false,
        });
        assert_eq!(s.program.calls[6].args[2], Arg::Int(0x2000));
        assert_eq!(
            s.program.calls[6].args[1],
            Arg::Buf(BufRef::Scratch { size: 0x2000 })
        );
    }

    #[test]
    fn stopping_keeps_what_was_found_so_far() {
        let t = Target::builtin();
        let p = parse(PROG);
        let mut n = 0;
        let s = simplify(t, &p, &mut |_c: &Candidate| {
            n += 1;
            Ok(if n <= 1 {
                Verdict::Keeps
            } else {
                Verdict::Stop
            })
        })
        .unwrap();
        assert!(s.stopped);
        assert_eq!(s.candidates, 2);
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert!(validate(t, &s.program).is_ok());
    }
}
