//! The `repro` and `report` subcommands' arguments and their wiring to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::state::{Stage, Triage};
use super::{load_finding, triage, write_report, ReproConfig};
use crate::mail;
use crate::setup::{prepare, Env};

#[derive(Args, Debug)]
#[command(
    after_help = "Writes into the finding's directory: prog.min.txt, repro.c, repro.sh, setup.sh, repro (static binary), qemu.txt, \
report.txt and triage.json (the stage reached and the figures).\n\
Exit status: 0 the C reproducer showed the signal on both kernels (for a refcount, teardown or data finding, which only daxdiff's checks after the program see: the minimized program showed it reliably); 1 it did not (or was not run); 2 error."
)]
pub struct ReproArgs {
    /// A finding's directory: WORKDIR/divergences/<signature> or WORKDIR/crashes/<title>
    pub finding: PathBuf,
    /// Runs per kernel for the reliability figures (k/N)
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Run pairs that must show the whole signal for the program to be presented as a
    /// reproducer (all of them when --runs is smaller); below it, it is marked unreliable
    #[arg(long, default_value_t = 3)]
    pub reliable_at: usize,
    /// Runs per kernel for each minimization candidate
    #[arg(long, default_value_t = 1)]
    pub min_runs: usize,
    /// Wall time for minimization (dropping calls, then simplifying arguments): 90s, 30m;
    /// what it found by then is kept
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse)]
    pub min_budget: Duration,
    /// Only drop calls; keep every argument as it is
    #[arg(long)]
    pub no_min_args: bool,
    /// How long each program (and the C reproducer) may run in the guest (10s, 1m; a bare
    /// number is seconds)
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// Known, intended differences (TOML) [default: vm-images/suppressions.toml if present]
    #[arg(long)]
    pub suppressions: Option<PathBuf>,
    /// Keep the program as it is (or as an earlier `repro` minimized it)
    #[arg(long)]
    pub no_minimize: bool,
    /// Do not build and run the C reproducer
    #[arg(long)]
    pub no_c: bool,
    /// Boot a fresh guest for every run: for behaviour that only the first program after
    /// bring-up shows (a run then costs a boot)
    #[arg(long)]
    pub boot_per_run: bool,
    /// Print the result as JSON (with a `schema` version: the triage state, whether it
    /// reproduced, the report's path) instead of lines
    #[arg(long)]
    pub json: bool,
    /// Who report.txt is from, "Name <user@example.org>" [default: git config user.name and
    /// user.email]
    #[arg(long)]
    pub from: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "A bisection of the finding (`daxdiff bisect --finding DIR`, or --bisect) goes into the report: \
kind, first bad or first fixed kernel, confidence, each kernel tested, boots, builds and time."
)]
pub struct ReportArgs {
    /// A finding's directory (after `daxdiff repro`, or straight from the fuzzer); with
    /// --reply-to, any number of findings to add to the campaign's
    #[arg(required_unless_present = "reply_to")]
    pub findings: Vec<PathBuf>,
    /// Write a reply to this series' cover letter instead (an mbox as archived, e.g. from
    /// lore): threaded to it, summarizing for the reviewers how the series applied, the
    /// suite, and every finding of --campaign sorted into introduced / fixed / intended /
    /// present in both, each with its reliability, the patch it bisected to and its reproducer
    #[arg(long, requires = "campaign")]
    pub reply_to: Option<PathBuf>,
    /// With --reply-to: the fuzzing workdir of the base (A) against the series (B)
    #[arg(long)]
    pub campaign: Option<PathBuf>,
    /// With --reply-to: a `daxdiff suite` output directory (its report.json) for the same pair;
    /// repeat for later runs of some of the tests (each gets its own table, in order)
    #[arg(long, requires = "reply_to")]
    pub suite: Vec<PathBuf>,
    /// With --reply-to: the reviewer's verdicts, TOML: [[finding]] signature = "...",
    /// class = "introduced|fixed|intended|both|unclassified|artefact", why = "..."; findings without one are
    /// classified by which kernel shows them, or listed as not yet classified
    #[arg(long, requires = "reply_to")]
    pub verdicts: Option<PathBuf>,
    /// With --reply-to: a text file put into the reply as written, after the suite tables
    /// (what daxdiff cannot know, e.g. `daxdiff refcounts` tables of both kernels at rest)
    #[arg(long, requires = "reply_to")]
    pub note: Option<PathBuf>,
    /// With --reply-to: where the message goes [default: reply.eml in the campaign workdir]
    #[arg(long, requires = "reply_to")]
    pub out: Option<PathBuf>,
    /// A bisection to include: the --out directory of `daxdiff bisect` (or its result.json);
    /// it is copied into the finding's directory as bisect.json
    #[arg(long)]
    pub bisect: Option<PathBuf>,
    /// Print the report (or the reply) as JSON (with a `schema` version: its path, subject,
    /// addressees of a reply, and text) instead of the text alone
    #[arg(long)]
    pub json: bool,
    /// Who the message (report.txt, or the reply) is from, "Name <user@example.org>"
    /// [default: git config user.name and user.email]
    #[arg(long)]
    pub from: Option<String>,
}

pub fn run_repro(env: &Env, args: ReproArgs) -> Result<ExitCode> {
    if args.runs == 0 || args.min_runs == 0 {
        anyhow::bail!("--runs and --min-runs must be at least 1");
    }
    // Before triage, not after it: the report at its end is a message and needs a sender.
    let sender = mail::sender(args.from.as_deref())?;
    let cfg = ReproConfig {
        dir: args.finding.clone(),
        min_runs: args.min_runs,
        min_budget: Some(args.min_budget),
        min_args: !args.no_min_args,
        runs: args.runs,
        reliable_at: args.reliable_at,
        timeout: args.timeout,
        suppressions: crate::fuzz::cli::load_suppressions(args.suppressions.as_deref())?,
        minimize: !args.no_minimize,
        c_reproducer: !args.no_c,
        boot_per_run: args.boot_per_run,
        progress: true,
        sender,
    };
    let out = triage(env, &cfg)?;
    let t = &out.triage;
    let code = if t.reproduced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.json {
        crate::output::print(
            crate::output::Schema::Repro,
            &serde_json::json!({
                "finding": args.finding,
                "reproduced": t.reproduced(),
                "reliable": t.reliability.as_ref().map(|r| r.reliable()),
                "triage": t,
                "report": out.report,
            }),
        )?;
        return Ok(code);
    }
    println!("signal: {}", t.signal);
    if t.calls_before.is_some() {
        println!("{}", super::minimized_line(t));
        for a in &t.args_simplified {
            println!("  {a}");
        }
    }
    if let Some(r) = &t.reliability {
        println!("reliability: A {}, B {}, pair {}", r.a, r.b, r.pair);
    }
    for (k, c) in [("A", &t.c_a), ("B", &t.c_b)] {
        if let Some(c) = c {
            println!(
                "C reproducer on {k}: {} ({})",
                if c.shows_signal {
                    "shows the signal"
                } else {
                    "does not show the signal"
                },
                c.status
            );
        }
    }
    if let Some(why) = &t.c_not_judged {
        println!("C reproducer: built, not judged: {why}");
    }
    println!("report: {}", out.report.display());
    Ok(code)
}

pub fn run_report(env: &Env, args: ReportArgs) -> Result<ExitCode> {
    if args.reply_to.is_some() {
        return super::reply::run(env, &args);
    }
    let [dir] = args.findings.as_slice() else {
        anyhow::bail!("give one finding directory (several only with --reply-to)");
    };
    let sender = mail::sender(args.from.as_deref())?;
    let finding = load_finding(dir)?;
    // Recorded first: it notes itself in triage.json, which is read next.
    if let Some(b) = &args.bisect {
        crate::bisect::result::Bisection::load(b)?.record_in_finding(dir, &finding.signature)?;
    }
    let mut t = Triage::load(dir)?;
    if t.stage == Stage::Found && t.signal.is_empty() {
        t.signal = super::signal::Signal::of_finding(dir, &finding)?.describe();
    }
    let ka = prepare(env, &finding.kernel_a)?;
    let kb = prepare(env, &finding.kernel_b)?;
    let path = write_report(dir, &finding, &mut t, (&ka, &kb), &sender)?;
    let written = std::fs::read(&path)?;
    let message = mail::Received::parse(String::from_utf8_lossy(&written).into_owned())?;
    let subject = message.subject.unwrap_or_default();
    if args.json {
        crate::output::print(
            crate::output::Schema::Report,
            &serde_json::json!({
                "finding": dir,
                "signature": finding.signature,
                "stage": t.stage,
                "report": path,
                "subject": subject,
                "text": message.body,
            }),
        )?;
    } else {
        // The text as a reader sees it, not the MIME parts with their attachments.
        print!("Subject: {subject}\n\n{}", message.body);
    }
    Ok(ExitCode::SUCCESS)
}
