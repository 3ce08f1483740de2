//! `daxdiff fuzz`: the same programs on two kernels, LibAFL choosing and mutating them,
//! stable divergences and kernel reports kept in a workdir that survives restarts.

mod campaign;
pub mod cli;
mod engine;
pub mod schedule;
pub mod side;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libafl::corpus::{Corpus, InMemoryCorpus};
use libafl::events::SimpleEventManager;
use libafl::executors::DiffExecutor;
use libafl::feedback_or;
use libafl::feedbacks::MaxMapFeedback;
use libafl::fuzzer::{Evaluator, Fuzzer, StdFuzzer};
use libafl::monitors::NopMonitor;
use libafl::stages::StdMutationalStage;
use libafl::state::{HasCorpus, StdState};
use libafl_bolts::rands::StdRand;
use libafl_bolts::tuples::{tuple_list, Handled};

pub use campaign::{Budget, Campaign};
pub use engine::{
    coverage_observer, features, CoverageObserver, FindingObjective, NewOutcomeFeedback,
    OutcomeObserver, ProgInput, ProgMutator, VmExecutor,
};
pub use side::{tears_down, KernelSide, Run};

use crate::diff::Suppressions;
use crate::setup::{prepare, Env, Prepared};
use crate::workdir::{Stats, Summary, Workdir};

/// Everything `daxdiff fuzz` takes.
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    pub kernel_a: String,
    pub kernel_b: String,
    pub workdir: PathBuf,
    pub budget: Budget,
    pub seed: u64,
    /// VM pairs fuzzing in parallel.
    pub jobs: usize,
    /// Runs per kernel before a divergence counts.
    pub runs: usize,
    pub suppressions: Suppressions,
    /// Seed programs (`*.prog`), run first.
    pub seeds: Option<PathBuf>,
    /// Per-program timeout in the guest.
    pub timeout: Duration,
    /// Teardown liveness (unmount/mount, device disable/enable) after one program in N;
    /// 0 turns it off.
    pub teardown_every: u64,
    /// Replace guests from a snapshot of the first one instead of booting them.
    pub snapshots: bool,
    /// Draw the status line (off in tests).
    pub progress: bool,
}

/// Runs a campaign to its budget and returns the workdir's summary.
pub fn fuzz(env: &Env, cfg: &FuzzConfig) -> Result<Summary> {
    if cfg.runs == 0 || cfg.jobs == 0 {
        bail!("--runs and --jobs must be at least 1");
    }
    let workdir = Workdir::open(&cfg.workdir)?;
    // Held for the whole campaign, before the counters are read.
    let _owner = workdir.own()?;
    let mut stats = match workdir.stats()? {
        Some(s)
            if (s.kernel_a.as_str(), s.kernel_b.as_str())
                != (cfg.kernel_a.as_str(), cfg.kernel_b.as_str()) =>
        {
            bail!(
                "{} holds a campaign of {} vs {}, not {} vs {}: choose another --workdir",
                cfg.workdir.display(),
                s.kernel_a,
                s.kernel_b,
                cfg.kernel_a,
                cfg.kernel_b
            )
        }
        Some(s) => s,
        None => Stats {
            kernel_a: cfg.kernel_a.clone(),
            kernel_b: cfg.kernel_b.clone(),
            ..Stats::default()
        },
    };
    stats.sessions += 1;
    stats.teardown_every = cfg.teardown_every;
    let mut seeds = Vec::new();
    if let Some(dir) = &cfg.seeds {
        seeds.extend(
            crate::exec::load_corpus(dir)?
                .into_iter()
                .map(|(_, p)| p.to_text()),
        );
    }
    // Resuming: the corpus found so far is replayed so its features count again.
    seeds.extend(workdir.corpus()?);
    let prepared_a = prepare(env, &cfg.kernel_a)
        .with_context(|| format!("prepare kernel A ({})", cfg.kernel_a))?;
    let prepared_b = prepare(env, &cfg.kernel_b)
        .with_context(|| format!("prepare kernel B ({})", cfg.kernel_b))?;
    for (side, name, kernel, recorded) in [
        (
            "A",
            &cfg.kernel_a,
            &prepared_a.kernel,
            &mut stats.resolved_a,
        ),
        (
            "B",
            &cfg.kernel_b,
            &prepared_b.kernel,
            &mut stats.resolved_b,
        ),
    ] {
        let now = crate::workdir::ResolvedKernel::of(kernel);
        if let Some(before) = recorded.as_ref().filter(|r| **r != now) {
            eprintln!(
                "fuzz: kernel {side} ({name}) is {} ({}) now; this workdir's earlier sessions ran {} ({})",
                now.version, now.release, before.version, before.release
            );
        }
        *recorded = Some(now);
    }
    let bar = if cfg.progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.enable_steady_tick(Duration::from_millis(500));
    bar.set_message(format!(
        "booting {} and {} ({} pair(s))",
        cfg.kernel_a, cfg.kernel_b, cfg.jobs
    ));
    let campaign = Arc::new(Mutex::new(Campaign::new(
        workdir.clone(),
        stats,
        cfg.suppressions.clone(),
        cfg.runs,
        cfg.budget,
        bar.clone(),
    )));
    campaign.lock().unwrap().save()?;
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.jobs)
            .map(|job| {
                let campaign = campaign.clone();
                let seeds = seeds.clone();
                // Every job boots the kernels resolved above: resolving again would ask apt
                // again, and could land on another version if the mirror moved meanwhile.
                let kernels = (prepared_a.clone(), prepared_b.clone());
                s.spawn(move || run_job(cfg, job, kernels, seeds, campaign))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a fuzzing job panicked")))
            })
            .collect()
    });
    let mut c = campaign.lock().unwrap();
    c.save()?;
    bar.finish_and_clear();
    for r in results {
        r?;
    }
    workdir.summary()
}

/// One VM pair: its own LibAFL state, corpus and scheduler; findings and counters shared.
fn run_job(
    cfg: &FuzzConfig,
    job: usize,
    (prepared_a, prepared_b): (Prepared, Prepared),
    seeds: Vec<String>,
    campaign: Arc<Mutex<Campaign>>,
) -> Result<()> {
    let side_a = Arc::new(Mutex::new(
        KernelSide::new(&cfg.kernel_a, prepared_a, cfg.timeout)
            .with_teardown_every(cfg.teardown_every)
            .with_snapshots(cfg.snapshots),
    ));
    let side_b = Arc::new(Mutex::new(
        KernelSide::new(&cfg.kernel_b, prepared_b, cfg.timeout)
            .with_teardown_every(cfg.teardown_every)
            .with_snapshots(cfg.snapshots),
    ));
    // Boot both before the clock matters (the first boot is the slow part of a short run),
    // at the same time.
    let b_thread = Arc::new(engine::SideThread::new(side_b.clone()));
    let bb = b_thread.start(|side| side.ensure_booted());
    let ba = side_a.lock().unwrap().ensure_booted();
    let bb = bb
        .recv()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("kernel B's thread ended while booting")));
    ba?;
    bb?;
    let obs_a = OutcomeObserver::new("outcome-a");
    let obs_b = OutcomeObserver::new("outcome-b");
    let (ha, hb) = (obs_a.handle(), obs_b.handle());
    let (cov_a, cov_b) = (coverage_observer("kcov-a"), coverage_observer("kcov-b"));
    // Kernels without KCOV leave their map empty: the map feedback then never fires.
    let mut feedback = feedback_or!(
        NewOutcomeFeedback {
            a: ha.clone(),
            b: hb.clone(),
            campaign: campaign.clone(),
        },
        MaxMapFeedback::new(&cov_a),
        MaxMapFeedback::new(&cov_b)
    );
    let mut exec_a = VmExecutor::new(
        side_a.clone(),
        obs_a,
        cov_a,
        campaign.clone(),
        engine::Role::A,
    );
    let exec_b = VmExecutor::new(
        side_b.clone(),
        obs_b,
        cov_b,
        campaign.clone(),
        engine::Role::B,
    );
    let exec_b = exec_a.pair_with(exec_b, b_thread.clone());
    let mut executor = DiffExecutor::new(exec_a, exec_b, ());
    let mut objective = FindingObjective {
        a: ha,
        b: hb,
        side_a: side_a.clone(),
        side_b: b_thread.clone(),
        campaign: campaign.clone(),
    };
    let seed = cfg.seed.wrapping_add(job as u64);
    let mut state = StdState::new(
        StdRand::with_seed(seed),
        InMemoryCorpus::<ProgInput>::new(),
        InMemoryCorpus::new(),
        &mut feedback,
        &mut objective,
    )?;
    let mut mgr = SimpleEventManager::new(NopMonitor::new());
    let mut fuzzer = StdFuzzer::new(schedule::ClassScheduler::new(), feedback, objective);
    let mutator = ProgMutator {
        rng: daxdiff_prog::rng::Rng::new(seed),
        campaign: campaign.clone(),
    };
    let mut stages = tuple_list!(StdMutationalStage::with_max_iterations(
        mutator,
        NonZeroUsize::new(8).expect("8 > 0")
    ));
    let stop = || campaign.lock().unwrap().should_stop();
    for text in seeds {
        if stop() {
            break;
        }
        fuzzer.add_input(&mut state, &mut executor, &mut mgr, ProgInput(text))?;
    }
    let mut rng = daxdiff_prog::rng::Rng::new(seed ^ 0x5eed);
    while !stop() {
        if state.corpus().count() == 0 {
            let p = daxdiff_prog::generate::generate(daxdiff_prog::Target::builtin(), &mut rng);
            fuzzer.add_input(&mut state, &mut executor, &mut mgr, ProgInput(p.to_text()))?;
            continue;
        }
        fuzzer.fuzz_one(&mut stages, &mut executor, &mut state, &mut mgr)?;
    }
    side_a.lock().unwrap().shutdown();
    let _ = b_thread.start(|side| side.shutdown()).recv();
    Ok(())
}
