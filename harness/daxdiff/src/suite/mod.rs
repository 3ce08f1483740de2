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
}

/// Builds ndctl's tests (cached), prepares each kernel's suite image, runs the tests and
/// writes the report into `cfg.out` after every test (a killed run leaves what it had).
pub fn run(
    env: &Env,
    cfg: &SuiteConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<SuiteReport> {
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("create the report directory {}", cfg.out.display()))?;
    let ndctl = NdctlBuild::get(&env.cache)?;
    let mut report = SuiteReport {
        ndctl_version: ndctl.version.clone(),
        kernels: vec![],
    };
    for name in &cfg.kernels {
        let guest = guest::SuiteGuest::prepare(env, name, &ndctl)
            .with_context(|| format!("prepare kernel {name} for the suite"))?;
        report.kernels.push(KernelRun {
            kernel: name.clone(),
            release: guest.kernel.release.clone(),
            package_version: guest.kernel.version.clone(),
            accel: guest.accel.to_string(),
            wall: Duration::ZERO,
            results: vec![],
        });
        let runner = Runner {
            guest: &guest,
            kernel: name,
            root: &cfg.out,
            timeout: cfg.timeout,
            reruns: cfg.reruns,
        };
        let started = Instant::now();
        for spec in &cfg.tests {
            let result = runner.run(spec, progress)?;
            progress(Progress::Done {
                kernel: name,
                result: &result,
            });
            let k = report.kernels.last_mut().expect("pushed above");
            k.results.push(result);
            k.wall = started.elapsed();
            report.write(&cfg.out)?;
        }
    }
    Ok(report)
}
