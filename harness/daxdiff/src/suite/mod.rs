//! ndctl's own DAX tests (`meson test --suite dax`) as a differential check: built from
//! Debian's ndctl source, run one fresh guest per test on kernel A and kernel B, compared.

pub mod cli;
pub mod guest;
pub mod ndctl;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod source;
pub mod spec;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use ndctl::NdctlBuild;
pub use outcome::Outcome;
pub use report::{KernelRun, SuiteReport};
pub use runner::{Progress, Runner, TestResult};
pub use spec::{TestSpec, DAX_SUITE};

use crate::setup::Env;

/// Per-test deadline. meson gives each test 600 s; emulation is slower.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// What to run and where the report goes.
pub struct SuiteConfig {
    /// Kernel A, then optionally kernel B.
    pub kernels: Vec<String>,
    pub tests: Vec<&'static TestSpec>,
    pub out: PathBuf,
    pub timeout: Duration,
    /// Extra runs of a failing test.
    pub reruns: usize,
    /// Kernels run at the same time (each in its own guest, one test after another).
    pub jobs: usize,
}

/// Builds ndctl's tests (cached), prepares each kernel's suite image, runs the tests and
/// writes the report into `cfg.out` after every test (a killed run leaves what it had).
///
/// A report already in `cfg.out` from the same ndctl build is resumed: a test that has a
/// result there for the same kernel image (by the bzImage's SHA-256) and suite image is not
/// run again. A report whose results cannot all be kept is first copied to
/// `report.previous.json`.
pub fn run(
    env: &Env,
    cfg: &SuiteConfig,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SuiteReport> {
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("create the report directory {}", cfg.out.display()))?;
    let ndctl = NdctlBuild::get(&env.cache)?;
    let previous = SuiteReport::load(&cfg.out)?;
    let mut guests = vec![];
    let mut report = SuiteReport {
        ndctl_version: ndctl.version.clone(),
        kernels: vec![],
    };
    for name in &cfg.kernels {
        let guest = guest::SuiteGuest::prepare(env, name, &ndctl)
            .with_context(|| format!("prepare kernel {name} for the suite"))?;
        let sha = crate::cache::sha256_file(&guest.kernel.bzimage)?;
        let image = guest
            .image
            .initramfs
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let kept = previous
            .as_ref()
            .and_then(|p| p.resumable(&ndctl.version, name, &sha, &image));
        report.kernels.push(KernelRun {
            kernel: name.clone(),
            release: guest.kernel.release.clone(),
            package_version: guest.kernel.version.clone(),
            accel: guest.accel.to_string(),
            bzimage_sha256: sha,
            image,
            wall: kept.map(|k| k.wall).unwrap_or_default(),
            results: vec![],
        });
        guests.push((guest, kept.cloned()));
    }
    // A result of a test this run asks for.
    let asked = |r: &TestResult| cfg.tests.iter().any(|t| t.name == r.test.0);
    if let Some(p) = &previous {
        // Results of another kernel image, another ndctl or a test not asked for now are
        // not carried over: keep the old report beside the new one.
        let carried = |k: &KernelRun| {
            guests
                .iter()
                .any(|(_, kept)| kept.as_ref().is_some_and(|c| c.kernel == k.kernel))
                && k.results.iter().all(asked)
        };
        if !p.kernels.iter().all(carried) {
            let from = cfg.out.join(report::JSON_FILE);
            let to = cfg.out.join(report::PREVIOUS_JSON_FILE);
            std::fs::copy(&from, &to)
                .with_context(|| format!("keep {} as {}", from.display(), to.display()))?;
        }
    }
    for (name, (_, kept)) in cfg.kernels.iter().zip(&guests) {
        let n = kept
            .as_ref()
            .map_or(0, |k| k.results.iter().filter(|r| asked(r)).count());
        if n > 0 {
            progress(Progress::Kept {
                kernel: name,
                results: n,
            });
        }
    }
    let report = Mutex::new(report);
    let progress = Mutex::new(progress);
    let run_kernel =
        |i: usize, guest: &guest::SuiteGuest, kept: Option<&KernelRun>| -> Result<()> {
            let name = &cfg.kernels[i];
            let runner = Runner {
                guest,
                kernel: name,
                root: &cfg.out,
                timeout: cfg.timeout * guest.slowdown(),
                reruns: cfg.reruns,
            };
            let started = Instant::now();
            let before = kept.map(|k| k.wall).unwrap_or_default();
            for spec in &cfg.tests {
                let result = match kept.and_then(|k| k.result(spec.name)) {
                    Some(r) => r.clone(),
                    None => runner.run(spec, &mut |p| (*lock(&progress))(p))?,
                };
                (*lock(&progress))(Progress::Done {
                    kernel: name,
                    result: &result,
                });
                let mut report = lock(&report);
                let k = &mut report.kernels[i];
                k.results.push(result);
                k.wall = before + started.elapsed();
                report.write(&cfg.out)?;
            }
            Ok(())
        };
    let outcomes: Vec<Result<()>> = if cfg.jobs > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = guests
                .iter()
                .enumerate()
                .map(|(i, (g, kept))| {
                    let run_kernel = &run_kernel;
                    s.spawn(move || run_kernel(i, g, kept.as_ref()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a suite thread panicked")))
                })
                .collect()
        })
    } else {
        guests
            .iter()
            .enumerate()
            .map(|(i, (g, kept))| run_kernel(i, g, kept.as_ref()))
            .collect()
    };
    // Both kernels ran as far as they could; the first error is the run's.
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(report.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// A lock that a panicked holder did not poison for the others: the report it guards is
/// written whole or not at all.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
