//! A against B: the list of differences between two outcomes, the signature that names a
//! divergence, and the verdict over repeated runs (stable, or unstable on one kernel).

use serde::{Deserialize, Serialize};

use daxdiff_observe::Signature;

use super::outcome::{Outcome, Ret};
use super::suppress::Suppressions;

/// One way two outcomes differ. `a`/`b` are the two kernels in the order compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Difference {
    /// A kernel report on one side only.
    Report { title: String, on: Side },
    /// The program ended differently (completed, timeout, crashed, error).
    Status { a: String, b: String },
    /// A call returned something else, or ran on one side only (`None`: did not run).
    Call {
        index: usize,
        name: String,
        a: Option<Ret>,
        b: Option<Ret>,
    },
    /// Same return value, different bytes seen.
    Checksum { index: usize, name: String },
    /// A teardown step ended differently (`ok` against `blocked in …`; `absent`: not run).
    Teardown { step: String, a: String, b: String },
    /// A namespace role's reference counts stayed changed differently after teardown
    /// (`=`: back to where they were).
    Refcounts { role: String, a: String, b: String },
    /// A data-integrity check of the mapping made by call `index` came out differently.
    Integrity {
        index: usize,
        target: String,
        a: String,
        b: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

impl Difference {
    /// The dedup key: *what* differs, without the call's position, so that the same kernel
    /// change reached by different programs is one finding.
    pub fn signature_text(&self) -> String {
        match self {
            Difference::Report { title, on } => format!(
                "report only on {}: {title}",
                if *on == Side::A { "A" } else { "B" }
            ),
            Difference::Status { a, b } => format!("status {a} vs {b}"),
            Difference::Call { name, a, b, .. } => format!("{name}: {} vs {}", show(a), show(b)),
            Difference::Checksum { name, .. } => format!("{name}: checksum differs"),
            Difference::Teardown { step, a, b } => format!("teardown {step}: {a} vs {b}"),
            Difference::Refcounts { role, a, b } => format!("refcounts {role}: {a} vs {b}"),
            Difference::Integrity { target, a, b, .. } => {
                format!("integrity of a {target} mapping: {a} vs {b}")
            }
        }
    }

    /// The call this difference is about, if any.
    pub fn call_name(&self) -> Option<&str> {
        match self {
            Difference::Call { name, .. } | Difference::Checksum { name, .. } => Some(name),
            _ => None,
        }
    }

    /// A line for humans, with the call position.
    pub fn describe(&self) -> String {
        match self {
            Difference::Call { index, .. }
            | Difference::Checksum { index, .. }
            | Difference::Integrity { index, .. } => {
                format!("call {index} {}", self.signature_text())
            }
            _ => self.signature_text(),
        }
    }

    fn is_call_level(&self) -> bool {
        matches!(
            self,
            Difference::Call { .. } | Difference::Checksum { .. } | Difference::Status { .. }
        )
    }
}

fn show(r: &Option<Ret>) -> String {
    r.as_ref()
        .map(Ret::to_string)
        .unwrap_or_else(|| "did not run".into())
}

/// Every difference between two outcomes: reports first (they matter most), then status,
/// then calls in program order.
pub fn differences(a: &Outcome, b: &Outcome) -> Vec<Difference> {
    let mut out = Vec::new();
    for (mine, theirs, on) in [
        (&a.reports, &b.reports, Side::A),
        (&b.reports, &a.reports, Side::B),
    ] {
        for r in mine {
            if !theirs.iter().any(|t| t.signature == r.signature) {
                out.push(Difference::Report {
                    title: r.title.clone(),
                    on,
                });
            }
        }
    }
    if a.status != b.status || a.hung_stack.first() != b.hung_stack.first() {
        let st = |o: &Outcome| {
            let s = serde_json::to_value(o.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            match o.hung_stack.first() {
                Some(f) => format!("{s} in {f}"),
                None => s,
            }
        };
        out.push(Difference::Status { a: st(a), b: st(b) });
    }
    let max = a
        .calls
        .iter()
        .chain(&b.calls)
        .map(|c| c.index + 1)
        .max()
        .unwrap_or(0);
    for i in 0..max {
        let ca = a.calls.iter().find(|c| c.index == i);
        let cb = b.calls.iter().find(|c| c.index == i);
        let name = ca.or(cb).map(|c| c.name.clone()).unwrap_or_default();
        match (ca, cb) {
            (None, None) => {}
            (Some(x), Some(y)) if x.ret == y.ret => {
                if x.checksum != y.checksum {
                    out.push(Difference::Checksum { index: i, name });
                }
            }
            _ => out.push(Difference::Call {
                index: i,
                name,
                a: ca.map(|c| c.ret.clone()),
                b: cb.map(|c| c.ret.clone()),
            }),
        }
    }
    out.extend(oracle_differences(a, b));
    out
}

/// Teardown, reference counts and data integrity; reference counts only when both guests
/// have the probe.
fn oracle_differences(a: &Outcome, b: &Outcome) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut steps: Vec<&str> = a.teardown.iter().map(|s| s.step.as_str()).collect();
    for s in &b.teardown {
        if !steps.contains(&s.step.as_str()) {
            steps.push(&s.step);
        }
    }
    for step in steps {
        let result = |o: &Outcome| {
            o.teardown
                .iter()
                .find(|s| s.step == step)
                .map(|s| s.result.clone())
                .unwrap_or_else(|| "absent".into())
        };
        let (ra, rb) = (result(a), result(b));
        if ra != rb {
            out.push(Difference::Teardown {
                step: step.to_string(),
                a: ra,
                b: rb,
            });
        }
    }
    if let (Some(ra), Some(rb)) = (&a.refcounts, &b.refcounts) {
        let mut roles: Vec<&str> = ra.iter().chain(rb).map(|d| d.role.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        for role in roles {
            let show = |v: &[daxdiff_prog::wire::RefDelta]| {
                v.iter()
                    .find(|d| d.role == role)
                    .map(|d| d.summary())
                    .unwrap_or_else(|| "=".into())
            };
            let (sa, sb) = (show(ra), show(rb));
            if sa != sb {
                out.push(Difference::Refcounts {
                    role: role.to_string(),
                    a: sa,
                    b: sb,
                });
            }
        }
    }
    let mut calls: Vec<(usize, &str)> = a
        .integrity
        .iter()
        .chain(&b.integrity)
        .map(|c| (c.call, c.target.as_str()))
        .collect();
    calls.sort_unstable();
    calls.dedup();
    for (call, target) in calls {
        let show = |o: &Outcome| {
            o.integrity
                .iter()
                .find(|c| c.call == call && c.target == target)
                .map(|c| {
                    let one = |d: &Option<daxdiff_prog::wire::DataCheck>| match d {
                        None => "-".to_string(),
                        Some(daxdiff_prog::wire::DataCheck::Same) => "same".into(),
                        Some(daxdiff_prog::wire::DataCheck::Differs { .. }) => "differs".into(),
                        Some(daxdiff_prog::wire::DataCheck::Unreadable { what }) => what.clone(),
                    };
                    format!("{}/{}", one(&c.at_end), one(&c.after_teardown))
                })
                .unwrap_or_else(|| "not checked".into())
        };
        let (sa, sb) = (show(a), show(b));
        if sa != sb {
            out.push(Difference::Integrity {
                index: call,
                target: target.to_string(),
                a: sa,
                b: sb,
            });
        }
    }
    out
}

/// What A against B says about a program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Same,
    /// Each kernel agrees with itself and they disagree; the signature names the first
    /// (after suppressions) difference.
    Divergence {
        signature: Signature,
    },
    /// The program's outcome differs between runs on this kernel: not comparable.
    Unstable {
        kernel: String,
    },
}

/// One run each, no suppressions.
pub fn compare(a: &Outcome, b: &Outcome) -> Verdict {
    verdict_of(&differences(a, b))
}

fn verdict_of(diffs: &[Difference]) -> Verdict {
    match diffs.first() {
        None => Verdict::Same,
        Some(d) => Verdict::Divergence {
            signature: Signature::of_text(&d.signature_text()),
        },
    }
}

/// The verdict over repeated runs: unstable if a kernel disagrees with itself, else A
/// against B with suppressed differences removed. A suppressed call-level difference takes
/// the later call-level differences with it, since those usually follow from it.
pub fn judge(
    a_runs: &[Outcome],
    b_runs: &[Outcome],
    kernels: (&str, &str),
    supp: &Suppressions,
) -> (Verdict, Vec<Difference>) {
    for (runs, k) in [(a_runs, kernels.0), (b_runs, kernels.1)] {
        if let Some(other) = runs.iter().skip(1).find(|o| **o != runs[0]) {
            // What differs between this kernel's first run and the first that disagrees.
            let diffs = differences(&runs[0], other);
            return (
                Verdict::Unstable {
                    kernel: k.to_string(),
                },
                diffs,
            );
        }
    }
    let (Some(a), Some(b)) = (a_runs.first(), b_runs.first()) else {
        return (Verdict::Same, Vec::new());
    };
    let mut kept = Vec::new();
    let mut call_level_suppressed = false;
    for d in differences(a, b) {
        if d.is_call_level() && call_level_suppressed {
            continue;
        }
        if supp.matches(&d, kernels).is_some() {
            call_level_suppressed |= d.is_call_level();
            continue;
        }
        kept.push(d);
    }
    (verdict_of(&kept), kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::normalize;
    use daxdiff_prog::wire::Response;

    const URING_612: &str = r#"{"id":2,"status":"completed","stack":null,"detail":null,"calls":[
        {"index":0,"name":"openat$devdax","thread":0,"ret":3,"errno":null,"errno_name":null,"duration_us":120,"checksum":null},
        {"index":1,"name":"mmap","thread":0,"ret":140132950736896,"errno":null,"errno_name":null,"duration_us":900,"checksum":42},
        {"index":2,"name":"io_uring_setup","thread":0,"ret":4,"errno":null,"errno_name":null,"duration_us":300,"checksum":null},
        {"index":3,"name":"io_uring_register$REGISTER_BUFFERS","thread":0,"ret":-1,"errno":95,"errno_name":"EOPNOTSUPP","duration_us":30,"checksum":null}]}"#;

    fn outcome(json: &str) -> Outcome {
        normalize(&serde_json::from_str::<Response>(json).unwrap(), &[])
    }

    #[test]
    fn the_same_outcome_on_both_sides_is_silent() {
        let a = outcome(URING_612);
        let b = outcome(
            &URING_612
                .replace("140132950736896", "139999999995904")
                .replace("\"duration_us\":30", "\"duration_us\":31"),
        );
        assert_eq!(compare(&a, &b), Verdict::Same);
        let runs = vec![a.clone(), a.clone(), a];
        assert_eq!(
            judge(
                &runs,
                &[b.clone(), b.clone(), b],
                ("x", "x"),
                &Suppressions::default()
            )
            .0,
            Verdict::Same
        );
    }

    #[test]
    fn divergence_signature_says_what_differs_without_the_position() {
        let a = outcome(URING_612);
        let b = outcome(&URING_612.replace(
            r#""ret":-1,"errno":95,"errno_name":"EOPNOTSUPP""#,
            r#""ret":0,"errno":null,"errno_name":null"#,
        ));
        let Verdict::Divergence { signature } = compare(&a, &b) else {
            panic!("expected a divergence")
        };
        assert_eq!(
            signature.as_str(),
            "io_uring_register$REGISTER_BUFFERS: EOPNOTSUPP vs 0"
        );
        assert_eq!(
            differences(&a, &b)[0].describe(),
            "call 3 io_uring_register$REGISTER_BUFFERS: EOPNOTSUPP vs 0"
        );
    }

    #[test]
    fn a_call_that_ran_on_one_side_only_and_checksums_are_differences() {
        let a = outcome(URING_612);
        let short = URING_612.replace(
            r#",
        {"index":3,"name":"io_uring_register$REGISTER_BUFFERS","thread":0,"ret":-1,"errno":95,"errno_name":"EOPNOTSUPP","duration_us":30,"checksum":null}"#,
            "",
        );
        let b = outcome(&short.replace("\"checksum\":42", "\"checksum\":43"));
        let d = differences(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].signature_text(), "mmap: checksum differs");
        assert_eq!(
            d[1].signature_text(),
            "io_uring_register$REGISTER_BUFFERS: EOPNOTSUPP vs did not run"
        );
    }

    #[test]
    fn a_kernel_that_disagrees_with_itself_is_unstable() {
        let a = outcome(URING_612);
        let a2 = outcome(&URING_612.replace("\"checksum\":42", "\"checksum\":7"));
        let (v, d) = judge(
            &[a.clone(), a2, a.clone()],
            &[a.clone(), a.clone(), a],
            ("debian-6.12", "debian-7.3"),
            &Suppressions::default(),
        );
        assert_eq!(
            v,
            Verdict::Unstable {
                kernel: "debian-6.12".into()
            }
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].signature_text(), "mmap: checksum differs");
    }

    #[test]
    fn teardown_refcount_and_integrity_differences_are_named() {
        let with = |extra: &str| {
            outcome(&URING_612.replacen("{\"id\":2,", &format!("{{\"id\":2,{extra}"), 1))
        };
        let a = with(
            r#""teardown":[{"step":"disable devdax","result":"ok","duration_ms":5}],"refcounts":[],
               "integrity":[{"call":1,"target":"devdax","bytes":4096,"at_end":null,"after_teardown":{"result":"same"}}],"#,
        );
        let b = with(
            r#""teardown":[{"step":"disable devdax","result":"blocked","stack":"[<0>] memunmap_pages+0x1/0x2\n","duration_ms":20000}],
               "refcounts":[{"role":"devdax","pgmap_ref":1,"ref0":0,"ref1":0,"ref2":0,"ref3_plus":0,"negative":0,"note":null,"underflow":false}],
               "integrity":[{"call":1,"target":"devdax","bytes":4096,"at_end":null,"after_teardown":{"result":"differs","first_offset":null}}],"#,
        );
        let texts: Vec<String> = differences(&a, &b).iter().map(|d| d.describe()).collect();
        assert_eq!(
            texts,
            [
                "teardown disable devdax: ok vs blocked in memunmap_pages",
                "refcounts devdax: = vs pgmap_ref +1",
                "call 1 integrity of a devdax mapping: -/same vs -/differs",
            ]
        );
        // A guest without the probe compares nothing about reference counts.
        let mut no_probe = b.clone();
        no_probe.refcounts = None;
        assert!(!differences(&a, &no_probe)
            .iter()
            .any(|d| matches!(d, Difference::Refcounts { .. })));
    }

    #[test]
    fn a_difference_with_a_control_character_keeps_its_own_signature() {
        let with = |result: &str| {
            outcome(&URING_612.replacen(
                "{\"id\":2,",
                &format!(
                    r#"{{"id":2,"teardown":[{{"step":"disable devdax",{result},"duration_ms":5}}],"#
                ),
                1,
            ))
        };
        let a = with(r#""result":"ok""#);
        let b = with(r#""result":"failed","detail":"daxctl: dax2.0 \u001b[1mbusy""#);
        let Verdict::Divergence { signature } = compare(&a, &b) else {
            panic!("expected a divergence")
        };
        assert_eq!(
            signature.as_str(),
            "teardown disable devdax: ok vs failed: daxctl: dax2.0 \\u{1b}[1mbusy"
        );
    }

    #[test]
    fn a_report_on_one_side_is_a_divergence_and_comes_first() {
        let console: Vec<String> =
            vec!["[    5.1] WARNING: CPU: 1 PID: 77 at mm/gup.c:229 try_grab_folio+0x1/0x2".into()];
        let a = outcome(URING_612);
        let b = normalize(
            &serde_json::from_str::<Response>(&URING_612.replace("\"ret\":4", "\"ret\":5"))
                .unwrap(),
            &console,
        );
        let d = differences(&a, &b);
        assert!(
            matches!(&d[0], Difference::Report { on: Side::B, .. }),
            "{d:?}"
        );
        let Verdict::Divergence { signature } = compare(&a, &b) else {
            panic!()
        };
        assert!(
            signature
                .as_str()
                .starts_with("report only on B: WARNING in try_grab_folio"),
            "{signature}"
        );
    }
}
