//! The search, free of kernels and VMs: a flakiness-aware judge that turns repeated runs of a
//! reproducer into good/bad/skip/retest with a confidence, and bisection over an ordered list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one run of the reproducer said about the kernel it ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    Good,
    Bad,
    /// The run says nothing either way (the reproducer could not get to its point).
    Skip,
}

/// Runs of the reproducer on one kernel, counted by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub good: u32,
    pub bad: u32,
    pub skip: u32,
}

impl Tally {
    pub fn add(&mut self, v: RunVerdict) {
        match v {
            RunVerdict::Good => self.good += 1,
            RunVerdict::Bad => self.bad += 1,
            RunVerdict::Skip => self.skip += 1,
        }
    }

    /// Runs that said something (good or bad).
    pub fn informative(&self) -> u32 {
        self.good + self.bad
    }

    pub fn total(&self) -> u32 {
        self.good + self.bad + self.skip
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bad / {} good", self.bad, self.good)?;
        if self.skip > 0 {
            write!(f, " / {} skip", self.skip)?;
        }
        Ok(())
    }
}

/// What a step decided about its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    Good,
    Bad,
    /// Untestable (no kernel, no boot, or runs that say nothing): the search goes around it.
    Skip,
    /// Runs disagree and the run budget of this boot is spent: test again on a fresh guest.
    Retest,
}

impl std::fmt::Display for StepVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepVerdict::Good => "good",
            StepVerdict::Bad => "bad",
            StepVerdict::Skip => "skip",
            StepVerdict::Retest => "retest",
        })
    }
}

/// Which way the behaviour goes between the ends: a regression appears (the old end is good,
/// the new end bad), a fix makes it stop (the old end is bad, the new end good). Verdicts keep
/// their meaning either way: bad = the run shows the behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Regression,
    Fix,
}

impl Kind {
    /// The verdict of the old end (and of every kernel before the change).
    pub fn old_verdict(self) -> StepVerdict {
        match self {
            Kind::Regression => StepVerdict::Good,
            Kind::Fix => StepVerdict::Bad,
        }
    }

    pub fn new_verdict(self) -> StepVerdict {
        match self {
            Kind::Regression => StepVerdict::Bad,
            Kind::Fix => StepVerdict::Good,
        }
    }

    /// How the result names the first kernel like the new end and the last like the old one.
    pub fn first_new_term(self) -> &'static str {
        match self {
            Kind::Regression => "first bad",
            Kind::Fix => "first fixed",
        }
    }

    pub fn last_old_term(self) -> &'static str {
        match self {
            Kind::Regression => "last good",
            Kind::Fix => "last broken",
        }
    }

    /// A good or bad verdict in the words of this kind: a fix bisection's kernels are
    /// `broken` or `fixed`.
    pub fn verdict_word(self, v: StepVerdict) -> String {
        match (self, v) {
            (Kind::Fix, StepVerdict::Bad) => "broken".into(),
            (Kind::Fix, StepVerdict::Good) => "fixed".into(),
            (_, v) => v.to_string(),
        }
    }

    /// `(good, bad)` ordered as `(old, new)`.
    pub fn old_new<T>(self, good: T, bad: T) -> (T, T) {
        match self {
            Kind::Regression => (good, bad),
            Kind::Fix => (bad, good),
        }
    }

    fn good_end_is_bad_hint(self) -> &'static str {
        match self {
            Kind::Regression => "the regression is already there; pick an older good end",
            Kind::Fix => "the fix is not there yet; pick a newer good (fixed) end",
        }
    }

    fn bad_end_is_good_hint(self) -> &'static str {
        match self {
            Kind::Regression => "pick another bad end",
            Kind::Fix => "pick an older bad end (one that still shows it)",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Regression => "regression",
            Kind::Fix => "fix",
        })
    }
}

/// A verdict with how sure the judge is of it (posterior probability, 0.5 = a coin flip).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: StepVerdict,
    pub confidence: f64,
}

/// How the reproducer behaves on the two known ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// P(a run is bad | the kernel is bad).
    pub reproduces: f64,
    /// P(a run is bad | the kernel is good).
    pub false_alarm: f64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalibrationError {
    #[error("the good end {label} looks bad ({tally}): {}, or check the predicate", .kind.good_end_is_bad_hint())]
    GoodEndIsBad {
        label: String,
        tally: Tally,
        kind: Kind,
    },
    #[error("the bad end {label} never showed the bad behaviour ({tally}): check the predicate, raise --runs, or {}", .kind.bad_end_is_good_hint())]
    BadEndIsGood {
        label: String,
        tally: Tally,
        kind: Kind,
    },
    #[error("the reproducer does not tell the ends apart (good end {good_label}: {good}; bad end {bad_label}: {bad}): \
its result flips from run to run on both, so it cannot be bisected; raise --runs, or make the program deterministic \
(a finding from only a few fuzzing runs may be unstable); if only the first run after a boot shows it, add --boot-per-run")]
    Indistinct {
        good_label: String,
        good: Tally,
        bad_label: String,
        bad: Tally,
    },
}

impl Rates {
    /// Rates estimated from runs on the ends, smoothed (Jeffreys: (k + ½)/(n + 1)) so that a
    /// handful of clean runs never claims certainty. The rates do not depend on which end is
    /// the older one; `kind` only shapes the advice when the ends do not fit.
    pub fn from_ends(
        kind: Kind,
        good_label: &str,
        good: Tally,
        bad_label: &str,
        bad: Tally,
    ) -> Result<Rates, CalibrationError> {
        let rate = |t: Tally| (t.bad as f64 + 0.5) / (t.informative() as f64 + 1.0);
        if bad.bad == 0 {
            return Err(CalibrationError::BadEndIsGood {
                label: bad_label.into(),
                tally: bad,
                kind,
            });
        }
        if good.good == 0 {
            return Err(CalibrationError::GoodEndIsBad {
                label: good_label.into(),
                tally: good,
                kind,
            });
        }
        let r = Rates {
            reproduces: rate(bad),
            false_alarm: rate(good),
        };
        // Too close to tell apart with any sane number of runs: both ends flip.
        if r.reproduces - r.false_alarm < 0.15 {
            return Err(CalibrationError::Indistinct {
                good_label: good_label.into(),
                good,
                bad_label: bad_label.into(),
                bad,
            });
        }
        if good.bad * 2 > good.informative() {
            return Err(CalibrationError::GoodEndIsBad {
                label: good_label.into(),
                tally: good,
                kind,
            });
        }
        Ok(r)
    }
}

/// Decides a step from its runs: a sequential probability ratio test between "this kernel
/// behaves like the bad end" and "like the good end", equal priors.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    pub rates: Rates,
    /// Posterior a verdict needs (e.g. 0.95).
    pub confidence: f64,
    /// Informative runs on one guest before the step is sent to a retest.
    pub max_runs: u32,
}

impl Judge {
    /// P(the kernel is bad | its runs).
    pub fn posterior_bad(&self, t: Tally) -> f64 {
        let Rates {
            reproduces: r,
            false_alarm: f,
        } = self.rates;
        let log_bad = t.bad as f64 * r.ln() + t.good as f64 * (1.0 - r).ln();
        let log_good = t.bad as f64 * f.ln() + t.good as f64 * (1.0 - f).ln();
        1.0 / (1.0 + (log_good - log_bad).exp())
    }

    /// `None`: run again. `run_limit` is the informative runs this step may have in all.
    pub fn decide(&self, t: Tally, run_limit: u32) -> Option<Decision> {
        let p = self.posterior_bad(t);
        if p >= self.confidence {
            return Some(Decision {
                verdict: StepVerdict::Bad,
                confidence: p,
            });
        }
        if 1.0 - p >= self.confidence {
            return Some(Decision {
                verdict: StepVerdict::Good,
                confidence: 1.0 - p,
            });
        }
        if t.skip >= run_limit.max(1) && t.informative() == 0 {
            return Some(Decision {
                verdict: StepVerdict::Skip,
                confidence: 1.0,
            });
        }
        if t.informative() >= run_limit || t.total() >= run_limit * 2 {
            return Some(Decision {
                verdict: StepVerdict::Retest,
                confidence: p.max(1.0 - p),
            });
        }
        None
    }

    /// The fewest informative runs a kernel that always shows one behaviour needs.
    pub fn runs_when_consistent(&self) -> u32 {
        (1..=self.max_runs)
            .find(|&n| {
                let bad = self.posterior_bad(Tally {
                    bad: n,
                    ..Tally::default()
                });
                let good = 1.0
                    - self.posterior_bad(Tally {
                        good: n,
                        ..Tally::default()
                    });
                bad >= self.confidence && good >= self.confidence
            })
            .unwrap_or(self.max_runs)
    }
}

/// What to do next in a list bisection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "next", rename_all = "snake_case")]
pub enum Next {
    /// Test the candidate at this index.
    Test { index: usize },
    /// The first candidate like the new end (the first bad one of a regression, the first
    /// fixed one of a fix).
    Found { first_new: usize },
    /// Skipped candidates hide where it changed: the first new is one of `first..=last`.
    Range { first: usize, last: usize },
}

/// Which end a kernel behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Old,
    New,
    Skip,
}

/// Bisection over candidates `0..len` ordered oldest first, where 0 behaves like the old end
/// and `len - 1` like the new one (good then bad for a regression, bad then good for a fix).
/// Only the candidates strictly between the current bounds are ever proposed, so every
/// verdict narrows the range.
#[derive(Clone, Debug, Default)]
pub struct ListSearch {
    len: usize,
    kind: Kind,
    sides: BTreeMap<usize, Side>,
}

impl ListSearch {
    pub fn new(len: usize, kind: Kind) -> ListSearch {
        assert!(len >= 2, "a bisection needs a good and a bad end");
        ListSearch {
            len,
            kind,
            sides: BTreeMap::new(),
        }
    }

    /// Records a step's final verdict (`Retest` is not final and is ignored).
    pub fn record(&mut self, index: usize, verdict: StepVerdict) {
        let side = match verdict {
            StepVerdict::Retest => return,
            StepVerdict::Skip => Side::Skip,
            v if v == self.kind.old_verdict() => Side::Old,
            _ => Side::New,
        };
        if index > 0 && index + 1 < self.len {
            self.sides.insert(index, side);
        }
    }

    /// The last index known to be like the old end and the first known to be like the new.
    pub fn bounds(&self) -> (usize, usize) {
        let hi = self
            .sides
            .iter()
            .find(|(_, v)| **v == Side::New)
            .map(|(i, _)| *i)
            .unwrap_or(self.len - 1);
        let lo = self
            .sides
            .range(..hi)
            .rev()
            .find(|(_, v)| **v == Side::Old)
            .map(|(i, _)| *i)
            .unwrap_or(0);
        (lo, hi)
    }

    pub fn next(&self) -> Next {
        let (lo, hi) = self.bounds();
        if lo + 1 == hi {
            return Next::Found { first_new: hi };
        }
        let mid = (lo + hi) / 2;
        let candidate = (lo + 1..hi)
            .filter(|i| !self.sides.contains_key(i))
            .min_by_key(|i| (i.abs_diff(mid), *i));
        match candidate {
            Some(index) => Next::Test { index },
            None => Next::Range {
                first: lo + 1,
                last: hi,
            },
        }
    }

    /// Steps still to come if nothing is skipped (for progress).
    pub fn steps_left(&self) -> u32 {
        let (lo, hi) = self.bounds();
        let n = (hi - lo) as u32;
        if n <= 1 {
            0
        } else {
            32 - (n - 1).leading_zeros()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bad: u32, good: u32) -> Tally {
        Tally { good, bad, skip: 0 }
    }

    fn judge(good_end: Tally, bad_end: Tally) -> Judge {
        Judge {
            rates: Rates::from_ends(Kind::Regression, "g", good_end, "b", bad_end).unwrap(),
            confidence: 0.95,
            max_runs: 12,
        }
    }

    #[test]
    fn a_deterministic_reproducer_decides_in_two_runs() {
        let j = judge(t(0, 5), t(5, 0));
        assert_eq!(j.runs_when_consistent(), 2);
        assert_eq!(j.decide(t(1, 0), 12), None);
        let d = j.decide(t(2, 0), 12).unwrap();
        assert_eq!(d.verdict, StepVerdict::Bad);
        assert!(d.confidence > 0.99, "{d:?}");
        assert_eq!(j.decide(t(0, 2), 12).unwrap().verdict, StepVerdict::Good);
    }

    #[test]
    fn a_flaky_reproducer_needs_many_clean_runs_before_good() {
        // Reproduces in 2 of 6 runs on the bad end: one bad run is strong evidence, a clean
        // run is weak evidence.
        let j = judge(t(0, 6), t(2, 4));
        assert_eq!(j.decide(t(0, 2), 30), None);
        assert_eq!(j.decide(t(1, 1), 30).map(|d| d.verdict), None);
        let clean = (1..=30).find(|&n| j.decide(t(0, n), 30).is_some()).unwrap();
        assert!(clean >= 6, "good after only {clean} clean runs");
        assert_eq!(
            j.decide(t(0, clean), 30).unwrap().verdict,
            StepVerdict::Good
        );
        assert_eq!(j.decide(t(2, 0), 30).unwrap().verdict, StepVerdict::Bad);
    }

    #[test]
    fn disagreeing_runs_end_in_retest_and_silent_runs_in_skip() {
        let j = judge(t(0, 5), t(5, 0));
        // Alternating results never reach the confidence: retest once the budget is spent.
        let d = j.decide(t(6, 6), 12).unwrap();
        assert_eq!(d.verdict, StepVerdict::Retest);
        assert!(d.confidence < 0.95);
        let s = j
            .decide(
                Tally {
                    skip: 12,
                    ..Tally::default()
                },
                12,
            )
            .unwrap();
        assert_eq!(s.verdict, StepVerdict::Skip);
    }

    #[test]
    fn calibration_rejects_ends_that_do_not_fit() {
        assert!(matches!(
            Rates::from_ends(Kind::Regression, "6.1", t(0, 5), "7.3", t(0, 5)),
            Err(CalibrationError::BadEndIsGood { .. })
        ));
        assert!(matches!(
            Rates::from_ends(Kind::Regression, "6.1", t(4, 1), "7.3", t(5, 0)),
            Err(CalibrationError::GoodEndIsBad { .. })
        ));
        assert!(matches!(
            Rates::from_ends(Kind::Regression, "6.1", t(2, 4), "7.3", t(3, 3)),
            Err(CalibrationError::Indistinct { .. })
        ));
        // Seen with a fuzzing finding whose checksum depends on a race: 2 of 3 runs
        // "like B" on both ends.
        let e = Rates::from_ends(
            Kind::Regression,
            "6.12.95-1~bpo12+1",
            t(2, 1),
            "7.3.4-1~bpo13+1",
            t(2, 1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("flips") && e.contains("6.12.95-1~bpo12+1: 2 bad / 1 good"),
            "{e}"
        );
        let err = Rates::from_ends(Kind::Regression, "6.1.170-3", t(0, 5), "7.3.4-1", t(0, 5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("7.3.4-1") && err.contains("--runs"), "{err}");
    }

    /// Bisects a list whose first index like the new end is `culprit`, skipping `skipped`.
    fn bisect_kind(
        kind: Kind,
        len: usize,
        culprit: usize,
        skipped: &[usize],
    ) -> (Next, Vec<usize>) {
        let mut s = ListSearch::new(len, kind);
        let mut tested = Vec::new();
        loop {
            match s.next() {
                Next::Test { index } => {
                    tested.push(index);
                    let v = if skipped.contains(&index) {
                        StepVerdict::Skip
                    } else if index >= culprit {
                        kind.new_verdict()
                    } else {
                        kind.old_verdict()
                    };
                    s.record(index, v);
                }
                done => return (done, tested),
            }
        }
    }

    fn bisect(len: usize, culprit: usize, skipped: &[usize]) -> (Next, Vec<usize>) {
        bisect_kind(Kind::Regression, len, culprit, skipped)
    }

    #[test]
    fn finds_every_culprit_in_log2_steps() {
        for len in [2, 3, 5, 18, 100] {
            for culprit in 1..len {
                let (r, tested) = bisect(len, culprit, &[]);
                assert_eq!(r, Next::Found { first_new: culprit }, "len {len}");
                let bound = (len as f64 - 1.0).log2().ceil() as usize;
                assert!(tested.len() <= bound, "len {len}: {tested:?}");
            }
        }
    }

    #[test]
    fn skips_are_gone_around_or_reported_as_a_range() {
        // 12 skipped: its neighbours decide, the culprit 11 is still found.
        let (r, tested) = bisect(18, 11, &[12]);
        assert_eq!(r, Next::Found { first_new: 11 });
        assert!(tested.contains(&12));
        // The culprit itself cannot be tested: it is one of 10 (skipped) and 11.
        let (r, _) = bisect(18, 10, &[10]);
        assert_eq!(
            r,
            Next::Range {
                first: 10,
                last: 11
            }
        );
    }

    #[test]
    fn steps_left_counts_halvings() {
        let mut s = ListSearch::new(18, Kind::Regression);
        assert_eq!(s.steps_left(), 5);
        s.record(8, StepVerdict::Good);
        assert_eq!(s.bounds(), (8, 17));
        assert_eq!(s.steps_left(), 4);
        s.record(12, StepVerdict::Retest);
        assert_eq!(s.bounds(), (8, 17));
    }

    #[test]
    fn a_fix_is_the_first_good_candidate_after_bad_ones() {
        for len in [2, 3, 18, 100] {
            for fixed in 1..len {
                let (r, tested) = bisect_kind(Kind::Fix, len, fixed, &[]);
                assert_eq!(r, Next::Found { first_new: fixed }, "len {len}");
                let bound = (len as f64 - 1.0).log2().ceil() as usize;
                assert!(tested.len() <= bound, "len {len}: {tested:?}");
            }
        }
        // A good verdict moves the upper bound down, a bad one the lower bound up.
        let mut s = ListSearch::new(18, Kind::Fix);
        s.record(8, StepVerdict::Good);
        assert_eq!(s.bounds(), (0, 8));
        s.record(4, StepVerdict::Bad);
        assert_eq!(s.bounds(), (4, 8));
        // Skips hide the fix the same way they hide a regression.
        let (r, _) = bisect_kind(Kind::Fix, 18, 10, &[10]);
        assert_eq!(
            r,
            Next::Range {
                first: 10,
                last: 11
            }
        );
    }

    #[test]
    fn a_flaky_bug_is_called_fixed_only_after_many_clean_runs() {
        // The old end shows the bug in 2 of 6 runs, the fixed new end never: the same judge
        // as for a regression whose bad end reproduces 2 in 6.
        let j = Judge {
            rates: Rates::from_ends(Kind::Fix, "7.3.4-1", t(0, 6), "6.12.95-1", t(2, 4)).unwrap(),
            confidence: 0.95,
            max_runs: 30,
        };
        assert_eq!(j.decide(t(0, 3), 30), None, "fixed after 3 clean runs");
        assert_eq!(j.decide(t(2, 0), 30).unwrap().verdict, StepVerdict::Bad);
        let clean = (1..=30).find(|&n| j.decide(t(0, n), 30).is_some()).unwrap();
        assert!(clean >= 6, "fixed after only {clean} clean runs");
    }

    #[test]
    fn calibration_advice_follows_the_kind() {
        let e = Rates::from_ends(Kind::Fix, "7.3.4-1", t(5, 0), "6.1.170-3", t(5, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("good end 7.3.4-1 looks bad") && e.contains("fix is not there yet"),
            "{e}"
        );
        let e = Rates::from_ends(Kind::Fix, "7.3.4-1", t(0, 5), "6.1.170-3", t(0, 5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pick an older bad end"), "{e}");
        let e = Rates::from_ends(Kind::Regression, "6.1", t(4, 1), "7.3", t(5, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pick an older good end"), "{e}");
    }
}
