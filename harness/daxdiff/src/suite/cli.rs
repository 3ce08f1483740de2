//! The `suite` subcommand's arguments, its progress display and exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::guest::SuiteGuest;
use super::report::{fmt_secs, JSON_FILE, MARKDOWN_FILE};
use super::runner::guest_environment;
use super::{run, spec, NdctlBuild, Progress, SuiteConfig};
use crate::setup::Env;

#[derive(Args, Debug)]
#[command(
    after_help = "Each test runs in a fresh guest with an ACPI NVDIMM (labels initialized, all capacity free) and 4 GiB of \
e820 pmem (memmap=4G!4G); a failure runs once more. Tests needing nfit_test or cxl_test skip on kernels without those modules.\n\
The report in --out is written after every test; the same command again resumes, keeping the results of unchanged kernel \
and suite images.\n\
Exit status: 0 no test passes on A and fails on B; 1 at least one does; 2 error."
)]
pub struct SuiteArgs {
    /// Kernel A (the base)
    #[arg(long, default_value = "debian-6.12")]
    pub a: String,
    /// Kernel B (compared against A)
    #[arg(long, default_value = "debian-7.3")]
    pub b: String,
    /// Run on this one kernel only (no comparison)
    #[arg(long, conflicts_with_all = ["a", "b"])]
    pub kernel: Option<String>,
    /// Tests to run (comma-separated meson names, `.sh` optional) [default: all 13]
    #[arg(long, value_delimiter = ',')]
    pub tests: Vec<String>,
    /// Where report.json, report.md and the logs go
    #[arg(long, default_value = "daxdiff-suite")]
    pub out: PathBuf,
    /// How long each test may run before it counts as a timeout (20m, 900s; a bare number
    /// is seconds)
    #[arg(long, default_value = "15m", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Kernels to run at the same time, each in its own guest (8 GiB of RAM each); fewer
    /// when the host lacks the memory for them
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub jobs: u64,
    /// List the suite's tests and exit
    #[arg(long)]
    pub list: bool,
    /// Print the report as JSON (with a `schema` version: the kernels' results, the
    /// differences and whether one is a regression) instead of the table
    #[arg(long)]
    pub json: bool,
    /// Boot the suite guest of --kernel (or --a), print how to connect, stay up until Ctrl-C:
    /// to rerun a test by hand (`/opt/ndctl/src/test/…`)
    #[arg(long)]
    pub boot: bool,
}

pub fn run_suite(env: &Env, args: SuiteArgs) -> Result<ExitCode> {
    if args.list {
        for t in spec::DAX_SUITE {
            let needs: Vec<String> = t.needs.iter().map(spec::Need::describe).collect();
            println!("{:<18} {:<12} {}", t.name, t.uses, needs.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.boot {
        return boot(env, args.kernel.as_deref().unwrap_or(&args.a), &args.out);
    }
    let tests = spec::select(&args.tests)?;
    let kernels = match args.kernel {
        Some(k) => vec![k],
        None => vec![args.a, args.b],
    };
    let jobs = jobs_that_fit(args.jobs as usize, kernels.len(), mem_available());
    let cfg = SuiteConfig {
        kernels,
        tests,
        out: args.out,
        timeout: args.timeout,
        reruns: 1,
        jobs,
    };
    let total = (cfg.kernels.len() * cfg.tests.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{pos}/{len}] {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    // Without a terminal the bar is hidden: progress goes to stderr as plain lines.
    let plain = bar.is_hidden();
    let out = cfg.out.clone();
    let report = run(env, &cfg, &mut |p| match p {
        Progress::Attempt {
            kernel,
            test,
            attempt,
        } => {
            let msg = if attempt > 1 {
                format!("{kernel}: {test} (rerun after a failure)")
            } else {
                format!("{kernel}: {test}")
            };
            if plain {
                eprintln!("suite: {msg}");
            }
            bar.set_message(msg);
        }
        Progress::Done { kernel, result } => {
            let line = format!(
                "{kernel}: {:<18} {:<8} {}",
                result.test,
                result.verdict.kind(),
                result
                    .duration()
                    .map(fmt_secs)
                    .unwrap_or_else(|| "-".into())
            );
            if plain {
                eprintln!("suite: {line}");
            } else {
                bar.println(line);
            }
            bar.inc(1);
        }
        Progress::Kept { kernel, results } => {
            let line = format!(
                "{kernel}: resuming, {results} result(s) kept from {}",
                out.join(JSON_FILE).display()
            );
            if plain {
                eprintln!("suite: {line}");
            } else {
                bar.println(line);
            }
        }
    })?;
    bar.finish_and_clear();
    if args.json {
        crate::output::print(
            crate::output::Schema::Suite,
            &serde_json::json!({
                "out": cfg.out,
                "report": report,
                "differences": report.differences(),
                "regression": report.has_regression(),
            }),
        )?;
    } else {
        print!("{}", report.table());
        println!(
            "report: {} and {}",
            cfg.out.join(MARKDOWN_FILE).display(),
            cfg.out.join(JSON_FILE).display()
        );
    }
    Ok(if report.has_regression() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Host memory a suite guest needs: its RAM (which holds the e820 pmem the tests fill)
/// and QEMU's own.
const GUEST_FOOTPRINT: u64 = 9 << 30;

/// How many of `kernels` to run at once when `asked` may and `available` bytes are free
/// (unknown: as asked). Says so when it runs fewer than asked.
fn jobs_that_fit(asked: usize, kernels: usize, available: Option<u64>) -> usize {
    let want = asked.min(kernels).max(1);
    let Some(free) = available else {
        return want;
    };
    let fit = ((free / GUEST_FOOTPRINT) as usize).clamp(1, want);
    if fit < want {
        eprintln!(
            "suite: running {fit} kernel(s) at a time, not {want}: {} GiB of memory is \
             available and each suite guest needs {} GiB",
            free >> 30,
            GUEST_FOOTPRINT >> 30
        );
    }
    fit
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn boot(env: &Env, kernel: &str, out: &std::path::Path) -> Result<ExitCode> {
    let ndctl = NdctlBuild::get(&env.cache)?;
    let guest = SuiteGuest::prepare(env, kernel, &ndctl)?;
    // A previous --boot's files (its NVDIMM backing files are gigabytes, if sparse) go.
    let dir = out.join(kernel).join("boot");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let vm = guest.boot(&dir)?;
    println!(
        "{kernel}: suite guest ready in {:.1}s",
        vm.times.ready.as_secs_f64()
    );
    println!("connect: {}", vm.ssh_command().join(" "));
    println!("test environment: {}", guest_environment());
    println!("console log: {}", dir.join("console.log").display());
    println!("Ctrl-C stops the guest.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_run_together_only_when_their_guests_fit_in_memory() {
        assert_eq!(jobs_that_fit(2, 2, Some(20 << 30)), 2);
        assert_eq!(jobs_that_fit(2, 2, Some(12 << 30)), 1);
        assert_eq!(jobs_that_fit(2, 2, Some(1 << 30)), 1, "at least one");
        assert_eq!(jobs_that_fit(2, 1, Some(64 << 30)), 1, "one kernel");
        assert_eq!(jobs_that_fit(1, 2, Some(64 << 30)), 1, "as asked");
        assert_eq!(jobs_that_fit(2, 2, None), 2);
        assert!(mem_available().is_some_and(|b| b > 0));
    }
}
