//! Program minimization (after syzkaller's `prog/minimization.go`): drop calls from the end
//! backwards, each with the calls that use what it produced, move racing calls onto the main
//! thread, then simplify arguments (`simplify`), keeping every change after which the
//! program still shows the signal.

use std::time::Instant;

use anyhow::Result;

use super::simplify::{self, ArgChange, Candidate, Verdict};
use daxdiff_prog::{validate, Program, ResId, Target, ThreadId};

/// Whether a candidate program still shows the finding's signal (running it on the kernels).
/// `change` says what the candidate changed, for progress lines.
pub trait Oracle {
    fn still_shows(&mut self, candidate: &Program, change: &str) -> Result<bool>;
}

impl<F: FnMut(&Program, &str) -> Result<bool>> Oracle for F {
    fn still_shows(&mut self, candidate: &Program, change: &str) -> Result<bool> {
        self(candidate, change)
    }
}

/// What the search may do.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// No candidate starts after this; the search keeps what it found so far.
    pub deadline: Option<Instant>,
    /// Also simplify arguments after dropping calls.
    pub args: bool,
}

impl Limits {
    fn spent(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[derive(Clone, Debug)]
pub struct Minimized {
    pub program: Program,
    /// Candidates the oracle was asked about.
    pub candidates: usize,
    /// Calls in the program after dropping calls (before argument simplification).
    pub calls: usize,
    /// Argument simplifications kept, in the order they were found.
    pub args: Vec<ArgChange>,
    /// The deadline stopped the search before it tried everything.
    pub stopped: bool,
}

/// The smallest program this search finds that still shows the signal. `prog` itself is
/// assumed to show it (the caller checked). Comments go: they described the original.
pub fn minimize(
    target: &Target,
    prog: &Program,
    limits: Limits,
    oracle: &mut impl Oracle,
) -> Result<Minimized> {
    let mut best = prog.clone();
    best.trailer.clear();
    for c in &mut best.calls {
        c.comments.clear();
    }
    let mut candidates = 0;
    let mut stopped = false;
    let mut i = best.calls.len();
    while i > 0 {
        i -= 1;
        let cand = without_call(&best, i);
        if cand.calls.is_empty() || validate(target, &cand).is_err() {
            continue;
        }
        if limits.spent() {
            stopped = true;
            break;
        }
        candidates += 1;
        let what = format!("drop #{i} {}", best.calls[i].name);
        if oracle.still_shows(&cand, &what)? {
            best = cand;
            i = i.min(best.calls.len());
        }
    }
    if !stopped && best.calls.iter().any(|c| c.thread != ThreadId::MAIN) {
        let mut cand = best.clone();
        for c in &mut cand.calls {
            c.thread = ThreadId::MAIN;
        }
        if limits.spent() {
            stopped = true;
        } else {
            candidates += 1;
            if oracle.still_shows(&cand, "all calls on the main thread")? {
                best = cand;
            }
        }
    }
    best.renumber();
    let calls = best.calls.len();
    let mut args = Vec::new();
    if limits.args && !stopped {
        let s = simplify::simplify(target, &best, &mut |c: &Candidate| {
            if limits.spent() {
                return Ok(Verdict::Stop);
            }
            Ok(if oracle.still_shows(&c.program, &c.change.describe())? {
                Verdict::Keeps
            } else {
                Verdict::Loses
            })
        })?;
        best = s.program;
        // The candidate that met the deadline was not run.
        candidates += s.candidates - usize::from(s.stopped);
        stopped = s.stopped;
        args = s.changes;
    }
    Ok(Minimized {
        program: best,
        candidates,
        calls,
        args,
        stopped,
    })
}

/// `prog` without call `idx` and without every later call that uses a resource a removed
/// call produced (transitively).
pub fn without_call(prog: &Program, idx: usize) -> Program {
    let mut gone: Vec<ResId> = Vec::new();
    let mut out = Program {
        calls: Vec::with_capacity(prog.calls.len()),
        trailer: prog.trailer.clone(),
    };
    for (j, call) in prog.calls.iter().enumerate() {
        let drop = j == idx || call.uses().iter().any(|r| gone.contains(r));
        if drop {
            gone.extend(call.ret);
        } else {
            out.calls.push(call.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROG: &str = r#"# a comment
r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
ftruncate(r0, 0x200000)
r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)
madvise(&r1+0x0, 0x200000, MADV_POPULATE_WRITE)
r2 = daxdiff_pipe(O_NONBLOCK)
vmsplice(r2, [{&r1+0x0, 0x4000}], 0x1, 0x0) [t1]
munmap(&r1+0x0, 0x200000)
close(r0)
unlink$ext4(&"file0")
daxdiff_evict(DAXDIFF_EVICT_DROP_CACHES)
read$pipe(r2, &buf[0x4000], 0x4000)
close$pipe_r(r2)
close$pipe_w(r2)
"#;

    fn names(p: &Program) -> Vec<&str> {
        p.calls.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn removing_a_producer_takes_its_users_with_it() {
        let p = daxdiff_prog::parse(Target::builtin(), PROG).unwrap();
        let q = without_call(&p, 2); // the mmap
        assert_eq!(
            names(&q),
            [
                "openat$ext4",
                "ftruncate",
                "daxdiff_pipe",
                "close",
                "unlink$ext4",
                "daxdiff_evict",
                "read$pipe",
                "close$pipe_r",
                "close$pipe_w"
            ]
        );
        assert!(validate(Target::builtin(), &q).is_ok());
    }

    #[test]
    fn keeps_exactly_what_the_signal_needs() {
        let target = Target::builtin();
        let p = daxdiff_prog::parse(target, PROG).unwrap();
        // The "kernel": the signal needs a vmsplice from a mapping, then an eviction.
        let mut asked = 0;
        let mut oracle = |c: &Program, _: &str| -> Result<bool> {
            asked += 1;
            let n = names(c);
            let at = |name: &str| n.iter().position(|x| *x == name);
            Ok(matches!((at("vmsplice"), at("daxdiff_evict")), (Some(v), Some(e)) if v < e))
        };
        let m = minimize(target, &p, Limits::default(), &mut oracle).unwrap();
        assert_eq!(
            names(&m.program),
            [
                "openat$ext4",
                "mmap",
                "daxdiff_pipe",
                "vmsplice",
                "daxdiff_evict"
            ]
        );
        assert_eq!(m.candidates, asked);
        // Renumbered, on the main thread, comment gone, still valid and printable.
        let text = m.program.to_text();
        assert!(text.starts_with("r0 = openat$ext4("), "{text}");
        assert!(!text.contains("[t1]") && !text.contains('#'), "{text}");
        assert!(text.contains("vmsplice(r2, [{&r1+0x0, 0x4000}]"), "{text}");
        assert!(validate(target, &m.program).is_ok());
    }

    #[test]
    fn arguments_are_simplified_after_the_calls_are_dropped() {
        let target = Target::builtin();
        let p = daxdiff_prog::parse(target, PROG).unwrap();
        // The "kernel": a vmsplice of at least 0x2000 bytes from a shared mapping, then an
        // eviction.
        let mut asked = Vec::new();
        let mut oracle = |c: &Program, what: &str| -> Result<bool> {
            asked.push(what.to_string());
            let at = |name: &str| c.calls.iter().position(|x| x.name == name);
            let (Some(m), Some(v), Some(e)) = (at("mmap"), at("vmsplice"), at("daxdiff_evict"))
            else {
                return Ok(false);
            };
            let shared = target.consts["MAP_SHARED"];
            let flags = target.scalar_value(&c.calls[m].args[3]).unwrap();
            let len = match &c.calls[v].args[1] {
                daxdiff_prog::Arg::Iovecs(iovs) => iovs[0].len,
                _ => 0,
            };
            Ok(v < e && flags & shared != 0 && len >= 0x2000)
        };
        let m = minimize(
            target,
            &p,
            Limits {
                deadline: None,
                args: true,
            },
            &mut oracle,
        )
        .unwrap();
        assert_eq!(m.calls, 5);
        assert!(!m.stopped);
        assert_eq!(m.candidates, asked.len());
        // Everything the signal does not need is at its simplest; what it needs stays.
        assert_eq!(
            m.program.to_text(),
            "r0 = openat$ext4(AT_FDCWD, &\"file0\", 0x0, 0x1b6)\n\
             r1 = mmap(0x0, 0x0, 0x0, MAP_SHARED, r0, 0x0)\n\
             r2 = daxdiff_pipe(0x0)\n\
             vmsplice(r2, [{&r1+0x0, 0x2000}], 0x0, 0x0)\n\
             daxdiff_evict(DAXDIFF_EVICT_DROP_CACHES)\n"
        );
        let described: Vec<String> = m.args.iter().map(|a| a.describe()).collect();
        assert!(
            described.contains(&"#3 vmsplice iov[0].len: 0x4000 -> 0x2000".to_string()),
            "{described:#?}"
        );
        assert_eq!(asked[0], "drop #12 close$pipe_w");
        assert!(validate(target, &m.program).is_ok());
    }

    #[test]
    fn a_spent_budget_keeps_the_program_and_says_so() {
        let target = Target::builtin();
        let p = daxdiff_prog::parse(target, PROG).unwrap();
        let m = minimize(
            target,
            &p,
            Limits {
                deadline: Some(Instant::now()),
                args: true,
            },
            &mut |_: &Program, _: &str| -> Result<bool> {
                panic!("no candidate after the deadline")
            },
        )
        .unwrap();
        assert!(m.stopped);
        assert_eq!(m.candidates, 0);
        assert_eq!(m.program.calls.len(), p.calls.len());
    }

    #[test]
    fn a_signal_that_needs_everything_keeps_everything() {
        let target = Target::builtin();
        let p = daxdiff_prog::parse(target, PROG).unwrap();
        let n = p.calls.len();
        let m = minimize(
            target,
            &p,
            Limits::default(),
            &mut |c: &Program, _: &str| {
                Ok(c.calls.len() == n && c.calls.iter().any(|c| c.thread != ThreadId::MAIN))
            },
        )
        .unwrap();
        assert_eq!(m.program.calls.len(), n);
        assert!(m.program.calls.iter().any(|c| c.thread != ThreadId::MAIN));
    }
}
