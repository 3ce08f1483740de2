//! One bisection's bookkeeping, shared by both modes: the ends run a fixed number of times
//! to measure how the reproducer behaves, then each step is judged and recorded in the state.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::search::{Decision, Judge, Kind, Rates, RunVerdict, StepVerdict, Tally};
use super::signal::Signal;
use super::state::{Role, State, StepRecord};
use super::trial::Tester;
use crate::diff::Outcome;

/// How hard each kernel is tested.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Runs on each end (they measure how reliably the reproducer shows the behaviour).
    pub end_runs: u32,
    /// Posterior a step's verdict needs.
    pub confidence: f64,
    /// Informative runs per guest before a step is retested on a fresh guest.
    pub max_runs: u32,
    /// Guests per step before an undecided step is skipped.
    pub max_boots: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            end_runs: 5,
            confidence: 0.95,
            max_runs: 12,
            max_boots: 2,
        }
    }
}

/// What a git revision's kernel is: put on the record of that revision when it is made, so
/// that progress and state show the subject, image hash and build time.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
    pub label: String,
    pub subject: String,
    pub bzimage_sha256: String,
    pub build_secs: Option<f64>,
}

pub struct Session<'a> {
    pub signal: &'a Signal,
    pub settings: Settings,
    /// Regression (old end good, new end bad) or fix (old end bad, new end good).
    pub kind: Kind,
    pub state: State,
    judge: Option<Judge>,
    /// Applied to the next record with its label.
    pub provenance: Option<Provenance>,
    started: Instant,
    /// Called with each finished record (progress).
    pub on_record: Box<dyn FnMut(&StepRecord) + 'a>,
    /// Held while the session runs: its output directory is its alone (see `state::own_out`).
    pub owner: Option<crate::lock::Lock>,
}

impl<'a> Session<'a> {
    pub fn new(signal: &'a Signal, settings: Settings, state: State) -> Session<'a> {
        Session {
            signal,
            settings,
            kind: Kind::Regression,
            state,
            judge: None,
            provenance: None,
            started: Instant::now(),
            on_record: Box::new(|_| {}),
            owner: None,
        }
    }

    pub fn judge(&self) -> Option<&Judge> {
        self.judge.as_ref()
    }

    /// Runs an end of the range `end_runs` times (or takes it from the state).
    pub fn end<K>(
        &mut self,
        tester: &mut dyn Tester<K>,
        kernel: &K,
        label: &str,
        role: Role,
    ) -> Result<StepRecord> {
        if let Some(r) = self.state.lookup(label) {
            return Ok(r.clone());
        }
        let collect_first = role == Role::GoodEnd && self.signal.needs_reference();
        let signal = self.signal;
        let reference = self.state.reference.clone();
        let classify = |o: &Outcome| {
            if collect_first {
                RunVerdict::Skip
            } else {
                signal.classify(o, reference.as_ref())
            }
        };
        let runs = self.settings.end_runs;
        let mut stop = |t: Tally, _round: u32| {
            (t.total() >= runs).then_some(Decision {
                verdict: StepVerdict::Good,
                confidence: 0.0,
            })
        };
        let trial = tester.trial(kernel, &classify, &mut stop)?;
        if trial.boots == 0 || trial.outcomes.is_empty() {
            bail!(
                "the {} {label} could not be tested: {}",
                if role == Role::GoodEnd {
                    "good end"
                } else {
                    "bad end"
                },
                trial.note.as_deref().unwrap_or("no runs")
            );
        }
        let mut tally = trial.tally;
        if collect_first {
            let reference = most_common(&trial.outcomes);
            tally = Tally::default();
            for o in &trial.outcomes {
                tally.add(self.signal.classify(o, Some(&reference)));
            }
            self.state.reference = Some(reference);
        }
        let rec = StepRecord {
            label: label.to_string(),
            role,
            kernel: trial.kernel,
            tally,
            // What the end is by the user's word; calibration refuses ends that do not fit
            // (a bad end of a flaky reproducer may show the behaviour in a minority of runs).
            verdict: if role == Role::BadEnd {
                StepVerdict::Bad
            } else {
                StepVerdict::Good
            },
            confidence: 0.0,
            boots: trial.boots,
            seconds: trial.seconds,
            note: trial.note,
            bzimage_sha256: None,
            build_secs: None,
        };
        self.record(rec.clone())?;
        Ok(rec)
    }

    /// Measures the reproducer on the two ends; every later step is judged with this.
    pub fn calibrate(&mut self, good: &StepRecord, bad: &StepRecord) -> Result<Judge> {
        let rates = Rates::from_ends(self.kind, &good.label, good.tally, &bad.label, bad.tally)?;
        let judge = Judge {
            rates,
            confidence: self.settings.confidence,
            max_runs: self.settings.max_runs,
        };
        self.judge = Some(judge);
        Ok(judge)
    }

    /// Judges one kernel between the ends (or takes its verdict from the state).
    pub fn step<K>(
        &mut self,
        tester: &mut dyn Tester<K>,
        kernel: &K,
        label: &str,
        role: Role,
    ) -> Result<StepRecord> {
        if let Some(r) = self.state.lookup(label) {
            return Ok(r.clone());
        }
        let judge = self.judge.expect("calibrate before stepping");
        let signal = self.signal;
        let reference = self.state.reference.clone();
        let classify = |o: &Outcome| signal.classify(o, reference.as_ref());
        let (max_runs, max_boots) = (self.settings.max_runs, self.settings.max_boots);
        let mut stop = |t: Tally, round: u32| match judge.decide(t, max_runs * round) {
            Some(d) if d.verdict == StepVerdict::Retest && round >= max_boots => Some(Decision {
                verdict: StepVerdict::Skip,
                confidence: d.confidence,
            }),
            d => d,
        };
        let trial = tester.trial(kernel, &classify, &mut stop)?;
        let rec = StepRecord {
            label: label.to_string(),
            role,
            kernel: trial.kernel,
            tally: trial.tally,
            verdict: trial.decision.verdict,
            confidence: trial.decision.confidence,
            boots: trial.boots,
            seconds: trial.seconds,
            note: trial.note,
            bzimage_sha256: None,
            build_secs: None,
        };
        self.record(rec.clone())?;
        Ok(rec)
    }

    pub fn record(&mut self, mut rec: StepRecord) -> Result<()> {
        if let Some(p) = self.provenance.take_if(|p| p.label == rec.label) {
            rec.kernel = p.subject;
            rec.bzimage_sha256 = Some(p.bzimage_sha256);
            rec.build_secs = p.build_secs;
        }
        (self.on_record)(&rec);
        self.state.elapsed_secs += self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
        self.state.push(rec)
    }

    /// The chance that every good/bad verdict the result rests on is right.
    pub fn confidence(&self) -> f64 {
        let Some(judge) = self.judge else {
            return 0.0;
        };
        self.state
            .steps
            .iter()
            .map(|s| match (s.role, s.verdict) {
                (Role::GoodEnd, _) => 1.0 - judge.posterior_bad(s.tally),
                (Role::BadEnd, _) => judge.posterior_bad(s.tally),
                // Built only to compare images: no verdict of its own.
                (Role::Parent, _) => 1.0,
                (_, StepVerdict::Good | StepVerdict::Bad) => s.confidence,
                _ => 1.0,
            })
            .product()
    }
}

/// The outcome most runs had (ties: the earliest).
pub fn most_common(outcomes: &[Outcome]) -> Outcome {
    let mut best = (0, 0);
    for (i, o) in outcomes.iter().enumerate() {
        let n = outcomes.iter().filter(|x| *x == o).count();
        if n > best.1 {
            best = (i, n);
        }
    }
    outcomes[best.0].clone()
}
