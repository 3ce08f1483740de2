//! A trial: the reproducer run on one kernel until the judge decides, in real guests (one
//! at a time; a fresh guest after a kernel report, and for a retest).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::git::StepKernel;
use super::search::{Decision, RunVerdict, StepVerdict, Tally};
use super::versions::Candidate;
use crate::catalogue::{KernelEntry, KernelName, KernelSource};
use crate::diff::Outcome;
use crate::fuzz::side::KernelSide;
use crate::setup::{prepare_entry, Env, Prepared};

/// What running the reproducer on one kernel gave.
#[derive(Clone, Debug)]
pub struct Trial {
    pub tally: Tally,
    pub decision: Decision,
    /// Guests booted (0 when the kernel could not be had).
    pub boots: u32,
    pub outcomes: Vec<Outcome>,
    /// `uname -r`, or what the kernel is.
    pub kernel: String,
    pub seconds: f64,
    pub note: Option<String>,
}

impl Trial {
    /// A kernel that could not be tested at all.
    pub fn untestable(kernel: &str, why: String, started: Instant) -> Trial {
        Trial {
            tally: Tally::default(),
            decision: Decision {
                verdict: StepVerdict::Skip,
                confidence: 1.0,
            },
            boots: 0,
            outcomes: Vec::new(),
            kernel: kernel.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            note: Some(why),
        }
    }
}

/// How each run is classified.
pub type Classify<'a> = &'a dyn Fn(&Outcome) -> RunVerdict;
/// Given the runs so far and the guest round (1 = first guest): `None` runs again,
/// `Retest` boots a fresh guest and goes on, anything else ends the trial.
pub type Stop<'a> = &'a mut dyn FnMut(Tally, u32) -> Option<Decision>;

/// Runs the reproducer on kernels of kind `K`.
pub trait Tester<K> {
    fn trial(&mut self, kernel: &K, classify: Classify, stop: Stop) -> Result<Trial>;
}

/// The real thing: each kernel fetched or taken from a build, booted under QEMU, the program
/// run through the guest executor.
pub struct VmTester {
    pub env: Env,
    pub program: String,
    pub timeout: Duration,
    /// Guests get the reference-count probe (the signal reads counts).
    pub probe: bool,
    /// Every run on a freshly booted guest: for behaviour only the first program after
    /// bring-up shows (state the boot leaves, which the first teardown resets).
    pub boot_per_run: bool,
    /// Called with a line of what is happening (progress).
    pub status: Box<dyn Fn(String)>,
}

impl VmTester {
    fn run_prepared(
        &self,
        label: &str,
        prepared: Prepared,
        classify: Classify,
        stop: Stop,
        started: Instant,
    ) -> Result<Trial> {
        let release = prepared.kernel.release.clone();
        let mut side = KernelSide::new(label, prepared, self.timeout);
        let mut tally = Tally::default();
        let mut outcomes = Vec::new();
        let mut round = 1;
        let decision = loop {
            (self.status)(format!("{label}: booting ({tally})"));
            if let Err(e) = side.ensure_booted() {
                side.shutdown();
                let mut t = Trial::untestable(&release, format!("no boot: {e:#}"), started);
                t.boots = side.restarts as u32 + 1;
                return Ok(t);
            }
            (self.status)(format!("{label}: running ({tally})"));
            let run = side.run(&self.program)?;
            tally.add(classify(&run.outcome));
            outcomes.push(run.outcome);
            match stop(tally, round) {
                None if self.boot_per_run => side.shutdown(),
                None => {}
                Some(d) if d.verdict == StepVerdict::Retest => {
                    side.shutdown();
                    round += 1;
                }
                Some(d) => break d,
            }
        };
        side.shutdown();
        let note = (decision.verdict == StepVerdict::Skip)
            .then(|| format!("inconclusive after {round} guest(s): {tally}"));
        Ok(Trial {
            tally,
            decision,
            boots: side.restarts as u32 + 1,
            outcomes,
            kernel: release,
            seconds: started.elapsed().as_secs_f64(),
            note,
        })
    }
}

impl Tester<Candidate> for VmTester {
    fn trial(&mut self, c: &Candidate, classify: Classify, stop: Stop) -> Result<Trial> {
        let started = Instant::now();
        (self.status)(format!("{}: fetching {}", c.version, c.release));
        let entry = KernelEntry {
            name: KernelName(format!("bisect-{}", c.release)),
            source: KernelSource::Debian {
                series: None,
                version: Some(c.version.clone()),
                abi: None,
                scheme: None,
            },
        };
        match prepare_entry(&self.env, &entry, self.probe) {
            Ok(p) => self.run_prepared(&c.version, p, classify, stop, started),
            Err(e) => Ok(Trial::untestable(
                &c.release,
                format!("no kernel: {e:#}"),
                started,
            )),
        }
    }
}

impl Tester<StepKernel> for VmTester {
    fn trial(&mut self, k: &StepKernel, classify: Classify, stop: Stop) -> Result<Trial> {
        let started = Instant::now();
        let short = &k.rev[..k.rev.len().min(12)];
        let entry = KernelEntry {
            name: super::build::step_kernel_name(&k.rev),
            source: KernelSource::Local {
                bzimage: k.bzimage.clone(),
                modules: k.modules.clone(),
                config: k.config.clone(),
                vmlinux: None,
                scheme: None,
            },
        };
        match prepare_entry(&self.env, &entry, self.probe) {
            Ok(p) => self.run_prepared(short, p, classify, stop, started),
            Err(e) => Ok(Trial::untestable(
                short,
                format!("kernel unusable: {e:#}"),
                started,
            )),
        }
    }
}
