//! The `fuzz` and `show` subcommands' arguments and their wiring to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::{fuzz, Budget, FuzzConfig};
use crate::diff::Suppressions;
use crate::setup::Env;
use crate::workdir::{Summary, Workdir};

/// The shipped suppressions, used when present and no `--suppressions` is given.
pub const DEFAULT_SUPPRESSIONS: &str = "vm-images/suppressions.toml";

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 the workdir holds no stable divergence and no crash; 1 it holds at least one \
(see `daxdiff show WORKDIR`); 2 error.\nA killed run resumes from its workdir: run the same command again."
)]
pub struct FuzzArgs {
    /// Kernel A (the base)
    #[arg(long, default_value = "debian-6.12")]
    pub a: String,
    /// Kernel B (compared against A)
    #[arg(long, default_value = "debian-7.3")]
    pub b: String,
    /// Wall time to fuzz: 90s, 30m, 1h30m, 1.5h, 2d
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse)]
    pub budget: Duration,
    /// Stop after this many program pairs instead (ends at whichever limit comes first)
    #[arg(long)]
    pub execs: Option<u64>,
    /// Where the corpus, findings and counters go; the same workdir again resumes
    #[arg(long, default_value = "daxdiff-work")]
    pub workdir: PathBuf,
    /// Seed of the program generator and mutator: the same seed, kernels and budget in
    /// program pairs give the same programs
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// VM pairs fuzzing in parallel (each pair is two guests)
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Runs on each kernel before a difference counts as a stable divergence
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Known, intended differences (TOML) [default: vm-images/suppressions.toml if present]
    #[arg(long)]
    pub suppressions: Option<PathBuf>,
    /// Seed programs run first [default: corpora if present]
    #[arg(long)]
    pub seeds: Option<PathBuf>,
    /// Start from generated programs only (no seed directory)
    #[arg(long, conflicts_with = "seeds")]
    pub no_seeds: bool,
    /// How long each program may run in the guest (10s, 1m; a bare number is seconds)
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Teardown liveness (unmount and mount the DAX filesystems, disable and enable the
    /// device-dax device, each under a deadline) after one program in N; 0 turns it off
    #[arg(long, default_value_t = DEFAULT_TEARDOWN_EVERY)]
    pub teardown_every: u64,
}

/// Teardown after every program: it is where a leaked pin blocks (unmount, device disable),
/// at a cost of about 0.6 s (debian-7.3) to 1.3 s (debian-6.12) per program and kernel under
/// TCG; `--teardown-every N` trades that for throughput.
pub const DEFAULT_TEARDOWN_EVERY: u64 = 1;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A campaign's workdir (`daxdiff fuzz --workdir`)
    pub workdir: PathBuf,
    /// Print the summary as JSON (with a `schema` version): counters, kernels and their
    /// resolved versions, and every finding with its directory and triage state
    #[arg(long)]
    pub json: bool,
}

pub fn run_fuzz(env: &Env, args: FuzzArgs) -> Result<ExitCode> {
    let suppressions = load_suppressions(args.suppressions.as_deref())?;
    let seeds = match (&args.seeds, args.no_seeds) {
        (_, true) => None,
        (Some(dir), false) => Some(dir.clone()),
        (None, false) => Path::new("corpora")
            .is_dir()
            .then(|| PathBuf::from("corpora")),
    };
    let cfg = FuzzConfig {
        kernel_a: args.a,
        kernel_b: args.b,
        workdir: args.workdir,
        budget: Budget {
            time: Some(args.budget),
            execs: args.execs,
        },
        seed: args.seed,
        jobs: args.jobs,
        runs: args.runs,
        suppressions,
        seeds,
        timeout: args.timeout,
        teardown_every: args.teardown_every,
        progress: true,
    };
    let summary = fuzz(env, &cfg)?;
    print!("{summary}");
    println!("workdir: {}", cfg.workdir.display());
    Ok(exit_code(&summary))
}

/// The suppressions named, else the shipped ones when present, else none.
pub fn load_suppressions(path: Option<&Path>) -> Result<Suppressions> {
    Ok(match path {
        Some(p) => Suppressions::load(p)?,
        None if Path::new(DEFAULT_SUPPRESSIONS).is_file() => {
            Suppressions::load(Path::new(DEFAULT_SUPPRESSIONS))?
        }
        None => Suppressions::default(),
    })
}

pub fn run_show(args: ShowArgs) -> Result<ExitCode> {
    let summary = Workdir::existing(&args.workdir)?
        .summary()
        .with_context(|| format!("read {}", args.workdir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(exit_code(&summary))
}

fn exit_code(s: &Summary) -> ExitCode {
    if s.has_findings() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
