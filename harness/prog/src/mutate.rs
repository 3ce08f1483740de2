//! Mutating programs: insert a call, remove one (with its dependents), change an argument,
//! splice two programs, toggle a call onto or off the second thread. Deterministic for a
//! seed; every result passes [`crate::validate`].

use crate::analysis::State;
use crate::generate::{insert_call, Gen, MAX_CALLS};
use crate::program::{Arg, Program, ResId, ThreadId};
use crate::rng::Rng;
use crate::target::{ParamType, Target};
use crate::validate::validate;

/// The kinds of mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    Insert,
    Remove,
    ChangeArg,
    Splice,
    ToggleThread,
}

/// Mutate `prog` once. `other` is the partner for splicing (another corpus program).
/// Returns the mutated program and which mutation produced it.
pub fn mutate(
    target: &Target,
    prog: &Program,
    other: Option<&Program>,
    rng: &mut Rng,
) -> (Program, Mutation) {
    for _ in 0..16 {
        let kind = pick(rng, other.is_some());
        let mut p = prog.clone();
        let changed = match kind {
            Mutation::Insert => insert(target, &mut p, rng),
            Mutation::Remove => remove(&mut p, rng),
            Mutation::ChangeArg => change_arg(target, &mut p, rng),
            Mutation::Splice => splice(&mut p, other.unwrap_or(prog), rng),
            Mutation::ToggleThread => toggle_thread(&mut p, rng),
        };
        p.calls.truncate(MAX_CALLS);
        p.renumber();
        if changed && !p.calls.is_empty() && p != *prog && validate(target, &p).is_ok() {
            return (p, kind);
        }
    }
    // Appending a generated call always works and always changes the program.
    let mut p = prog.clone();
    p.calls.truncate(MAX_CALLS - 1);
    let end = p.calls.len();
    insert_call(target, &mut p, end, rng);
    p.calls.truncate(MAX_CALLS);
    p.renumber();
    (p, Mutation::Insert)
}

fn pick(rng: &mut Rng, can_splice: bool) -> Mutation {
    let table = [
        (Mutation::Insert, 30),
        (Mutation::Remove, 15),
        (Mutation::ChangeArg, 35),
        (Mutation::Splice, if can_splice { 10 } else { 0 }),
        (Mutation::ToggleThread, 10),
    ];
    rng.weighted_pick(&table)
}

fn insert(target: &Target, p: &mut Program, rng: &mut Rng) -> bool {
    if p.calls.len() >= MAX_CALLS {
        return false;
    }
    // Favour the end, where the chain's later stages go.
    let pos = if rng.percent(50) {
        p.calls.len()
    } else {
        rng.index(p.calls.len() + 1)
    };
    insert_call(target, p, pos, rng);
    true
}

/// Remove a call and every later call that uses what the removed calls produced.
fn remove(p: &mut Program, rng: &mut Rng) -> bool {
    if p.calls.len() < 2 {
        return false;
    }
    let i = rng.index(p.calls.len());
    let mut gone: Vec<ResId> = p.calls[i].ret.into_iter().collect();
    let mut keep = vec![true; p.calls.len()];
    keep[i] = false;
    for (call, kept) in p.calls.iter().zip(keep.iter_mut()).skip(i + 1) {
        if call.uses().iter().any(|r| gone.contains(r)) {
            *kept = false;
            gone.extend(call.ret);
        }
    }
    let mut k = keep.into_iter();
    p.calls.retain(|_| k.next().unwrap_or(true));
    true
}

fn change_arg(target: &Target, p: &mut Program, rng: &mut Rng) -> bool {
    let mutable = |ty: &ParamType| !matches!(ty, ParamType::Const { .. } | ParamType::Len { .. });
    let cands: Vec<(usize, usize)> = p
        .calls
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| {
            let desc = target.call(&c.name);
            let params = desc.map(|d| d.params.as_slice()).unwrap_or(&[]);
            params
                .iter()
                .enumerate()
                .filter(|(_, prm)| mutable(&prm.ty))
                .map(move |(ai, _)| (ci, ai))
        })
        .collect();
    if cands.is_empty() {
        return false;
    }
    let (ci, ai) = *rng.pick(&cands);
    let Some(desc) = target.call(&p.calls[ci].name).cloned() else {
        return false;
    };
    let old = p.calls[ci].args[ai].clone();
    if let (Arg::Int(v), ParamType::Flags { .. } | ParamType::Int { range: None, .. }) =
        (&old, &desc.params[ai].ty)
    {
        if rng.percent(30) {
            p.calls[ci].args[ai] = Arg::Int(tweak(*v, rng));
            return true;
        }
    }
    let st = State::at(target, p, ci);
    let prev = p.calls[ci].args[..ai].to_vec();
    let mut g = Gen::new(target, p, st, ci, rng);
    g.no_producers = true;
    let (arg, len) = g.arg(&desc, ai, &prev, 0);
    p.calls[ci].args[ai] = arg;
    // Keep lengths that describe the changed argument in step with it.
    for (li, prm) in desc.params.iter().enumerate() {
        if let (ParamType::Len { of }, Some(l)) = (&prm.ty, len) {
            if *of == ai {
                p.calls[ci].args[li] = Arg::Int(l);
            }
        }
    }
    true
}

/// Nudge an integer: a page more or less, double, half, or one bit flipped.
fn tweak(v: u64, rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => v.wrapping_add(0x1000),
        1 => v.saturating_sub(0x1000),
        2 => v.saturating_mul(2),
        3 => v / 2,
        _ => v ^ (1 << rng.below(32)),
    }
}

/// A prefix of `p` followed by all of `other` (relabelled so the labels stay distinct).
fn splice(p: &mut Program, other: &Program, rng: &mut Rng) -> bool {
    if other.calls.is_empty() {
        return false;
    }
    let cut = rng.index(p.calls.len() + 1);
    p.calls.truncate(cut);
    let base = p.fresh_res().0;
    let mut tail = other.clone();
    shift_labels(&mut tail, base);
    p.calls.extend(tail.calls);
    true
}

fn shift_labels(p: &mut Program, by: u32) {
    for c in &mut p.calls {
        c.ret = c.ret.map(|r| ResId(r.0 + by));
        c.args.iter_mut().for_each(|a| shift_arg(a, by));
    }
}

fn shift_arg(a: &mut Arg, by: u32) {
    use crate::program::BufRef;
    match a {
        Arg::Res(r) | Arg::Buf(BufRef::Map { map: r, .. }) => r.0 += by,
        Arg::Iovecs(v) => v.iter_mut().for_each(|iov| {
            if let BufRef::Map { map, .. } = &mut iov.base {
                map.0 += by;
            }
        }),
        Arg::Struct(f) => f.iter_mut().for_each(|x| shift_arg(x, by)),
        Arg::Int(_) | Arg::Flags(_) | Arg::Path(_) | Arg::Buf(_) => {}
    }
}

fn toggle_thread(p: &mut Program, rng: &mut Rng) -> bool {
    if p.calls.is_empty() {
        return false;
    }
    let i = rng.index(p.calls.len());
    let c = &mut p.calls[i];
    c.thread = if c.thread == ThreadId::MAIN {
        ThreadId::SECOND
    } else {
        ThreadId::MAIN
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate;

    #[test]
    fn mutations_keep_programs_valid_and_change_them() {
        let t = Target::builtin();
        let mut rng = Rng::new(5);
        let mut seen = std::collections::HashSet::new();
        let mut prog = generate(t, &mut rng);
        for i in 0..5000 {
            let other = generate(t, &mut Rng::new(10_000 + i));
            let (next, kind) = mutate(t, &prog, Some(&other), &mut rng);
            if let Err(e) = validate(t, &next) {
                panic!("{kind:?} made an invalid program: {e}\nbefore:\n{prog}\nafter:\n{next}");
            }
            assert_ne!(next, prog, "{kind:?} changed nothing");
            assert!(next.calls.len() <= MAX_CALLS);
            let text = next.to_text();
            assert_eq!(crate::parse(t, &text).unwrap(), next);
            seen.insert(kind);
            // Restart now and then so both short and long programs get mutated.
            prog = if i % 50 == 49 {
                generate(t, &mut rng)
            } else {
                next
            };
        }
        assert_eq!(seen.len(), 5, "not every mutation ran: {seen:?}");
    }

    #[test]
    fn mutation_is_deterministic_for_a_seed() {
        let t = Target::builtin();
        let base = generate(t, &mut Rng::new(77));
        let other = generate(t, &mut Rng::new(78));
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut p = base.clone();
            for _ in 0..50 {
                p = mutate(t, &p, Some(&other), &mut rng).0;
            }
            p.to_text()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn remove_takes_dependents_with_it() {
        let t = Target::builtin();
        let text = "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\nr1 = mmap(0x0, 0x1000, PROT_READ, MAP_SHARED, r0, 0x0)\nmunmap(&r1+0x0, 0x1000)\ndaxdiff_barrier()\n";
        let prog = crate::parse(t, text).unwrap();
        // Find a seed whose removal hits the open: everything but the barrier goes.
        for seed in 0..200 {
            let mut p = prog.clone();
            let mut rng = Rng::new(seed);
            remove(&mut p, &mut rng);
            if !p.calls.iter().any(|c| c.name == "openat$ext4") {
                assert_eq!(p.to_text(), "daxdiff_barrier()\n");
                return;
            }
        }
        panic!("no seed removed the open");
    }

    #[test]
    fn splice_is_a_prefix_of_one_program_then_all_of_the_other() {
        let t = Target::builtin();
        let a = generate(t, &mut Rng::new(1));
        let b = generate(t, &mut Rng::new(2));
        let mut p = a.clone();
        assert!(splice(&mut p, &b, &mut Rng::new(3)));
        p.renumber();
        validate(t, &p).unwrap();
        let cut = p.calls.len() - b.calls.len();
        assert!(cut <= a.calls.len());
        let names =
            |calls: &[crate::Call]| calls.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p.calls[..cut]), names(&a.calls[..cut]));
        assert_eq!(names(&p.calls[cut..]), names(&b.calls));
        // Relabelled but structurally the same: renumbering the tail alone gives b back.
        let mut tail = Program {
            calls: p.calls[cut..].to_vec(),
            trailer: vec![],
        };
        tail.renumber();
        assert_eq!(tail.to_text(), b.to_text());
    }

    #[test]
    fn toggle_moves_a_call_between_threads() {
        let t = Target::builtin();
        let p0 = crate::parse(t, "daxdiff_barrier()\n").unwrap();
        let mut p = p0.clone();
        toggle_thread(&mut p, &mut Rng::new(0));
        assert_eq!(p.to_text(), "daxdiff_barrier() [t1]\n");
        toggle_thread(&mut p, &mut Rng::new(0));
        assert_eq!(p, p0);
    }
}
