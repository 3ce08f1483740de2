//! What a finding's program must keep showing while it is minimized and reproduced: the
//! divergence's signature (as `diff::judge` computes it), or a crash finding (a kernel
//! report, or a refcount, teardown or data problem the oracle found) on the kernels that
//! showed it.

use std::path::Path;

use anyhow::{Context, Result};

use crate::diff::{differences, judge, CrashTitle, Outcome, Side, Suppressions, Verdict};
use crate::workdir::{Finding, FindingKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A difference between A and B with this position-free signature text.
    Divergence { signature: String },
    /// A crash finding with this title (a kernel report, or an oracle problem: see
    /// [`CrashTitle`]) on the kernels marked, and on no other.
    Report {
        title: String,
        on_a: bool,
        on_b: bool,
    },
}

impl Signal {
    /// The signal of a finding directory (`finding.json`, and for a crash the outcomes that
    /// say which kernel printed the report).
    pub fn of_finding(dir: &Path, finding: &Finding) -> Result<Signal> {
        Ok(match finding.kind {
            FindingKind::Divergence => Signal::Divergence {
                signature: finding.signature.clone(),
            },
            FindingKind::Crash => {
                let has = |side: &str| -> Result<bool> {
                    let p = dir.join(format!("outcome-{side}.json"));
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("read {}", p.display()))?;
                    let o: Option<Outcome> = serde_json::from_str(&text)
                        .with_context(|| format!("{} is damaged", p.display()))?;
                    Ok(o.is_some_and(|o| o.shows_crash(&finding.signature)))
                };
                let (on_a, on_b) = (has("a")?, has("b")?);
                if !on_a && !on_b {
                    anyhow::bail!(
                        "{}: neither kernel's recorded outcome shows `{}`, so there is nothing \
                         to reproduce (outcome-a.json and outcome-b.json are from another \
                         daxdiff, or were edited)",
                        dir.display(),
                        finding.signature
                    );
                }
                Signal::Report {
                    title: finding.signature.clone(),
                    on_a,
                    on_b,
                }
            }
            FindingKind::Unstable => anyhow::bail!(
                "{} is an unstable finding (a kernel disagrees with itself): there is no stable signal to reproduce",
                dir.display()
            ),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Signal::Divergence { signature } => signature.clone(),
            Signal::Report { title, on_a, on_b } => format!(
                "{title} ({})",
                match (on_a, on_b) {
                    (true, true) => "on both kernels",
                    (true, false) => "only on A",
                    _ => "only on B",
                }
            ),
        }
    }

    /// Whether runs of one program on A and B show the signal: for a divergence, the
    /// stability rule and suppressions of `judge` (each kernel agrees with itself, the
    /// signature is among the kept differences); for a report, every run shows its half.
    pub fn holds(
        &self,
        a: &[Outcome],
        b: &[Outcome],
        kernels: (&str, &str),
        supp: &Suppressions,
    ) -> bool {
        if a.is_empty() || b.is_empty() {
            return false;
        }
        match self {
            Signal::Divergence { signature } => {
                let (v, kept) = judge(a, b, kernels, supp);
                matches!(v, Verdict::Divergence { .. })
                    && kept.iter().any(|d| d.signature_text() == *signature)
            }
            Signal::Report { .. } => {
                a.iter().all(|o| self.report_half(Side::A, o))
                    && b.iter().all(|o| self.report_half(Side::B, o))
            }
        }
    }

    /// Whether one run on `side` shows that kernel's half of the signal. For a divergence
    /// the run is put against the other kernel's reference run of the same program: the
    /// signature must still come out of `differences`.
    pub fn shows(&self, side: Side, run: &Outcome, other_reference: &Outcome) -> bool {
        match self {
            Signal::Divergence { signature } => {
                let diffs = match side {
                    Side::A => differences(run, other_reference),
                    Side::B => differences(other_reference, run),
                };
                diffs.iter().any(|d| d.signature_text() == *signature)
            }
            Signal::Report { .. } => self.report_half(side, run),
        }
    }

    fn report_half(&self, side: Side, o: &Outcome) -> bool {
        let Signal::Report { title, on_a, on_b } = self else {
            return false;
        };
        let expected = if side == Side::A { *on_a } else { *on_b };
        o.shows_crash(title) == expected
    }

    /// Whether this run shows the decisive side's half of the signal (see
    /// [`Signal::decisive_side`]).
    pub fn decisive_half(&self, o: &Outcome) -> bool {
        match self.decisive_side() {
            Some((_, title)) => o.shows_crash(title),
            None => true,
        }
    }

    /// Only daxdiff's own checks show it (the refcount probe, the teardown steps, the data
    /// check): a C reproducer run on its own cannot, and is not judged by it.
    pub fn needs_daxdiff_checks(&self) -> bool {
        match self {
            Signal::Report { title, .. } => CrashTitle::of(title).needs_daxdiff_checks(),
            Signal::Divergence { .. } => false,
        }
    }

    /// For a report seen on one kernel only: that kernel and the report's title, so a
    /// candidate can be rejected after running only there.
    pub fn decisive_side(&self) -> Option<(Side, &str)> {
        match self {
            Signal::Report {
                title,
                on_a: true,
                on_b: false,
            } => Some((Side::A, title)),
            Signal::Report {
                title,
                on_a: false,
                on_b: true,
            } => Some((Side::B, title)),
            Signal::Divergence { signature } => {
                if let Some(t) = signature.strip_prefix("report only on A: ") {
                    Some((Side::A, t))
                } else {
                    signature
                        .strip_prefix("report only on B: ")
                        .map(|t| (Side::B, t))
                }
            }
            Signal::Report { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::normalize;
    use daxdiff_prog::wire::Response;

    const RUN: &str = r#"{"id":1,"status":"completed","stack":null,"detail":null,"calls":[
        {"index":0,"name":"openat$ext4","thread":0,"ret":3,"errno":null,"errno_name":null,"duration_us":9,"checksum":null},
        {"index":1,"name":"daxdiff_evict","thread":0,"ret":0,"errno":null,"errno_name":null,"duration_us":9,"checksum":null}]}"#;
    const WARN: &str =
        "[   74.3] WARNING: CPU: 0 PID: 252 at fs/dax.c:390 dax_disassociate_entry+0x86/0xb0";

    fn run(console: &[&str]) -> Outcome {
        let lines: Vec<String> = console.iter().map(|s| s.to_string()).collect();
        normalize(&serde_json::from_str::<Response>(RUN).unwrap(), &lines)
    }

    #[test]
    fn a_report_divergence_holds_only_while_a_warns_and_b_does_not() {
        let sig = Signal::Divergence {
            signature: "report only on A: WARNING in dax_disassociate_entry".into(),
        };
        let (warned, quiet) = (run(&[WARN]), run(&[]));
        let k = ("debian-6.12", "debian-7.3");
        let s = Suppressions::default();
        assert!(sig.holds(
            std::slice::from_ref(&warned),
            std::slice::from_ref(&quiet),
            k,
            &s
        ));
        assert!(!sig.holds(
            std::slice::from_ref(&quiet),
            std::slice::from_ref(&quiet),
            k,
            &s
        ));
        // A kernel that disagrees with itself is unstable, not a divergence.
        assert!(!sig.holds(
            &[warned.clone(), quiet.clone()],
            &[quiet.clone(), quiet.clone()],
            k,
            &s
        ));
        assert!(sig.shows(Side::A, &warned, &quiet));
        assert!(!sig.shows(Side::A, &quiet, &quiet));
        assert!(sig.shows(Side::B, &quiet, &warned));
        assert!(!sig.shows(Side::B, &warned, &warned));
        assert_eq!(
            sig.decisive_side(),
            Some((Side::A, "WARNING in dax_disassociate_entry"))
        );
    }

    /// A run whose teardown left the devdax instance's counts moved by `pgmap_ref`.
    fn counted(pgmap_ref: i64) -> Outcome {
        let json = format!(
            r#"{{"id":1,"status":"completed","stack":null,"detail":null,"calls":[],"refcounts":[
            {{"role":"devdax","pgmap_ref":{pgmap_ref},"ref0":1,"ref1":-1,"ref2":0,"ref3_plus":0,
              "negative":0,"note":null,"underflow":false}}]}}"#
        );
        normalize(&serde_json::from_str::<Response>(&json).unwrap(), &[])
    }

    #[test]
    fn a_refcount_finding_is_looked_for_in_the_counts_not_in_the_kernel_log() {
        let dir = tempfile::tempdir().unwrap();
        let title = "refcount underflow on devdax: pgmap_ref -512, ref0 +1, ref1 -1";
        let finding: Finding = serde_json::from_str(&format!(
            r#"{{"kind":"crash","signature":"{title}","kernel_a":"6.1-kasan",
            "kernel_b":"6.1-kasan+dax-gup-v2","differences":[],"runs":1,"found_at_exec":3}}"#
        ))
        .unwrap();
        let quiet = run(&[]);
        let write = |side: &str, o: &Outcome| {
            std::fs::write(
                dir.path().join(format!("outcome-{side}.json")),
                serde_json::to_string(&Some(o)).unwrap(),
            )
            .unwrap()
        };
        write("a", &quiet);
        write("b", &counted(-512));
        let sig = Signal::of_finding(dir.path(), &finding).unwrap();
        assert_eq!(
            sig,
            Signal::Report {
                title: title.into(),
                on_a: false,
                on_b: true
            }
        );
        assert!(sig.needs_daxdiff_checks());
        let k = ("a", "b");
        let s = Suppressions::default();
        let holds =
            |b: &Outcome| sig.holds(std::slice::from_ref(&quiet), std::slice::from_ref(b), k, &s);
        assert!(holds(&counted(-1024)), "the same kind, other counts");
        assert!(!holds(&quiet), "counts that did not move");
        assert!(!holds(&counted(512)), "a leak is not an underflow");
        assert!(sig.decisive_half(&counted(-512)));
        assert!(!sig.decisive_half(&quiet));

        write("b", &quiet);
        let err = Signal::of_finding(dir.path(), &finding).unwrap_err();
        assert!(err.to_string().contains("nothing to reproduce"), "{err}");
    }

    #[test]
    fn a_crash_signal_wants_the_report_where_it_was_seen() {
        let sig = Signal::Report {
            title: "WARNING in dax_disassociate_entry".into(),
            on_a: true,
            on_b: false,
        };
        let (warned, quiet) = (run(&[WARN]), run(&[]));
        let k = ("a", "b");
        let s = Suppressions::default();
        assert!(sig.holds(
            std::slice::from_ref(&warned),
            std::slice::from_ref(&quiet),
            k,
            &s
        ));
        assert!(!sig.holds(
            std::slice::from_ref(&warned),
            std::slice::from_ref(&warned),
            k,
            &s
        ));
        assert!(sig.shows(Side::A, &warned, &quiet));
        assert!(!sig.shows(Side::B, &warned, &quiet));
        assert_eq!(
            sig.describe(),
            "WARNING in dax_disassociate_entry (only on A)"
        );
        assert!(
            !sig.needs_daxdiff_checks(),
            "a kernel report shows in any run"
        );
    }
}
