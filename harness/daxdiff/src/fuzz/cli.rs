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
    /// Boot every guest that replaces one (after a kernel report, a hang or a blocked
    /// teardown) instead of restoring a snapshot of the first guest, saved after its bring-up
    #[arg(long)]
    pub boot_fresh: bool,
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
        snapshots: !args.boot_fresh,
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
    let workdir = Workdir::existing(&args.workdir)?;
    let summary = workdir
        .summary()
        .with_context(|| format!("read {}", args.workdir.display()))?;
    if args.json {
        crate::output::print(crate::output::Schema::Show, &Shown::of(&workdir, &summary)?)?;
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

/// `show --json`: the counters, the kernels with what they resolved to, and each finding with
/// its directory (what `repro`, `report` and `bisect --finding` take) and triage state.
#[derive(serde::Serialize)]
struct Shown<'a> {
    stats: &'a crate::workdir::Stats,
    kernels: ShownKernels<'a>,
    divergences: Vec<ShownFinding<'a>>,
    crashes: Vec<ShownFinding<'a>>,
    unstable: Vec<ShownFinding<'a>>,
    damaged: &'a [crate::workdir::DamagedFinding],
}

#[derive(serde::Serialize)]
struct ShownKernels<'a> {
    a: ShownKernel<'a>,
    b: ShownKernel<'a>,
}

#[derive(serde::Serialize)]
struct ShownKernel<'a> {
    name: &'a str,
    /// Absent for a workdir made before versions were recorded.
    resolved: Option<&'a crate::workdir::ResolvedKernel>,
}

#[derive(serde::Serialize)]
struct ShownFinding<'a> {
    dir: PathBuf,
    #[serde(flatten)]
    finding: &'a crate::workdir::Finding,
    /// Absent until `repro` or `bisect` worked on the finding.
    triage: Option<ShownTriage>,
}

#[derive(serde::Serialize)]
struct ShownTriage {
    stage: crate::repro::state::Stage,
    reliability: Option<crate::repro::state::Reliability>,
    /// The minimized program showed the signal in enough run pairs to be a reproducer.
    reliable: Option<bool>,
    /// The C reproducer showed the signal on a fresh guest of A, of B.
    c_reproducer: Option<[bool; 2]>,
    not_shown_again: Option<String>,
    bisection: Option<crate::repro::state::BisectNote>,
    report: Option<PathBuf>,
}

impl<'a> Shown<'a> {
    fn of(workdir: &Workdir, summary: &'a Summary) -> Result<Shown<'a>> {
        use crate::workdir::FindingKind;
        let s = &summary.stats;
        let list = |kind: FindingKind,
                    found: &'a [crate::workdir::Finding]|
         -> Result<Vec<ShownFinding<'a>>> {
            // The summary's findings are in the listing's order (sorted by directory).
            let names = workdir.listing(kind)?.complete.into_iter().map(|(n, _)| n);
            names
                .zip(found)
                .map(|(name, finding)| {
                    let dir = workdir.finding_dir(kind, &name);
                    let triage = shown_triage(&dir)?;
                    Ok(ShownFinding {
                        dir,
                        finding,
                        triage,
                    })
                })
                .collect()
        };
        Ok(Shown {
            stats: s,
            kernels: ShownKernels {
                a: ShownKernel {
                    name: &s.kernel_a,
                    resolved: s.resolved_a.as_ref(),
                },
                b: ShownKernel {
                    name: &s.kernel_b,
                    resolved: s.resolved_b.as_ref(),
                },
            },
            divergences: list(FindingKind::Divergence, &summary.divergences)?,
            crashes: list(FindingKind::Crash, &summary.crashes)?,
            unstable: list(FindingKind::Unstable, &summary.unstable)?,
            damaged: &summary.damaged,
        })
    }
}

fn shown_triage(dir: &Path) -> Result<Option<ShownTriage>> {
    use crate::repro::state::Triage;
    if !Triage::path(dir).is_file() {
        return Ok(None);
    }
    let t = Triage::load(dir)?;
    let report = dir.join(crate::report::REPORT_FILE);
    Ok(Some(ShownTriage {
        stage: t.stage,
        reliable: t.reliability.as_ref().map(|r| r.reliable()),
        reliability: t.reliability,
        c_reproducer: match (&t.c_a, &t.c_b) {
            (Some(a), Some(b)) => Some([a.shows_signal, b.shows_signal]),
            _ => None,
        },
        not_shown_again: t.not_shown_again,
        bisection: t.bisection,
        report: report.is_file().then_some(report),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repro::state::{Rate, Reliability, Stage, Triage};
    use crate::workdir::{Finding, FindingKind, ResolvedKernel, SideRecord, Stats};

    fn finding(kind: FindingKind, signature: &str) -> Finding {
        Finding {
            kind,
            signature: signature.into(),
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            differences: vec!["call 1 mmap: 0 vs EINVAL".into()],
            runs: 3,
            found_at_exec: 7,
        }
    }

    /// What a script reading `show --json` needs to go on: where each finding is, how far
    /// its triage got, and the exact kernels the campaign ran.
    #[test]
    fn show_json_names_each_findings_directory_triage_and_the_resolved_kernels() {
        let t = tempfile::tempdir().unwrap();
        let w = Workdir::open(t.path()).unwrap();
        w.save_stats(&Stats {
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            resolved_a: Some(ResolvedKernel {
                version: "6.12.57-1".into(),
                release: "6.12.57+deb13-amd64".into(),
            }),
            ..Stats::default()
        })
        .unwrap();
        let none = || SideRecord {
            outcomes: &[],
            console: &[],
        };
        let triaged = w
            .save_finding(
                "mmap-x",
                &finding(FindingKind::Divergence, "mmap"),
                "getpid()\n",
                none(),
                none(),
            )
            .unwrap();
        w.save_finding(
            "madvise-y",
            &finding(FindingKind::Divergence, "madvise"),
            "getpid()\n",
            none(),
            none(),
        )
        .unwrap();
        Triage {
            stage: Stage::Minimized,
            reliability: Some(Reliability {
                a: Rate { k: 10, n: 10 },
                b: Rate { k: 9, n: 10 },
                pair: Rate { k: 9, n: 10 },
                threshold: 3,
                fresh_boots: false,
            }),
            ..Triage::default()
        }
        .save(&triaged)
        .unwrap();

        let summary = w.summary().unwrap();
        let text = crate::output::document(
            crate::output::Schema::Show,
            &Shown::of(&w, &summary).unwrap(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "daxdiff.show/2");
        assert_eq!(v["kernels"]["a"]["resolved"]["version"], "6.12.57-1");
        assert!(v["kernels"]["b"]["resolved"].is_null());
        let divs = v["divergences"].as_array().unwrap();
        assert_eq!(divs.len(), 2);
        // Sorted by directory: madvise-y, then mmap-x.
        assert_eq!(divs[0]["signature"], "madvise");
        assert!(divs[0]["dir"]
            .as_str()
            .unwrap()
            .ends_with("divergences/madvise-y"));
        assert!(divs[0]["triage"].is_null());
        assert_eq!(divs[1]["signature"], "mmap");
        assert_eq!(
            divs[1]["triage"]["stage"],
            serde_json::json!(Stage::Minimized)
        );
        assert_eq!(divs[1]["triage"]["reliable"], true);
        assert_eq!(divs[1]["triage"]["reliability"]["pair"]["k"], 9);
        assert_eq!(
            std::path::Path::new(divs[1]["dir"].as_str().unwrap()),
            triaged.as_path()
        );
    }
}
