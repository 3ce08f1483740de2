//! What makes one run of the reproducer "bad": a predicate the user states (`--bad-if`), the
//! good end's own outcome (`differs`), or a fuzzing finding's recorded divergence.

use std::path::Path;

use anyhow::{bail, Context, Result};
use daxdiff_prog::wire::Status;
use serde::{Deserialize, Serialize};

use super::search::RunVerdict;
use crate::diff::{differences, CrashTitle, Difference, Outcome, Ret};
use crate::workdir::{Finding, FindingKind};

/// What one call is expected to have returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Errno(String),
    Value(i64),
    /// Any success.
    Ok,
    /// Any errno.
    Error,
    Fd,
    Addr,
    /// The call did not run (the program stopped before it).
    Missing,
}

/// One `--bad-if` condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    Not(Box<Predicate>),
    Call {
        index: usize,
        expect: Expect,
    },
    /// Any kernel report, or one whose title contains the text.
    Report(Option<String>),
    /// Any oracle problem (a refcount left changed after teardown, a blocked teardown
    /// step, data that does not match), or one whose title contains the text.
    Problem(Option<String>),
    Status(Status),
    /// The program hung (timeout), optionally with this function on the hung task's stack.
    Hang(Option<String>),
    /// The outcome differs from the good end's (most common) outcome.
    Differs,
}

pub const GRAMMAR: &str = "call N returns ERRNO|VALUE|ok|error|fd|addr, call N fails, call N succeeds, \
call N missing, report [TEXT], problem [TEXT], status completed|timeout|crashed|error, hang [FUNCTION], \
differs, not PREDICATE";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--bad-if '{text}': {why}; the forms are: {GRAMMAR}")]
pub struct PredicateError {
    text: String,
    why: String,
}

impl std::str::FromStr for Predicate {
    type Err = PredicateError;

    fn from_str(text: &str) -> Result<Predicate, PredicateError> {
        let err = |why: &str| PredicateError {
            text: text.to_string(),
            why: why.to_string(),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["not", ..] => Ok(Predicate::Not(Box::new(
                text.trim_start()[3..].trim().parse()?,
            ))),
            ["call", n, rest @ ..] => {
                let index: usize = n
                    .trim_start_matches('#')
                    .parse()
                    .map_err(|_| err("the call index must be a number (0 is the first call)"))?;
                let expect = match rest {
                    ["fails"] => Expect::Error,
                    ["succeeds"] => Expect::Ok,
                    ["missing"] => Expect::Missing,
                    ["returns", v] => parse_expect(v).ok_or_else(|| {
                        err("expected an errno name (EINVAL), a number, ok, error, fd or addr")
                    })?,
                    _ => {
                        return Err(err(
                            "say what the call does: returns X, fails, succeeds or missing",
                        ))
                    }
                };
                Ok(Predicate::Call { index, expect })
            }
            ["report"] => Ok(Predicate::Report(None)),
            ["problem"] => Ok(Predicate::Problem(None)),
            ["problem", ..] => Ok(Predicate::Problem(Some(
                text.trim_start()[7..].trim().to_string(),
            ))),
            ["report", ..] => Ok(Predicate::Report(Some(
                text.trim_start()[6..].trim().to_string(),
            ))),
            ["status", s] => serde_json::from_value(serde_json::Value::String(s.to_string()))
                .map(Predicate::Status)
                .map_err(|_| err("the status is completed, timeout, crashed or error")),
            ["hang"] => Ok(Predicate::Hang(None)),
            ["hang", f] => Ok(Predicate::Hang(Some(f.to_string()))),
            ["differs"] => Ok(Predicate::Differs),
            _ => Err(err("not a predicate")),
        }
    }
}

fn parse_expect(v: &str) -> Option<Expect> {
    Some(match v {
        "ok" => Expect::Ok,
        "error" => Expect::Error,
        "fd" => Expect::Fd,
        "addr" => Expect::Addr,
        _ if v.starts_with('E')
            && v.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
        {
            Expect::Errno(v.to_string())
        }
        _ => Expect::Value(match v.strip_prefix("0x") {
            Some(h) => i64::from_str_radix(h, 16).ok()?,
            None => v.parse().ok()?,
        }),
    })
}

impl Predicate {
    /// Whether `o` satisfies the predicate; `reference` is the good end's outcome.
    pub fn holds(&self, o: &Outcome, reference: Option<&Outcome>) -> bool {
        match self {
            Predicate::Not(p) => !p.holds(o, reference),
            Predicate::Call { index, expect } => {
                let ret = o.calls.iter().find(|c| c.index == *index).map(|c| &c.ret);
                match (expect, ret) {
                    (Expect::Missing, r) => r.is_none(),
                    (_, None) => false,
                    (Expect::Ok, Some(r)) => !matches!(r, Ret::Errno(_)),
                    (Expect::Error, Some(r)) => matches!(r, Ret::Errno(_)),
                    (Expect::Errno(e), Some(Ret::Errno(got))) => e == got,
                    (Expect::Value(v), Some(Ret::Value(got))) => v == got,
                    (Expect::Fd, Some(r)) => *r == Ret::Fd,
                    (Expect::Addr, Some(r)) => *r == Ret::Address,
                    _ => false,
                }
            }
            Predicate::Report(None) => !o.reports.is_empty(),
            Predicate::Report(Some(t)) => o.reports.iter().any(|r| r.title.contains(t.as_str())),
            Predicate::Problem(None) => !o.problems().is_empty(),
            Predicate::Problem(Some(t)) => o.problems().iter().any(|p| p.contains(t.as_str())),
            Predicate::Status(s) => o.status == *s,
            Predicate::Hang(f) => {
                o.status == Status::Timeout
                    && f.as_ref()
                        .is_none_or(|f| o.hung_stack.iter().any(|s| s == f))
            }
            Predicate::Differs => reference.is_some_and(|r| r != o),
        }
    }

    fn needs_reference(&self) -> bool {
        match self {
            Predicate::Not(p) => p.needs_reference(),
            Predicate::Differs => true,
            _ => false,
        }
    }

    /// Whether the predicate is about reference counts: a run that read none cannot be
    /// judged by it.
    fn about_refcounts(&self) -> bool {
        match self {
            Predicate::Not(p) => p.about_refcounts(),
            Predicate::Problem(None) => true,
            Predicate::Problem(Some(t)) => t.starts_with("refcount"),
            _ => false,
        }
    }

    /// Whether judging wants the reference-count probe in the guest (`differs` compares the
    /// counts too).
    fn reads_refcounts(&self) -> bool {
        self.about_refcounts()
            || match self {
                Predicate::Not(p) => p.reads_refcounts(),
                Predicate::Differs => true,
                _ => false,
            }
    }
}

/// The recorded divergence of a fuzzing finding: a run is bad when it shows B's side of the
/// difference the finding is named after, good when it shows A's, and says nothing otherwise.
/// For a fix bisection A's side is the bad one: the older kernel has the bug and the finding
/// stops where kernels start to behave like B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingSignal {
    pub a: Outcome,
    pub b: Outcome,
    pub difference: Difference,
    pub kernel_a: String,
    pub kernel_b: String,
    /// A's side is bad (fix bisection). Left out of the JSON when false, so that the keys of
    /// bisections started before it existed stay the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub a_is_bad: bool,
}

impl FindingSignal {
    pub fn classify(&self, o: &Outcome) -> RunVerdict {
        let like = |rec: &Outcome| {
            !differences(o, rec)
                .iter()
                .any(|d| same_subject(d, &self.difference))
        };
        match (like(&self.a), like(&self.b), self.a_is_bad) {
            (false, true, false) | (true, false, true) => RunVerdict::Bad,
            (true, false, false) | (false, true, true) => RunVerdict::Good,
            _ => RunVerdict::Skip,
        }
    }
}

/// Whether two differences are about the same thing (report title, status, call position).
fn same_subject(x: &Difference, y: &Difference) -> bool {
    use Difference::*;
    match (x, y) {
        (Report { title: a, .. }, Report { title: b, .. }) => a == b,
        (Status { .. }, Status { .. }) => true,
        (
            Call { index: i, .. } | Checksum { index: i, .. },
            Call { index: j, .. } | Checksum { index: j, .. },
        ) => i == j,
        (Teardown { step: a, .. }, Teardown { step: b, .. }) => a == b,
        (Refcounts { role: a, .. }, Refcounts { role: b, .. }) => a == b,
        (Integrity { index: i, .. }, Integrity { index: j, .. }) => i == j,
        _ => false,
    }
}

/// How runs are judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Bad if any predicate holds.
    BadIf(Vec<Predicate>),
    Finding(Box<FindingSignal>),
}

impl Signal {
    pub fn classify(&self, o: &Outcome, reference: Option<&Outcome>) -> RunVerdict {
        // A run that read no counts (no probe, or the probe failed) cannot be good for a
        // signal about counts: it says nothing, unless it is bad for another reason.
        let blind = o.refcounts.is_none() && self.about_refcounts();
        match self {
            Signal::BadIf(ps) => {
                if ps.iter().any(|p| p.needs_reference()) && reference.is_none() {
                    RunVerdict::Skip
                } else if ps.iter().any(|p| p.holds(o, reference)) {
                    RunVerdict::Bad
                } else if blind {
                    RunVerdict::Skip
                } else {
                    RunVerdict::Good
                }
            }
            Signal::Finding(_) if blind => RunVerdict::Skip,
            Signal::Finding(f) => f.classify(o),
        }
    }

    /// Whether what is bad is about reference counts: a run that read none cannot be judged.
    fn about_refcounts(&self) -> bool {
        match self {
            Signal::BadIf(ps) => ps.iter().any(Predicate::about_refcounts),
            Signal::Finding(f) => matches!(f.difference, Difference::Refcounts { .. }),
        }
    }

    /// Whether runs must read reference counts (the guest needs the probe): a refcount
    /// problem, `differs`, or a finding whose difference is in the counts.
    pub fn reads_refcounts(&self) -> bool {
        self.about_refcounts()
            || matches!(self, Signal::BadIf(ps) if ps.iter().any(Predicate::reads_refcounts))
    }

    /// The signal of a fix bisection: a finding's bad side becomes A's (predicates and
    /// kernel reports keep their meaning: the bug is what they describe).
    pub fn for_fix(self) -> Signal {
        match self {
            Signal::Finding(mut f) => {
                f.a_is_bad = true;
                Signal::Finding(f)
            }
            s => s,
        }
    }

    /// Whether runs are judged against the good end's outcome.
    pub fn needs_reference(&self) -> bool {
        matches!(self, Signal::BadIf(ps) if ps.iter().any(Predicate::needs_reference))
    }

    pub fn describe(&self) -> String {
        match self {
            Signal::BadIf(ps) => format!(
                "bad if {}",
                ps.iter().map(describe).collect::<Vec<_>>().join(" or ")
            ),
            Signal::Finding(f) => {
                let (bad, good) = if f.a_is_bad {
                    (&f.kernel_a, &f.kernel_b)
                } else {
                    (&f.kernel_b, &f.kernel_a)
                };
                format!(
                    "bad if it looks like {bad} ({}), good if like {good}",
                    f.difference.describe(),
                )
            }
        }
    }
}

fn describe(p: &Predicate) -> String {
    match p {
        Predicate::Not(p) => format!("not {}", describe(p)),
        Predicate::Call { index, expect } => format!(
            "call {index} {}",
            match expect {
                Expect::Errno(e) => format!("returns {e}"),
                Expect::Value(v) => format!("returns {v}"),
                Expect::Ok => "succeeds".into(),
                Expect::Error => "fails".into(),
                Expect::Fd => "returns an fd".into(),
                Expect::Addr => "returns an address".into(),
                Expect::Missing => "does not run".into(),
            }
        ),
        Predicate::Report(None) => "any kernel report".into(),
        Predicate::Report(Some(t)) => format!("report '{t}'"),
        Predicate::Problem(None) => "any refcount, teardown or data problem".into(),
        Predicate::Problem(Some(t)) => format!("problem '{t}'"),
        Predicate::Status(s) => format!("status {s:?}").to_lowercase(),
        Predicate::Hang(None) => "hang".into(),
        Predicate::Hang(Some(f)) => format!("hang in {f}"),
        Predicate::Differs => "differs from the good end".into(),
    }
}

/// A finding directory of a fuzzing workdir (`divergences/<sig>` or `crashes/<title>`): the
/// program and the signal it stands for.
pub fn load_finding(dir: &Path) -> Result<(String, Signal)> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "read {}: a finding directory holds prog.txt, finding.json and outcome-a/b.json",
                p.display()
            )
        })
    };
    let program = read("prog.txt")?;
    let finding: Finding = serde_json::from_str(&read("finding.json")?)
        .with_context(|| format!("{} is damaged", dir.join("finding.json").display()))?;
    match finding.kind {
        FindingKind::Divergence => {
            let outcome = |name: &str| -> Result<Outcome> {
                serde_json::from_str(&read(name)?)
                    .with_context(|| format!("{} is damaged", dir.join(name).display()))
            };
            let (a, b) = (outcome("outcome-a.json")?, outcome("outcome-b.json")?);
            let Some(difference) = differences(&a, &b).into_iter().next() else {
                bail!(
                    "{}: the recorded outcomes do not differ; bisect it with --prog and --bad-if",
                    dir.display()
                );
            };
            Ok((
                program,
                Signal::Finding(Box::new(FindingSignal {
                    a,
                    b,
                    difference,
                    kernel_a: finding.kernel_a,
                    kernel_b: finding.kernel_b,
                    a_is_bad: false,
                })),
            ))
        }
        FindingKind::Crash => Ok((program, Signal::BadIf(vec![crash_predicate(&finding.signature)]))),
        FindingKind::Unstable => bail!(
            "{} is an unstable finding (it differs from run to run on {}): there is no signal to bisect",
            dir.display(),
            finding.signature
        ),
    }
}

/// What makes a run bad for a crash finding: its kernel report, or the oracle's problem of
/// the same kind ([`CrashTitle`]).
fn crash_predicate(signature: &str) -> Predicate {
    match CrashTitle::of(signature) {
        CrashTitle::Problem(kind) => Predicate::Problem(Some(kind.to_string())),
        CrashTitle::Report(title) => Predicate::Report(Some(title.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{CallOutcome, KernelReport};

    fn outcome(rets: &[Ret]) -> Outcome {
        Outcome {
            status: Status::Completed,
            calls: rets
                .iter()
                .enumerate()
                .map(|(index, ret)| CallOutcome {
                    index,
                    name: format!("call{index}"),
                    ret: ret.clone(),
                    checksum: None,
                })
                .collect(),
            reports: vec![],
            hung_stack: vec![],
            detail: None,
            teardown: vec![],
            refcounts: None,
            integrity: vec![],
        }
    }

    fn p(s: &str) -> Predicate {
        s.parse().unwrap()
    }

    #[test]
    fn predicates_parse_and_hold_on_what_a_user_reads() {
        let o = outcome(&[
            Ret::Fd,
            Ret::Address,
            Ret::Value(0),
            Ret::Errno("EINVAL".into()),
        ]);
        assert!(p("call 3 returns EINVAL").holds(&o, None));
        assert!(p("call #3 fails").holds(&o, None));
        assert!(!p("call 3 returns EFAULT").holds(&o, None));
        assert!(p("call 2 returns 0").holds(&o, None));
        assert!(p("call 2 returns 0x0").holds(&o, None));
        assert!(p("call 1 returns addr").holds(&o, None));
        assert!(p("call 0 succeeds").holds(&o, None));
        assert!(p("call 7 missing").holds(&o, None));
        assert!(!p("call 7 succeeds").holds(&o, None));
        assert!(p("not report").holds(&o, None));
        assert!(p("status completed").holds(&o, None));
        assert!(!p("hang").holds(&o, None));
        let s = Signal::BadIf(vec![p("call 5 returns 0"), p("not call 2 fails")]);
        assert_eq!(s.describe(), "bad if call 5 returns 0 or not call 2 fails");
    }

    #[test]
    fn reports_hangs_and_differs() {
        let mut o = outcome(&[Ret::Value(0)]);
        o.reports.push(KernelReport {
            title: "WARNING in dax_disassociate_entry".into(),
            signature: daxdiff_observe::Signature::from_title("WARNING in dax_disassociate_entry"),
        });
        assert!(p("report").holds(&o, None));
        assert!(p("report dax_disassociate").holds(&o, None));
        assert!(!p("report BUG").holds(&o, None));
        let mut h = outcome(&[]);
        h.status = Status::Timeout;
        h.hung_stack = vec!["dax_break_layout_final".into()];
        assert!(p("hang dax_break_layout_final").holds(&h, None));
        assert!(!p("hang memunmap_pages").holds(&h, None));
        let s = Signal::BadIf(vec![p("differs")]);
        assert_eq!(s.classify(&o, None), RunVerdict::Skip);
        assert_eq!(s.classify(&o, Some(&o)), RunVerdict::Good);
        assert_eq!(s.classify(&o, Some(&h)), RunVerdict::Bad);
    }

    #[test]
    fn refcount_teardown_and_integrity_findings_are_problems_not_reports() {
        let mut o = outcome(&[Ret::Value(0)]);
        o.refcounts = Some(vec![serde_json::from_value(serde_json::json!({
            "role": "devdax", "pgmap_ref": -512, "ref0": 1, "ref1": -1, "ref2": 0,
            "ref3_plus": 0, "negative": 0, "note": null, "underflow": false
        }))
        .unwrap()]);
        let title = "refcount underflow on devdax: pgmap_ref -512, ref0 +1, ref1 -1";
        assert_eq!(o.problems(), [title]);
        let by_finding = crash_predicate(title);
        assert_eq!(
            describe(&by_finding),
            "problem 'refcount underflow on devdax'"
        );
        assert!(by_finding.holds(&o, None));
        assert!(
            !p(&format!("report {title}")).holds(&o, None),
            "not a kernel report"
        );
        assert!(p("problem").holds(&o, None));
        assert!(p("problem underflow on devdax").holds(&o, None));
        assert!(!p("problem refcount leak").holds(&o, None));
        assert!(!p("problem").holds(&outcome(&[Ret::Value(0)]), None));
        assert_eq!(
            crash_predicate("WARNING in try_grab_page"),
            Predicate::Report(Some("WARNING in try_grab_page".into()))
        );
        assert_eq!(
            crash_predicate("teardown: disable devdax blocked in hrtimer_nanosleep"),
            Predicate::Problem(Some(
                "teardown: disable devdax blocked in hrtimer_nanosleep".into()
            ))
        );
    }

    #[test]
    fn a_refcount_signal_asks_for_the_probe_and_a_run_without_counts_says_nothing() {
        let title = "refcount underflow on devdax: pgmap_ref -512, ref0 +1, ref1 -1";
        let signal = Signal::BadIf(vec![crash_predicate(title)]);
        assert!(signal.reads_refcounts());
        for reads in ["problem", "not problem refcount leak", "differs"] {
            assert!(Signal::BadIf(vec![p(reads)]).reads_refcounts(), "{reads}");
        }
        for blind in ["report WARNING", "call 2 fails", "problem teardown: umount"] {
            assert!(!Signal::BadIf(vec![p(blind)]).reads_refcounts(), "{blind}");
        }
        let mut counted = outcome(&[Ret::Value(0)]);
        counted.refcounts = Some(vec![]);
        assert_eq!(signal.classify(&counted, None), RunVerdict::Good);
        let mut under = counted.clone();
        under.refcounts = Some(vec![serde_json::from_value(serde_json::json!({
            "role": "devdax", "pgmap_ref": -512, "ref0": 1, "ref1": -1, "ref2": 0,
            "ref3_plus": 0, "negative": 0, "note": null, "underflow": false
        }))
        .unwrap()]);
        assert_eq!(signal.classify(&under, None), RunVerdict::Bad);
        // No probe in the guest: not "good", which would bisect to the wrong commit.
        assert_eq!(
            signal.classify(&outcome(&[Ret::Value(0)]), None),
            RunVerdict::Skip
        );
        // A signal about something else is judged as before.
        let report = Signal::BadIf(vec![p("report WARNING")]);
        assert_eq!(
            report.classify(&outcome(&[Ret::Value(0)]), None),
            RunVerdict::Good
        );

        // A divergence in the counts: judged by the namespace role that differs.
        let finding = Signal::Finding(Box::new(FindingSignal {
            a: counted.clone(),
            b: under.clone(),
            difference: differences(&counted, &under).remove(0),
            kernel_a: "a".into(),
            kernel_b: "b".into(),
            a_is_bad: false,
        }));
        assert!(finding.reads_refcounts());
        assert_eq!(finding.classify(&under, None), RunVerdict::Bad);
        assert_eq!(finding.classify(&counted, None), RunVerdict::Good);
        assert_eq!(
            finding.classify(&outcome(&[Ret::Value(0)]), None),
            RunVerdict::Skip
        );
    }

    #[test]
    fn bad_predicates_name_the_forms() {
        for bad in [
            "call x fails",
            "call 3",
            "status weird",
            "explode",
            "call 3 returns E-1",
        ] {
            let e = bad.parse::<Predicate>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("call N returns"), "{e}");
        }
    }

    #[test]
    fn a_finding_judges_by_its_named_difference_only() {
        let a = outcome(&[Ret::Fd, Ret::Errno("EFAULT".into()), Ret::Value(5)]);
        let b = outcome(&[Ret::Fd, Ret::Value(0), Ret::Value(6)]);
        let difference = differences(&a, &b).remove(0);
        let f = FindingSignal {
            a: a.clone(),
            b: b.clone(),
            difference,
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            a_is_bad: false,
        };
        assert_eq!(f.classify(&a), RunVerdict::Good);
        assert_eq!(f.classify(&b), RunVerdict::Bad);
        // Call 2 is not what the finding is about: B's call 1 with A's call 2 is still bad.
        let mixed = outcome(&[Ret::Fd, Ret::Value(0), Ret::Value(5)]);
        assert_eq!(f.classify(&mixed), RunVerdict::Bad);
        let neither = outcome(&[Ret::Fd, Ret::Errno("ENOMEM".into()), Ret::Value(5)]);
        assert_eq!(f.classify(&neither), RunVerdict::Skip);
        // Bisecting where it stops: A (the older kernel) has the bug.
        let fix = Signal::Finding(Box::new(f)).for_fix();
        assert_eq!(fix.classify(&a, None), RunVerdict::Bad);
        assert_eq!(fix.classify(&b, None), RunVerdict::Good);
        assert_eq!(fix.classify(&neither, None), RunVerdict::Skip);
        assert!(
            fix.describe()
                .starts_with("bad if it looks like debian-6.12 ("),
            "{}",
            fix.describe()
        );
        let crash = Signal::BadIf(vec!["report WARNING".parse().unwrap()]);
        assert_eq!(crash.clone().for_fix(), crash);
    }

    #[test]
    fn finding_directories_load_from_a_workdir() {
        use crate::workdir::{SideRecord, Workdir};
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        let a = outcome(&[Ret::Errno("EFAULT".into())]);
        let b = outcome(&[Ret::Value(0)]);
        let finding = Finding {
            kind: FindingKind::Divergence,
            signature: "call0: EFAULT vs 0".into(),
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            differences: vec![],
            runs: 3,
            found_at_exec: 1,
        };
        let side = |o: &Outcome| vec![o.clone()];
        let (oa, ob) = (side(&a), side(&b));
        let dir = w
            .save_finding(
                "x",
                &finding,
                "getpid()\n",
                SideRecord {
                    outcomes: &oa,
                    console: &[],
                },
                SideRecord {
                    outcomes: &ob,
                    console: &[],
                },
            )
            .unwrap();
        let (prog, signal) = load_finding(&dir).unwrap();
        assert_eq!(prog, "getpid()\n");
        assert_eq!(signal.classify(&b, None), RunVerdict::Bad);
        assert_eq!(signal.classify(&a, None), RunVerdict::Good);
        let err = load_finding(t.path()).unwrap_err().to_string();
        assert!(err.contains("prog.txt"), "{err}");
    }
}
