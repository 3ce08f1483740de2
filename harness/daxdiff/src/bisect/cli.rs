//! The `bisect` subcommand's arguments and their wiring to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::build::CommandKernels;
use super::git::GitBisect;
use super::result::{duration, short_label, About, Bisection, RESULT_FILE};
use super::search::{Kind, StepVerdict};
use super::session::{Session, Settings};
use super::signal::{load_finding, Predicate, Signal};
use super::state::{Role, State, StepRecord};
use super::trial::VmTester;
use super::versions::{self, VersionRange};
use crate::cache::{write_atomic, KeyBuilder};
use crate::setup::Env;

#[derive(Args, Debug)]
#[command(
    after_help = "Predicates (--bad-if, repeatable; any that holds makes a run bad):\n  \
call N returns ERRNO|VALUE|ok|error|fd|addr   call N fails|succeeds|missing\n  \
report [TEXT]   problem [TEXT]   status completed|timeout|crashed|error   hang [FUNCTION]\n  \
differs (the outcome differs from the good end's)   not PREDICATE\n\n\
--fix bisects the other way: the first kernel where the behaviour STOPS. The older end is then the bad one \
(it shows the behaviour) and the newer end the good one; the result names the first fixed and the last broken kernel \
(git mode: --bad is the older revision, --good the newer, and git is driven with the terms broken/fixed).\n\n\
Exit status: 0 the first bad (or first fixed) kernel was found; 1 skipped kernels hide it (the candidates are listed); 2 error.\n\
A killed bisection resumes from --out: run the same command again. With --finding the result is also written into the \
finding's directory (bisect.json, bisect.txt), where `daxdiff report` takes it."
)]
pub struct BisectArgs {
    /// Served Debian kernels between two upstream versions, one per point release: debian:6.1..7.3
    #[arg(
        long,
        conflicts_with_all = ["versions_file", "git"],
        required_unless_present_any = ["versions_file", "git"]
    )]
    pub versions: Option<VersionRange>,
    /// A file of Debian package versions, one a line, good end first, bad end last
    #[arg(long, conflicts_with = "git")]
    pub versions_file: Option<PathBuf>,
    /// Git mode: the kernel tree to bisect (its own checkout is not touched)
    #[arg(long, requires_all = ["good", "bad"])]
    pub git: Option<PathBuf>,
    /// Git mode: the good revision (without the behaviour; the newer end with --fix)
    #[arg(long, requires = "git")]
    pub good: Option<String>,
    /// Git mode: the bad revision (with the behaviour; the older end with --fix)
    #[arg(long, requires = "git")]
    pub bad: Option<String>,
    /// Find where the behaviour stops (a fix) instead of where it starts (a regression): the
    /// older end must show it and the newer end not
    #[arg(long)]
    pub fix: bool,
    /// Git mode: builds the checked-out revision (sh -c, in a worktree under --out, with
    /// DAXDIFF_REV and DAXDIFF_OUT set); must leave $DAXDIFF_OUT/bzImage, optionally
    /// $DAXDIFF_OUT/config and $DAXDIFF_OUT/lib/modules/<release>/; failing = skip the revision
    /// [default: `daxdiff kernel build` with --config and --fragment, cached by content,
    /// one incremental output directory for the repository]
    #[arg(long, requires = "git")]
    pub build_cmd: Option<String>,
    /// Git mode without --build-cmd: base config (lean, defconfig or a file)
    #[arg(long = "config", default_value = "lean", requires = "git")]
    pub kconfig: String,
    /// Git mode without --build-cmd: config fragments, shipped by name or files [default: base, dax, debug]
    #[arg(long = "fragment", requires = "git")]
    pub fragments: Vec<String>,
    /// Git mode without --build-cmd: start the repository's first build from the objects of
    /// this built kernel (`daxdiff kernel build`), whose tree is the repository at --good: for
    /// bisecting inside a series, the unpatched base. Only what differs from it is compiled
    #[arg(long, requires = "git", conflicts_with = "build_cmd")]
    pub reuse_build: Option<String>,
    /// Prefer builds whose release carries +ABI (deb12: gcc-12 builds) where a point release has several
    #[arg(long)]
    pub abi: Option<String>,
    /// Print the versions the bisection would walk, then exit (nothing is fetched or booted)
    #[arg(long)]
    pub list: bool,
    /// The reproducer: a program file (text form)
    #[arg(long, requires = "bad_if", conflicts_with = "finding")]
    pub prog: Option<PathBuf>,
    /// What makes a run bad (see below); repeat for "or"
    #[arg(long = "bad-if")]
    pub bad_if: Vec<Predicate>,
    /// A finding directory of a fuzzing workdir (divergences/<sig> or crashes/<title>): its
    /// program, bad when a run shows B's side of the recorded divergence (A's side with --fix)
    /// or the crash's report
    #[arg(long)]
    pub finding: Option<PathBuf>,
    /// Runs on each end (they measure how reliably the program shows the behaviour)
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Confidence each step's verdict needs
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Runs per guest before an undecided step is retested on a fresh guest
    #[arg(long, default_value_t = 12)]
    pub max_runs: u32,
    /// Guests per step before an undecided step is skipped
    #[arg(long, default_value_t = 2)]
    pub max_boots: u32,
    /// Boot a fresh guest for every run: for behaviour that only the first program after
    /// bring-up shows (a run then costs a boot)
    #[arg(long)]
    pub boot_per_run: bool,
    /// How long each program may run (30s, 2m; a bare number is seconds)
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    pub timeout: Duration,
    /// State (state.json, resumable) and result (result.json) directory
    #[arg(long, default_value = "daxdiff-bisect")]
    pub out: PathBuf,
    /// Print the bisection result as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run_bisect(env: &Env, args: BisectArgs) -> Result<ExitCode> {
    if let Some(repo) = &args.git {
        return run_git(env, &args, repo);
    }
    let all = versions::served(&env.cache)?;
    let cands = match (&args.versions, &args.versions_file) {
        (Some(r), _) => {
            let l = versions::select(&all, r, args.abi.as_deref());
            if l.len() < 2 {
                bail!(
                    "the mirror serves {} kernel(s) between {} and {}: a bisection needs two or more; \
                     `daxdiff images list --refresh` shows what is served",
                    l.len(),
                    r.from,
                    r.to
                );
            }
            l
        }
        (None, Some(f)) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
            versions::from_file(&text, &f.display().to_string(), &all)?
        }
        (None, None) => bail!(
            "say what to bisect over: --versions debian:FROM..TO, --versions-file FILE or --git REPO"
        ),
    };
    if args.list {
        for (i, c) in cands.iter().enumerate() {
            println!("{i:>3}  {:<24} {}", c.version, c.release);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let repro = reproducer(&args)?;
    let signal = &repro.signal;
    let settings = settings(&args)?;
    let mut key = bisection_key(&args, &repro.program, signal, &settings)?;
    for c in &cands {
        key = key.part("candidate", &c.version);
    }
    let header = format!(
        "bisect{}: {} versions, {} .. {}; {}",
        if args.fix { " --fix" } else { "" },
        cands.len(),
        cands[0].version,
        cands[cands.len() - 1].version,
        signal.describe()
    );
    let (bar, mut session) = start(&args, &header, key.finish(), signal, settings)?;
    let mut tester = vm_tester(env, &args, &repro, &bar);
    let result = versions::bisect(&mut session, &mut tester, &cands);
    bar.finish_and_clear();
    let result = result?;
    let bisection = Bisection::of_versions(about(&args, &repro, &session), &result, &cands);
    finish(&args, &repro, &bisection)
}

fn about(args: &BisectArgs, repro: &Reproducer, session: &Session) -> About {
    About {
        kind: kind(args),
        signal: repro.signal.describe(),
        program: repro.name.clone(),
        finding: repro.finding.as_ref().map(|(_, sig)| sig.clone()),
        seconds: session.state.elapsed_secs,
    }
}

fn kind(args: &BisectArgs) -> Kind {
    if args.fix {
        Kind::Fix
    } else {
        Kind::Regression
    }
}

fn run_git(env: &Env, args: &BisectArgs, repo: &Path) -> Result<ExitCode> {
    let (Some(good), Some(bad)) = (&args.good, &args.bad) else {
        bail!("git mode needs --good REV and --bad REV");
    };
    let fragments = crate::kbuild::cli::resolve_fragments(&env.cache, &args.fragments)?;
    let base = crate::kbuild::BaseConfig::parse(&args.kconfig)?;
    let build_identity = match &args.build_cmd {
        Some(cmd) => format!("cmd:{cmd}"),
        None => {
            let mut k = crate::cache::KeyBuilder::default().part("base", base.identity()?);
            for f in &fragments {
                k = k.part("fragment", crate::cache::sha256_file(f)?);
            }
            format!("kbuild:{}", k.finish())
        }
    };
    let git = GitBisect::new(repo);
    let (good, bad) = (git.commit(good)?, git.commit(bad)?);
    let seed_from = match &args.reuse_build {
        Some(name) => Some(reused_build(env, name)?),
        None => None,
    };
    let repro = reproducer(args)?;
    let signal = &repro.signal;
    let settings = settings(args)?;
    let key = bisection_key(args, &repro.program, signal, &settings)?
        .part("good", &good)
        .part("bad", &bad)
        .part("build", &build_identity);
    let (old, new) = kind(args).old_new(&good, &bad);
    let header = format!(
        "bisect{}: {} .. {} in {}; {}",
        if args.fix { " --fix" } else { "" },
        &old[..12],
        &new[..12],
        repo.display(),
        signal.describe()
    );
    let (bar, mut session) = start(args, &header, key.finish(), signal, settings)?;
    let status_bar = bar.clone();
    let mut kernels: Box<dyn super::git::StepKernels> = match &args.build_cmd {
        Some(cmd) => Box::new(CommandKernels {
            repo: repo.to_path_buf(),
            command: cmd.clone(),
            dir: std::path::absolute(&args.out)?,
            status: Box::new(move |m| status_bar.set_message(m)),
        }),
        None => Box::new(super::build::KbuildKernels {
            cache: env.cache.clone(),
            repo: repo.to_path_buf(),
            base,
            fragments,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            seed_from,
            probe: repro.signal.reads_refcounts(),
        }),
    };
    let mut tester = vm_tester(env, args, &repro, &bar);
    let result = git.run(&mut session, kernels.as_mut(), &mut tester, &good, &bad);
    bar.finish_and_clear();
    let result = result?;
    let bisection = Bisection::of_git(about(args, &repro, &session), repo, &result);
    finish(args, &repro, &bisection)
}

/// The output directory and source tree of built kernel `name`.
fn reused_build(env: &Env, name: &str) -> Result<(PathBuf, PathBuf)> {
    let Some(image) = crate::kbuild::built_bzimage(&env.cache, name)? else {
        bail!(
            "--reuse-build {name}: no kernel of that name was built here; \
             `daxdiff kernel build --name {name} …` makes one"
        );
    };
    let sum = crate::cache::sha256_file(&image)?;
    crate::kbuild::seed::find_output(&env.cache, &sum)
        .with_context(|| format!("--reuse-build {name}"))
}

/// What runs in each guest and what makes a run bad.
struct Reproducer {
    program: String,
    /// Where the program came from, for the result.
    name: String,
    signal: Signal,
    /// With `--finding`: its directory and signature (the result is written there).
    finding: Option<(PathBuf, String)>,
}

fn reproducer(args: &BisectArgs) -> Result<Reproducer> {
    match (&args.prog, &args.finding) {
        (Some(p), None) => {
            // Parse it now: a typo should not cost a kernel download.
            let prog = crate::exec::load_program(p)?;
            Ok(Reproducer {
                program: prog.to_text(),
                name: p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().to_string(),
                ),
                signal: Signal::BadIf(args.bad_if.clone()),
                finding: None,
            })
        }
        (None, Some(dir)) => {
            if !args.bad_if.is_empty() {
                bail!("--bad-if goes with --prog; a finding brings its own signal");
            }
            let (program, signal) = load_finding(dir)?;
            let signal = if args.fix { signal.for_fix() } else { signal };
            let finding = crate::repro::load_finding(dir)?;
            Ok(Reproducer {
                program,
                name: "prog.txt of the finding".into(),
                signal,
                finding: Some((dir.clone(), finding.signature)),
            })
        }
        _ => bail!("say what to run: --prog FILE --bad-if PREDICATE, or --finding DIR"),
    }
}

fn settings(args: &BisectArgs) -> Result<Settings> {
    if !(0.5..1.0).contains(&args.confidence) {
        bail!("--confidence must be at least 0.5 and below 1");
    }
    Ok(Settings {
        end_runs: args.runs.max(1),
        confidence: args.confidence,
        max_runs: args.max_runs.max(1),
        max_boots: args.max_boots.max(1),
    })
}

/// Opens the state, prints the header and sets up progress: a spinner with what is
/// happening, and a line per judged kernel.
fn start<'a>(
    args: &BisectArgs,
    header: &str,
    key: String,
    signal: &'a Signal,
    settings: Settings,
) -> Result<(indicatif::ProgressBar, Session<'a>)> {
    let owner = super::state::own_out(&args.out)?;
    let state = State::open(&args.out.join("state.json"), &key)?;
    let resumed = state.steps.len();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    // Without a terminal the bar is hidden, and so is what it prints: print directly.
    let printer = bar.clone();
    let say = move |line: String| {
        if printer.is_hidden() {
            eprintln!("{line}");
        } else {
            printer.println(line);
        }
    };
    say(header.to_string());
    if resumed > 0 {
        say(format!(
            "resuming: {resumed} kernel(s) already judged in {}",
            args.out.display()
        ));
    }
    let mut session = Session::new(signal, settings, state);
    session.owner = Some(owner);
    session.kind = kind(args);
    let kind = kind(args);
    session.on_record = Box::new(move |r| say(format_record(r, kind)));
    Ok((bar, session))
}

fn vm_tester(
    env: &Env,
    args: &BisectArgs,
    repro: &Reproducer,
    bar: &indicatif::ProgressBar,
) -> VmTester {
    let status_bar = bar.clone();
    VmTester {
        env: env.clone(),
        program: repro.program.clone(),
        timeout: args.timeout,
        probe: repro.signal.reads_refcounts(),
        boot_per_run: args.boot_per_run,
        status: Box::new(move |m| status_bar.set_message(m)),
    }
}

/// Writes `result.json` (and with `--finding` the finding's `bisect.json`), prints the
/// result and says how the command exits.
fn finish(args: &BisectArgs, repro: &Reproducer, b: &Bisection) -> Result<ExitCode> {
    let json = serde_json::to_string_pretty(b)?;
    write_atomic(&args.out.join(RESULT_FILE), json.as_bytes())?;
    if let Some((dir, signature)) = &repro.finding {
        b.record_in_finding(dir, signature)?;
    }
    if args.json {
        crate::output::print(crate::output::Schema::Bisect, b)?;
    } else {
        print!("{}", b.text());
        println!("state and result: {}", args.out.display());
        if let Some((dir, _)) = &repro.finding {
            println!(
                "recorded in {}; `daxdiff report {}` includes it",
                dir.join(super::result::FINDING_JSON).display(),
                dir.display()
            );
        }
    }
    Ok(if b.first_new.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bisection_key(
    args: &BisectArgs,
    program: &str,
    signal: &Signal,
    settings: &Settings,
) -> Result<KeyBuilder> {
    let key = KeyBuilder::default()
        .part("program", program)
        .part("signal", serde_json::to_string(signal)?)
        .part("settings", serde_json::to_string(settings)?);
    // Only a fix adds to the key, so that regression states written before --fix existed
    // still resume.
    let key = if args.fix {
        key.part("kind", "fix")
    } else {
        key
    };
    // Guests of refcount signals had no probe before, and every run read "good": such
    // states are not resumed.
    let key = if signal.reads_refcounts() {
        key.part("refcounts", "probe in every guest")
    } else {
        key
    };
    Ok(if args.boot_per_run {
        key.part("runs", "one per boot")
    } else {
        key
    })
}

/// One line per judged kernel.
pub fn format_record(r: &StepRecord, kind: Kind) -> String {
    let role = match r.role {
        Role::GoodEnd => "good end",
        Role::BadEnd => "bad end ",
        Role::Step => "step    ",
        Role::Parent => "parent  ",
    };
    let verdict = match (r.role, r.verdict) {
        (Role::GoodEnd | Role::BadEnd, _) => String::new(),
        (_, v @ (StepVerdict::Good | StepVerdict::Bad)) => {
            format!("{} ({:.3})", kind.verdict_word(v), r.confidence)
        }
        (_, v) => v.to_string(),
    };
    let mut line = format!(
        "  {role} {:<22} {:<24} {:<14} {:<24} {} boot(s), {}",
        short_label(&r.label),
        r.kernel,
        verdict,
        r.tally.to_string(),
        r.boots,
        duration(r.seconds)
    );
    if let Some(b) = r.build_secs {
        line.push_str(&format!(", built in {}", duration(b)));
    }
    if let Some(n) = &r.note {
        line.push_str(&format!("  [{}]", n.lines().next().unwrap_or("")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bisect: BisectArgs,
    }

    fn key(extra: &[&str], bad_if: &str) -> String {
        let mut argv = vec!["bisect", "--git", "r", "--good", "a", "--bad", "b"];
        argv.extend(["--prog", "p", "--bad-if", bad_if]);
        argv.extend(extra);
        let args = Cli::try_parse_from(argv).unwrap().bisect;
        let signal = Signal::BadIf(vec![bad_if.parse().unwrap()]);
        bisection_key(&args, "prog", &signal, &Settings::default())
            .unwrap()
            .finish()
    }

    #[test]
    fn a_state_is_resumed_only_by_a_bisection_that_judges_runs_the_same_way() {
        let report = key(&[], "report WARNING");
        assert_eq!(report, key(&[], "report WARNING"));
        // One boot per run measures something else than runs in one guest.
        assert_ne!(report, key(&["--boot-per-run"], "report WARNING"));
        assert_ne!(
            key(&[], "problem refcount underflow"),
            key(&["--boot-per-run"], "problem refcount underflow")
        );
    }
}
