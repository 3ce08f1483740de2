//! A finding's triage state (`triage.json` in its directory): how far it got (found →
//! minimized → reproduced → reported) and what each step measured. Written atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;

pub const STATE_FILE: &str = "triage.json";
const LOCK_FILE: &str = ".triage.lock";

/// How far triage got, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Recorded by the fuzzer; nothing done yet.
    #[default]
    Found,
    /// `prog.min.txt` holds the smallest program that still shows the signal.
    Minimized,
    /// The C reproducer showed the signal on fresh guests of both kernels.
    Reproduced,
    /// `report.txt` is written.
    Reported,
}

/// k of n runs that showed what was expected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub k: usize,
    pub n: usize,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// Reliability of the minimized program: per kernel, its half of the signal (the report
/// where expected, its own result where the kernels differ); per pair, the whole signal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reliability {
    pub a: Rate,
    pub b: Rate,
    pub pair: Rate,
    /// Run pairs that must show the whole signal for the program to count as a reproducer
    /// (syzkaller's rule is 3 of at most 10); all of them when fewer were run. 0: not judged
    /// (a triage.json from before the threshold existed).
    #[serde(default)]
    pub threshold: usize,
    /// Every run was on a freshly booted guest (`repro --boot-per-run`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_boots: bool,
}

impl Reliability {
    /// The whole signal showed in enough run pairs to present the program as a reproducer.
    pub fn reliable(&self) -> bool {
        self.pair.k >= self.threshold.min(self.pair.n)
    }
}

/// What the C reproducer did on a fresh guest of one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CRun {
    /// It showed this kernel's half of the signal.
    pub shows_signal: bool,
    /// `completed`, `timeout` (still running at the deadline) or `crashed` (the guest died).
    pub status: String,
    /// Kernel report titles printed while it ran.
    pub reports: Vec<String>,
    /// Its call result lines.
    pub output: String,
    /// The first call that printed no result (it did not return, or did not run).
    #[serde(default)]
    pub unfinished: Option<String>,
}

/// A bisection recorded for the finding (`bisect.json` beside it holds all of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BisectNote {
    /// Where the finding starts (`regression`) or stops (`fix`).
    pub kind: crate::bisect::search::Kind,
    /// The first bad (or first fixed) version or commit; `None` when skipped kernels hide it.
    pub first_new: Option<String>,
    pub confidence: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    pub stage: Stage,
    /// The signal every step checks for (the finding's signature).
    pub signal: String,
    pub calls_before: Option<usize>,
    pub calls_after: Option<usize>,
    /// Candidate programs run while minimizing.
    pub candidates: Option<usize>,
    /// Arguments the minimization simplified, each `#call name param: from -> to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args_simplified: Vec<String>,
    /// The minimization budget ran out before every candidate was tried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minimize_budget_spent: bool,
    pub reliability: Option<Reliability>,
    /// A against B for the minimized program (each kernel's most frequent outcome).
    #[serde(default)]
    pub differences: Vec<String>,
    pub c_a: Option<CRun>,
    pub c_b: Option<CRun>,
    /// The recorded program did not show the signal again when triage reran it (what was
    /// run), so nothing was minimized or measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_shown_again: Option<String>,
    /// Why the C reproducer was built but not judged: the signal is one only daxdiff's
    /// checks after the program see (refcount probe, teardown, data check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_not_judged: Option<String>,
    /// Bisected (any time after it was found: bisection does not need the other stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bisection: Option<BisectNote>,
}

impl Triage {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The state in `dir`, or a fresh one when triage has not started there.
    pub fn load(dir: &Path) -> anyhow::Result<Triage> {
        let p = Triage::path(dir);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); delete it to start triage again",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Triage::default()),
            Err(e) => Err(anyhow::anyhow!("read {}: {e}", p.display())),
        }
    }

    /// The finding's lock: whoever reads, changes and writes its state holds it, so that
    /// `repro` and `bisect` working on one finding never write over each other's result.
    fn lock(dir: &Path) -> anyhow::Result<crate::lock::Lock> {
        crate::lock::Lock::take(&dir.join(LOCK_FILE), "finding", |_| {})
    }

    /// Writes the state. A bisection is `daxdiff bisect`'s to record, and one may finish while
    /// `daxdiff repro` works on the same finding from a state it loaded earlier: a bisection
    /// already on disk is kept when this state has none.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let _lock = Triage::lock(dir)?;
        self.save_locked(dir)
    }

    /// Loads the state, lets `change` change it and writes it back, all under the finding's
    /// lock.
    pub fn update(dir: &Path, change: impl FnOnce(&mut Triage)) -> anyhow::Result<Triage> {
        let _lock = Triage::lock(dir)?;
        let mut t = Triage::load(dir)?;
        change(&mut t);
        t.save_locked(dir)?;
        Ok(t)
    }

    fn save_locked(&self, dir: &Path) -> anyhow::Result<()> {
        let mut t = self.clone();
        if t.bisection.is_none() {
            t.bisection = Triage::load(dir).ok().and_then(|on_disk| on_disk.bisection);
        }
        write_atomic(
            &Triage::path(dir),
            serde_json::to_string_pretty(&t)?.as_bytes(),
        )
    }

    /// Moves forward to `stage` (never back: a rerun of an earlier step keeps what later
    /// steps found until they run again).
    pub fn reach(&mut self, stage: Stage) {
        self.stage = self.stage.max(stage);
    }

    /// The finding reproduced: its C reproducer showed the signal on both kernels, or, for a
    /// signal a C program cannot show on its own, the minimized program showed it reliably.
    pub fn reproduced(&self) -> bool {
        let c = |r: &Option<CRun>| r.as_ref().is_some_and(|c| c.shows_signal);
        (c(&self.c_a) && c(&self.c_b))
            || (self.c_not_judged.is_some()
                && self.reliability.as_ref().is_some_and(Reliability::reliable))
    }
}

#[cfg(test)]
mod tests {
    use super::{BisectNote, Rate, Reliability, Stage, Triage};
    use crate::bisect::search::Kind;

    #[test]
    fn a_bisection_recorded_while_repro_ran_survives_repro_saving_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut repro = Triage::default();
        repro.save(dir.path()).unwrap();
        // bisect finishes meanwhile and records its result
        let mut bisect = Triage::load(dir.path()).unwrap();
        bisect.bisection = Some(BisectNote {
            kind: Kind::Regression,
            first_new: Some("f4532d52d".into()),
            confidence: 0.99,
        });
        bisect.save(dir.path()).unwrap();
        // repro goes on from the state it loaded before
        repro.reach(Stage::Minimized);
        repro.save(dir.path()).unwrap();
        let back = Triage::load(dir.path()).unwrap();
        assert_eq!(back.stage, Stage::Minimized);
        assert_eq!(
            back.bisection.and_then(|b| b.first_new).as_deref(),
            Some("f4532d52d")
        );
    }

    #[test]
    fn a_finding_only_daxdiffs_checks_see_reproduces_by_its_reliability() {
        let reliable = |k| Reliability {
            pair: Rate { k, n: 5 },
            threshold: 3,
            ..Reliability::default()
        };
        let t = |k, judged: bool| Triage {
            reliability: Some(reliable(k)),
            c_not_judged: (!judged).then(|| "only the reference-count probe".into()),
            ..Triage::default()
        };
        assert!(t(5, false).reproduced());
        assert!(!t(2, false).reproduced(), "2 of 5 is below the threshold");
        assert!(
            !t(5, true).reproduced(),
            "a signal the C program can show needs the C runs"
        );
        let shown = super::CRun {
            shows_signal: true,
            ..super::CRun::default()
        };
        let c = Triage {
            c_a: Some(shown.clone()),
            c_b: Some(shown),
            ..t(5, true)
        };
        assert!(c.reproduced());
    }

    #[test]
    fn a_reproducer_needs_the_threshold_of_run_pairs_or_all_of_fewer() {
        let r = |k, n| Reliability {
            pair: Rate { k, n },
            threshold: 3,
            ..Reliability::default()
        };
        assert!(r(3, 10).reliable());
        assert!(!r(2, 10).reliable(), "2 of 10 is below syzkaller's 3");
        assert!(r(2, 2).reliable(), "all of fewer runs than the threshold");
        assert!(!r(1, 2).reliable());
    }

    use super::*;

    #[test]
    fn state_round_trips_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Triage::load(dir.path()).unwrap().stage, Stage::Found);
        let mut t = Triage {
            signal: "report only on A: WARNING in x".into(),
            calls_before: Some(13),
            calls_after: Some(6),
            ..Triage::default()
        };
        t.reach(Stage::Reproduced);
        t.reach(Stage::Minimized);
        assert_eq!(t.stage, Stage::Reproduced);
        t.save(dir.path()).unwrap();
        let back = Triage::load(dir.path()).unwrap();
        assert_eq!(back, t);
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"stage\": \"reproduced\""), "{text}");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = Triage::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }

    #[test]
    fn a_bisection_recorded_while_repro_saves_again_and_again_is_never_lost() {
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            Triage::default().save(dir.path()).unwrap();
            let d = dir.path().to_path_buf();
            let repro = std::thread::spawn(move || {
                let t = Triage::default();
                for _ in 0..20 {
                    t.save(&d).unwrap();
                }
            });
            Triage::update(dir.path(), |t| {
                t.bisection = Some(BisectNote {
                    kind: Kind::Regression,
                    first_new: Some("f4532d52d".into()),
                    confidence: 0.99,
                })
            })
            .unwrap();
            repro.join().unwrap();
            let back = Triage::load(dir.path()).unwrap();
            assert!(back.bisection.is_some(), "the bisection was written over");
        }
    }
}
