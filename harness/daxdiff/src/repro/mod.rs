//! Triage of one finding (`divergences/<sig>/` or `crashes/<title>/`): minimize its program,
//! measure how reliably it shows its signal on each kernel, build and verify a C reproducer
//! on fresh guests, and write the mailing-list report; `triage.json` records each stage.

pub mod cli;
pub mod creproducer;
pub mod minimize;
pub mod pair;
pub mod qemu;
pub mod reliability;
pub mod reply;
pub mod signal;
pub mod simplify;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use daxdiff_prog::{Program, Target};

use crate::cache::write_atomic;
use crate::diff::{differences, Side, Suppressions};
use crate::fuzz::KernelSide;
use crate::mail::{Attachment, Mailbox};
use crate::report::{self, ReportInput};
use crate::setup::{prepare, Env, Prepared};
use crate::workdir::Finding;
use pair::Pair;
use signal::Signal;
use state::{CRun, Reliability, Stage, Triage};

/// The minimized program, beside the original `prog.txt`.
pub const MINIMIZED: &str = "prog.min.txt";

#[derive(Clone, Debug)]
pub struct ReproConfig {
    /// The finding's directory.
    pub dir: PathBuf,
    /// Runs per kernel for each minimization candidate.
    pub min_runs: usize,
    /// Wall time for minimization (calls, then arguments); what was found when it runs
    /// out is kept.
    pub min_budget: Option<Duration>,
    /// Simplify arguments after dropping calls.
    pub min_args: bool,
    /// Runs per kernel for the reliability figures.
    pub runs: usize,
    /// Run pairs (of `runs`) that must show the whole signal for a reproducer.
    pub reliable_at: usize,
    /// Per-program timeout in the guest (executor and C reproducer).
    pub timeout: Duration,
    pub suppressions: Suppressions,
    pub minimize: bool,
    pub c_reproducer: bool,
    /// A fresh guest for every run.
    pub boot_per_run: bool,
    pub progress: bool,
    /// Who `report.txt` is from.
    pub sender: Mailbox,
}

/// What triage did, as stored in `triage.json`, and where the report is.
pub struct Triaged {
    pub triage: Triage,
    pub report: PathBuf,
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
}

pub fn load_finding(dir: &Path) -> Result<Finding> {
    let text = read(dir, "finding.json").context(
        "not a finding directory (divergences/<sig>/ or crashes/<title>/ of a fuzzing workdir)",
    )?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}/finding.json is damaged", dir.display()))
}

fn parse_prog(dir: &Path, name: &str) -> Result<Program> {
    daxdiff_prog::parse(Target::builtin(), &read(dir, name)?)
        .map_err(|e| anyhow::anyhow!("{}/{name}:{e}", dir.display()))
}

/// Runs every triage step on a finding and writes the report.
pub fn triage(env: &Env, cfg: &ReproConfig) -> Result<Triaged> {
    let dir = &cfg.dir;
    let finding = load_finding(dir)?;
    let signal = Signal::of_finding(dir, &finding)?;
    let mut t = Triage::load(dir)?;
    t.signal = signal.describe();
    let original = parse_prog(dir, "prog.txt")?;
    let ka = prepare(env, &finding.kernel_a)
        .with_context(|| format!("prepare kernel A ({})", finding.kernel_a))?;
    let kb = prepare(env, &finding.kernel_b)
        .with_context(|| format!("prepare kernel B ({})", finding.kernel_b))?;
    let bar = if cfg.progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut pair = Pair {
        a: KernelSide::new(&finding.kernel_a, ka.clone(), cfg.timeout),
        b: KernelSide::new(&finding.kernel_b, kb.clone(), cfg.timeout),
        suppressions: cfg.suppressions.clone(),
        runs: cfg.min_runs,
        boot_per_run: cfg.boot_per_run,
        bar: bar.clone(),
    };
    let result = run_steps(
        cfg,
        &finding,
        &signal,
        &mut t,
        &original,
        &mut pair,
        (&ka, &kb),
    );
    pair.shutdown();
    bar.finish_and_clear();
    result?;
    let report = write_report(dir, &finding, &mut t, (&ka, &kb), &cfg.sender)?;
    Ok(Triaged { triage: t, report })
}

fn run_steps(
    cfg: &ReproConfig,
    finding: &Finding,
    signal: &Signal,
    t: &mut Triage,
    original: &Program,
    pair: &mut Pair,
    kernels: (&Prepared, &Prepared),
) -> Result<()> {
    let dir = &cfg.dir;
    let mut prog = original.clone();
    if cfg.minimize {
        pair.bar
            .set_message("checking the recorded program still shows the signal");
        if !pair.shows(signal, original)? {
            t.not_shown_again = Some(format!(
                "{} run(s) per kernel{}",
                cfg.min_runs,
                if cfg.boot_per_run {
                    ", each on a freshly booted guest"
                } else {
                    " in a freshly booted guest"
                }
            ));
            t.save(dir)?;
            bail!(
                "the recorded program of {} no longer shows `{}` on {} vs {}; nothing to minimize (try more --min-runs; if only the first program after a boot shows it, --boot-per-run; or the finding was a fluke)",
                dir.display(),
                t.signal,
                finding.kernel_a,
                finding.kernel_b
            );
        }
        t.not_shown_again = None;
        let before = original.calls.len();
        let mut asked = 0;
        let mut oracle = |cand: &Program, change: &str| -> Result<bool> {
            asked += 1;
            pair.bar.set_message(format!(
                "minimizing: candidate {asked} ({} calls, from {before}): {change}",
                cand.calls.len()
            ));
            let kept = pair.shows(signal, cand)?;
            say(
                &pair.bar,
                format!(
                    "candidate {asked}: {change}: {}",
                    if kept {
                        "still shows the signal"
                    } else {
                        "lost it"
                    }
                ),
            );
            Ok(kept)
        };
        let limits = minimize::Limits {
            deadline: cfg.min_budget.map(|b| std::time::Instant::now() + b),
            args: cfg.min_args,
        };
        let m = minimize::minimize(Target::builtin(), original, limits, &mut oracle)?;
        prog = m.program;
        write_atomic(&dir.join(MINIMIZED), prog.to_text().as_bytes())?;
        t.calls_before = Some(before);
        t.calls_after = Some(prog.calls.len());
        t.candidates = Some(m.candidates + 1);
        t.args_simplified = m.args.iter().map(|a| a.describe()).collect();
        t.minimize_budget_spent = m.stopped;
        t.reach(Stage::Minimized);
        t.save(dir)?;
        say(&pair.bar, minimized_line(t));
        for a in &t.args_simplified {
            say(&pair.bar, format!("  {a}"));
        }
    } else if dir.join(MINIMIZED).is_file() {
        prog = parse_prog(dir, MINIMIZED)?;
    }
    let measured = reliability::measure(pair, signal, &prog, cfg.runs)?;
    let r = Reliability {
        threshold: cfg.reliable_at,
        fresh_boots: cfg.boot_per_run,
        ..measured.reliability.clone()
    };
    say(
        &pair.bar,
        format!(
            "reliability: A {}, B {}, pair {}{}",
            r.a,
            r.b,
            r.pair,
            if r.reliable() {
                String::new()
            } else {
                format!(
                    " (unreliable: below {} of {})",
                    r.threshold.min(r.pair.n),
                    r.pair.n
                )
            }
        ),
    );
    t.reliability = Some(r);
    t.differences = differences(&measured.usual_a, &measured.usual_b)
        .iter()
        .map(|d| d.describe())
        .collect();
    t.save(dir)?;
    if cfg.c_reproducer {
        pair.shutdown();
        let header = vec![
            format!("daxdiff reproducer: {}", t.signal),
            format!("A = {}, B = {}", finding.kernel_a, finding.kernel_b),
        ];
        let bin = creproducer::build(dir, &prog, &header)?;
        if signal.needs_daxdiff_checks() {
            // The kernel that shows it, for the command that does.
            let shows_on = match signal.decisive_side() {
                Some((Side::A, _)) => &finding.kernel_a,
                _ => &finding.kernel_b,
            };
            let why = not_judged(&t.signal, shows_on);
            say(&pair.bar, format!("C reproducer: built, not judged: {why}"));
            t.c_not_judged = Some(why);
            // What an earlier triage recorded for C runs does not stand for this signal.
            t.c_a = None;
            t.c_b = None;
            t.save(dir)?;
            return Ok(());
        }
        t.c_not_judged = None;
        let mut shown = true;
        for (side, k, other) in [
            (Side::A, kernels.0, &measured.usual_b),
            (Side::B, kernels.1, &measured.usual_a),
        ] {
            pair.bar
                .set_message(format!("C reproducer on a fresh {} guest", k.kernel.name));
            let run = creproducer::run_in_guest(k, &bin, cfg.timeout)?;
            let c = CRun {
                shows_signal: signal.shows(side, &run.outcome, other),
                status: run.status.clone(),
                reports: run
                    .outcome
                    .reports
                    .iter()
                    .map(|r| r.title.clone())
                    .collect(),
                output: run
                    .stdout
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n"),
                unfinished: (0..prog.calls.len())
                    .find(|i| !run.outcome.calls.iter().any(|c| c.index == *i))
                    .map(|i| format!("#{i} {}", prog.calls[i].name)),
            };
            say(
                &pair.bar,
                format!(
                    "C reproducer on {}: {} ({})",
                    k.kernel.name,
                    if c.shows_signal {
                        "shows the signal"
                    } else {
                        "does not show the signal"
                    },
                    c.status
                ),
            );
            shown &= c.shows_signal;
            match side {
                Side::A => t.c_a = Some(c),
                Side::B => t.c_b = Some(c),
            }
            t.save(dir)?;
        }
        if shown {
            t.reach(Stage::Reproduced);
        }
        t.save(dir)?;
    }
    Ok(())
}

/// Why a C reproducer is not run for `signal`, and how to see the signal instead.
pub(crate) fn not_judged(signal: &str, kernel: &str) -> String {
    let (what, command) = if signal.starts_with("refcount ") {
        ("the reference-count probe", "refcounts")
    } else if signal.starts_with("teardown: ") {
        (
            "the teardown steps (unmount, mount, device disable and enable)",
            "run",
        )
    } else {
        ("the data check of the mappings", "run")
    };
    format!(
        "only {what} that daxdiff runs after the program can show this, and the C program \
         runs the program alone; `daxdiff {command} --teardown --kernel {kernel} prog.min.txt` \
         shows it"
    )
}

/// `minimized: 13 -> 9 calls, 4 arguments simplified (… budget spent)`.
pub fn minimized_line(t: &Triage) -> String {
    let mut s = format!(
        "minimized: {} -> {} calls, {} argument{} simplified ({} candidates)",
        t.calls_before.unwrap_or(0),
        t.calls_after.unwrap_or(0),
        t.args_simplified.len(),
        if t.args_simplified.len() == 1 {
            ""
        } else {
            "s"
        },
        t.candidates.unwrap_or(0),
    );
    if t.minimize_budget_spent {
        s.push_str("; the budget ran out before every candidate was tried");
    }
    s
}

/// A line above the progress bar, also when stderr is not a terminal (logs).
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| eprintln!("{line}"));
}

/// A console log with file:line added to the frames of its kernel reports, when the kernel
/// has debug information (its vmlinux, or Debian's -dbg package fetched once); as recorded
/// otherwise, saying why.
fn symbolized(cache: &Path, kernel: &crate::images::Kernel, console: String) -> String {
    if daxdiff_observe::parse(&console).is_empty() {
        return console;
    }
    match crate::symbolize::Symbolizer::for_kernel(cache, kernel) {
        Ok(mut s) => s.symbolize(&console),
        Err(e) => {
            eprintln!("report: {} reports stay unsymbolized: {e:#}", kernel.name);
            console
        }
    }
}

/// Fills the finding's `attachments/` directory for the mail: each kernel's .config, the
/// consoles (symbolized where the kernel has debug information), the programs, the C
/// reproducer with its scripts and the QEMU command lines. Returns them, in order.
fn attach(
    dir: &Path,
    ka: &Prepared,
    kb: &Prepared,
    console_a: &str,
    console_b: &str,
) -> Result<Vec<Attachment>> {
    let out = dir.join("attachments");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let mut names = Vec::new();
    for (name, k) in [("config-a", &ka.kernel), ("config-b", &kb.kernel)] {
        if let Some(text) = k.config.as_ref().and_then(|c| std::fs::read(c).ok()) {
            write_atomic(&out.join(name), &text)?;
            names.push(Attachment {
                name: name.to_string(),
                content: text,
            });
        }
    }
    for (name, text) in [("console-a.log", console_a), ("console-b.log", console_b)] {
        if !text.is_empty() {
            write_atomic(&out.join(name), text.as_bytes())?;
            names.push(Attachment {
                name: name.to_string(),
                content: text.as_bytes().to_vec(),
            });
        }
    }
    for name in [
        "prog.txt",
        MINIMIZED,
        creproducer::SOURCE,
        creproducer::SCRIPT,
        creproducer::SETUP,
        qemu::QEMU_FILE,
    ] {
        if let Ok(text) = std::fs::read(dir.join(name)) {
            write_atomic(&out.join(name), &text)?;
            names.push(Attachment {
                name: name.to_string(),
                content: text,
            });
        }
    }
    Ok(names)
}

/// Writes `report.txt` from what the directory and its state hold (no guest needed): a
/// message from `sender` with the attachments as parts.
pub fn write_report(
    dir: &Path,
    finding: &Finding,
    t: &mut Triage,
    (ka, kb): (&Prepared, &Prepared),
    sender: &Mailbox,
) -> Result<PathBuf> {
    let program = if dir.join(MINIMIZED).is_file() {
        read(dir, MINIMIZED)?
    } else {
        read(dir, "prog.txt")?
    };
    let console_a = symbolized(
        &ka.cache,
        &ka.kernel,
        read(dir, "console-a.log").unwrap_or_default(),
    );
    let console_b = symbolized(
        &kb.cache,
        &kb.kernel,
        read(dir, "console-b.log").unwrap_or_default(),
    );
    // The machine both kernels ran on, as the reproducers and the fuzzer boot it.
    let qemu_text = qemu::render(
        [("A", &ka.kernel), ("B", &kb.kernel)],
        &crate::vm::MachineProfile::default(),
        ka.accel,
    );
    write_atomic(&dir.join(qemu::QEMU_FILE), qemu_text.as_bytes())?;
    let attachments = attach(dir, ka, kb, &console_a, &console_b)?;
    let names: Vec<String> = attachments.iter().map(|a| a.name.clone()).collect();
    let bisection = crate::bisect::result::Bisection::of_finding(dir)?;
    let input = ReportInput {
        finding,
        triage: t,
        kernel_a: &ka.kernel,
        kernel_b: &kb.kernel,
        program: &program,
        console_a: &console_a,
        console_b: &console_b,
        has_c: dir.join(creproducer::SOURCE).is_file(),
        attachments: &names,
        bisection: bisection.as_ref(),
        qemu: &qemu_text,
    };
    let path = dir.join(report::REPORT_FILE);
    let message = report::message(&input, sender, attachments);
    write_atomic(&path, &message.to_bytes())?;
    t.reach(Stage::Reported);
    t.save(dir)?;
    Ok(path)
}
