//! What a finding's program must keep showing while it is minimized and reproduced: the
//! divergence's signature (as `diff::judge` computes it), or a kernel report on the kernels
//! that printed it.

use std::path::Path;

use anyhow::{Context, Result};

use crate::diff::{differences, judge, Outcome, Side, Suppressions, Verdict};
use crate::workdir::{Finding, FindingKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A difference between A and B with this position-free signature text.
    Divergence { signature: String },
    /// A kernel report with this title on the kernels marked, and on no other.
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
                    Ok(o.is_some_and(|o| o.reports.iter().any(|r| r.title == finding.signature)))
                };
                Signal::Report {
                    title: finding.signature.clone(),
                    on_a: has("a")?,
                    on_b: has("b")?,
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
        o.reports.iter().any(|r| &r.title == title) == expected
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
    }
}
