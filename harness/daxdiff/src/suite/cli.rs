//! The `suite` subcommand's arguments, its progress display and exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::guest::SuiteGuest;
use super::report::{fmt_secs, JSON_FILE, MARKDOWN_FILE};
use super::runner::guest_environment;
use super::{run, spec, NdctlBuild, Progress, SuiteConfig, DEFAULT_TIMEOUT};
use crate::setup::Env;

#[derive(Args, Debug)]
#[command(
    after_help = "Each test runs in a fresh guest with an ACPI NVDIMM (labels initialized, all capacity free) and 4 GiB of \
e820 pmem (memmap=4G!4G); a failure runs once more. Tests needing nfit_test or cxl_test skip on kernels without those modules.\n\
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
    /// Seconds each test may run before it counts as a timeout
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// List the suite's tests and exit
    #[arg(long)]
    pub list: bool,
    /// Boot the suite guest of --kernel (or --a), print how to connect, stay up until Ctrl-C:
    /// to rerun a test by hand (`/opt/ndctl/src/test/…`)
    #[arg(long)]
    pub boot: bool,
}

pub fn run_suite(env: &Env, args: SuiteArgs) -> Result<ExitCode> {
    if args.list {
        for t in spec::DAX_SUITE {
            let needs: Vec<String> = t
                .needs
                .iter()
                .map(|spec::Need::Module(m)| format!("needs module {m}"))
                .collect();
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
    let cfg = SuiteConfig {
        kernels,
        tests,
        out: args.out,
        timeout: Duration::from_secs(args.timeout),
        reruns: 1,
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
    })?;
    bar.finish_and_clear();
    print!("{}", report.table());
    println!(
        "report: {} and {}",
        cfg.out.join(MARKDOWN_FILE).display(),
        cfg.out.join(JSON_FILE).display()
    );
    Ok(if report.has_regression() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
    println!(
        "connect: ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1",
        dir.join("id_ed25519").display(),
        vm.files.ssh_port
    );
    println!("test environment: {}", guest_environment());
    println!("console log: {}", dir.join("console.log").display());
    println!("Ctrl-C stops the guest.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
