//! The `daxdiff` command: argument parsing and wiring; the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use daxdiff::catalogue::KernelSource;
use daxdiff::images::KernelStore;
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::{reaper, MachineProfile};

#[derive(Parser)]
#[command(
    name = "daxdiff",
    version,
    about = "Differential fuzzing and regression harness for Linux DAX page reference counting",
    after_help = "Exit status: 0 success (nothing found); 1 the command's finding (a divergence or crash, \
a suite regression, a reproducer that did not reproduce: each command's --help says which); \
2 a runtime error (the message names the thing and the fix); 64 a usage error (bad option or \
argument; nothing was run)."
)]
struct Cli {
    /// Cache for kernels, guest images and package lists [env: DAXDIFF_CACHE; default: XDG cache dir]
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    /// Kernel catalogue to use instead of the shipped vm-images/kernels.toml
    #[arg(long, global = true)]
    catalogue: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Kernels and guest images
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Boot a guest, run a command in one, or get a shell
    #[command(subcommand)]
    Vm(VmCmd),
    /// Run programs on one kernel and print per-call results
    Run {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
        /// How long each program may run (30s, 2m; a bare number is seconds)
        #[arg(long, default_value = "30s", value_parser = daxdiff::duration::parse)]
        timeout: Duration,
        /// Print each program's response as a JSON line instead of the table
        #[arg(long)]
        json: bool,
        /// After each program, unmount and mount the DAX filesystems and disable and enable
        /// the device-dax device, each under a deadline (teardown liveness)
        #[arg(long)]
        teardown: bool,
        /// Program files (text form)
        #[arg(required = true)]
        programs: Vec<PathBuf>,
    },
    /// Benchmarks that print figures
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Fuzz kernel A against kernel B; stable divergences and kernel reports go to a workdir
    Fuzz(daxdiff::fuzz::cli::FuzzArgs),
    /// Summarize a fuzzing workdir's findings
    Show(daxdiff::fuzz::cli::ShowArgs),
    /// Triage a finding: minimize its program, measure reliability, verify a C reproducer, write report.txt
    Repro(daxdiff::repro::cli::ReproArgs),
    /// Write (and print) a finding's mailing-list report from what its directory holds
    Report(daxdiff::repro::cli::ReportArgs),
    /// The probe's reference counts before each program and after its teardown
    Refcounts {
        /// Kernels to read on (one table each)
        #[arg(long = "kernel", required = true)]
        kernels: Vec<String>,
        /// How long to wait after a program for the counts to return to its baseline (5s; a
        /// bare number is seconds)
        #[arg(long, default_value = "5s", value_parser = daxdiff::duration::parse)]
        settle: Duration,
        /// How long each program may run (30s, 2m; a bare number is seconds)
        #[arg(long, default_value = "30s", value_parser = daxdiff::duration::parse)]
        timeout: Duration,
        /// Print each kernel's readings as a JSON line instead of the table
        #[arg(long)]
        json: bool,
        /// After each program, unmount and mount the DAX filesystems and disable and enable
        /// the device-dax device, each under a deadline (teardown liveness)
        #[arg(long)]
        teardown: bool,
        /// Program files (text form); default: the seed corpus in corpora/
        programs: Vec<PathBuf>,
    },
    /// Build kernels under test (source + patch series + config fragments, KASAN/KCOV)
    #[command(subcommand)]
    Kernel(daxdiff::kbuild::cli::KernelCmd),
    /// Run ndctl's dax test suite on kernel A and kernel B and compare per test
    Suite(daxdiff::suite::cli::SuiteArgs),
    /// Find the first kernel (served Debian version or git revision) where a reproducer changes
    Bisect(daxdiff::bisect::cli::BisectArgs),
    /// syzkaller programs in and out: import a syzbot reproducer, export a daxdiff program
    #[command(subcommand)]
    Prog(daxdiff::prog_cli::ProgCmd),
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Each kernel of the catalogue: version, refcount scheme, what is cached
    #[command(
        after_help = "Exit status: 0 every kernel resolves; 1 some do not (each is named with the reason); \
2 none does, or an error."
    )]
    List {
        /// Refresh the package lists first and resolve each Debian kernel to today's version
        #[arg(long)]
        refresh: bool,
        /// Print the list as JSON (with a `schema` version) instead of the table
        #[arg(long)]
        json: bool,
        /// Hash every file of every cache entry (every use checks only that each file is
        /// there with its size); a damaged entry is built again at its next use
        #[arg(long)]
        verify: bool,
    },
    /// Fetch kernels and build their guest images now
    Fetch {
        /// Kernels to fetch, by catalogue name (repeatable)
        #[arg(long = "kernel", required = true)]
        kernels: Vec<String>,
        /// Print what was fetched as JSON (with a `schema` version) instead of lines
        /// Print the figures as JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Boot, print the ready time and how to connect, stay up until Ctrl-C
    Boot {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
    },
    /// Boot, run CMD in the guest, print its output, exit with its status
    Run {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
        /// How long CMD may run (10m, 90s; a bare number is seconds)
        #[arg(long, default_value = "10m", value_parser = daxdiff::duration::parse)]
        timeout: Duration,
        /// Copy a host file into the guest first: LOCAL:GUEST_PATH (repeatable)
        #[arg(long = "put", value_name = "LOCAL:GUEST_PATH")]
        put: Vec<String>,
        /// Afterwards, print the kernel reports the console shows, symbolized to file:line
        /// when the kernel has a vmlinux (Debian kernels: the -dbg package, fetched once)
        #[arg(long)]
        reports: bool,
        /// The command and its arguments, run by the guest's shell after `--`
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Boot and open an interactive shell (the system ssh client)
    Shell {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Program pairs per second and host memory of one VM pair, from a short real campaign
    Fuzz {
        /// Kernel A (the base)
        #[arg(long, default_value = "debian-6.12")]
        a: String,
        /// Kernel B (compared against A)
        #[arg(long, default_value = "debian-7.3")]
        b: String,
        /// Program pairs to run
        #[arg(long, default_value_t = 60)]
        execs: u64,
        /// Start from this seed corpus (e.g. corpora, as the default campaign does) instead
        /// of generated programs only
        #[arg(long)]
        seeds: Option<PathBuf>,
        /// Boot every replacement guest instead of restoring the snapshot (the figures
        /// before snapshots, in the same conditions)
        #[arg(long)]
        boot_fresh: bool,
        /// Print the figures as JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Programs/second through the controller against the same programs looped in the guest
    Exec {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
        /// Seed corpus directory
        #[arg(long, default_value = "corpora")]
        corpus: PathBuf,
        /// Times the corpus is run through each path
        #[arg(long, default_value_t = 3)]
        rounds: u64,
        /// Print the figures as JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Boot-to-ready split by phase against the bare boot-to-init floor
    Boot {
        /// Kernel to boot, by catalogue name (`daxdiff images list`)
        #[arg(long)]
        kernel: String,
        /// Boots to measure (the median is printed)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print the figures as JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    reaper::install_signal_handler();
    // `daxdiff show W --json | head` ends quietly, as other tools do, instead of panicking on
    // the closed pipe; our guests die with us (their parent-death signal).
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let env = Env {
        cache: cli
            .cache
            .clone()
            .unwrap_or_else(daxdiff::cache::default_dir),
        catalogue: cli.catalogue.clone(),
    };
    match run(cli.cmd, &env) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("daxdiff: error: {e:#}");
            reaper::kill_all();
            ExitCode::from(2)
        }
    }
}

/// Exit status of a command line that could not be parsed: 64 (EX_USAGE), so scripts tell
/// it from a runtime error (2); `--help` and `--version` are not errors.
const EXIT_USAGE: u8 = 64;

fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The kernel reports in `console`, symbolized when the kernel allows.
fn print_reports(env: &Env, kernel: &daxdiff::images::Kernel, console: &str) {
    let found = daxdiff_observe::parse(console);
    println!("kernel reports: {}", found.len());
    if found.is_empty() {
        return;
    }
    let mut sym = match daxdiff::symbolize::Symbolizer::for_kernel(&env.cache, kernel) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("reports stay unsymbolized: {e:#}");
            None
        }
    };
    for r in &found {
        let text = match sym.as_mut() {
            Some(s) => s.symbolize(&r.text),
            None => r.text.clone(),
        };
        // The parser reads the symbolized text back: the guilty frame now has its file:line.
        let located = daxdiff_observe::parse(&text)
            .into_iter()
            .next()
            .and_then(|p| {
                p.frames
                    .iter()
                    .find_map(|f| f.location.clone())
                    .map(|l| l.to_string())
            });
        println!(
            "\n== {} [{}]{}\n{}",
            r.title,
            r.signature.as_str(),
            located.map(|l| format!(" at {l}")).unwrap_or_default(),
            text.trim_end()
        );
    }
}

fn run(cmd: Cmd, env: &Env) -> Result<ExitCode> {
    match cmd {
        Cmd::Images(ImagesCmd::List {
            refresh,
            json,
            verify,
        }) => {
            let code = images_list(env, refresh, json)?;
            if verify {
                return verify_cache(env);
            }
            Ok(code)
        }
        Cmd::Images(ImagesCmd::Fetch { kernels, json }) => {
            let mut fetched = Vec::new();
            for k in kernels {
                let p = prepare(env, &k)?;
                if !json {
                    println!(
                        "{}\t{}\t{}\t{}",
                        k,
                        p.kernel.version,
                        p.kernel.release,
                        p.image.initramfs.display()
                    );
                }
                fetched.push(serde_json::json!({
                    "name": k, "version": p.kernel.version, "release": p.kernel.release,
                    "scheme": p.kernel.scheme.to_string(), "bzimage": p.kernel.bzimage,
                    "initramfs": p.image.initramfs,
                }));
            }
            if json {
                daxdiff::output::print(
                    daxdiff::output::Schema::ImagesFetch,
                    &serde_json::json!({ "kernels": fetched }),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Vm(VmCmd::Boot { kernel }) => {
            let p = prepare(env, &kernel)?;
            eprintln!(
                "booting {kernel} ({}, {}) under {}",
                p.kernel.release, p.kernel.version, p.accel
            );
            let vm = p.boot(MachineProfile::default(), None)?;
            print_ready(&vm);
            println!("connect: {}", ssh_command(&vm));
            println!("console log: {}", vm.run_dir.join("console.log").display());
            println!("qemu pid: {}", vm.pid().unwrap_or(0));
            println!("Ctrl-C stops the guest.");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Cmd::Vm(VmCmd::Run {
            kernel,
            timeout,
            put,
            reports,
            cmd,
        }) => {
            let uploads = put
                .iter()
                .map(|p| {
                    let (local, remote) = p
                        .split_once(':')
                        .with_context(|| format!("--put {p}: expected LOCAL:GUEST_PATH"))?;
                    let data =
                        std::fs::read(local).with_context(|| format!("--put: read {local}"))?;
                    Ok((data, remote.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let p = prepare(env, &kernel)?;
            let mut vm = p.boot(MachineProfile::default(), None)?;
            eprintln!("{kernel}: ready in {:.1}s", vm.times.ready.as_secs_f64());
            for (data, remote) in &uploads {
                vm.ssh()?.upload(data, remote, 0o755)?;
            }
            let line = cmd
                .iter()
                .map(|w| daxdiff::vm::profile::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ");
            let out = vm.run(&line, timeout)?;
            use std::io::Write;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            if reports {
                // Reports may still be printing: give the console a moment.
                std::thread::sleep(Duration::from_secs(2));
                let console = std::fs::read_to_string(vm.run_dir.join("console.log"))?;
                print_reports(env, &p.kernel, &console);
            }
            vm.shutdown()?;
            Ok(ExitCode::from(out.status.clamp(0, 255) as u8))
        }
        Cmd::Vm(VmCmd::Shell { kernel }) => {
            let p = prepare(env, &kernel)?;
            let vm = p.boot(MachineProfile::default(), None)?;
            print_ready(&vm);
            let ssh = vm.ssh_command();
            let status = std::process::Command::new(&ssh[0])
                .args(&ssh[1..])
                .status()
                .context("run ssh (package openssh-client)")?;
            vm.shutdown()?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        Cmd::Run {
            kernel,
            timeout,
            json,
            teardown,
            programs,
        } => {
            let progs: Vec<_> = programs
                .iter()
                .map(|p| daxdiff::exec::load_program(p).map(|x| (p, x)))
                .collect::<Result<_>>()?;
            let p = prepare(env, &kernel)?;
            let vm = p.boot(MachineProfile::default(), None)?;
            eprintln!("{kernel}: ready in {:.1}s", vm.times.ready.as_secs_f64());
            let mut runner = daxdiff::exec::Runner::start(&vm)?;
            for (path, prog) in &progs {
                let r = runner.run_with(&vm, &prog.to_text(), timeout, teardown)?;
                if json {
                    println!(
                        "{}",
                        daxdiff::output::line(
                            daxdiff::output::Schema::Run,
                            &serde_json::json!({"program": path, "kernel": kernel, "response": r})
                        )?
                    );
                } else {
                    println!("== {} on {kernel}", path.display());
                    print!("{}", daxdiff::exec::format_response(prog, &r));
                }
            }
            drop(runner);
            vm.shutdown()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fuzz(args) => daxdiff::fuzz::cli::run_fuzz(env, args),
        Cmd::Show(args) => daxdiff::fuzz::cli::run_show(args),
        Cmd::Repro(args) => daxdiff::repro::cli::run_repro(env, args),
        Cmd::Report(args) => daxdiff::repro::cli::run_report(env, args),
        Cmd::Refcounts {
            kernels,
            settle,
            timeout,
            json,
            teardown,
            programs,
        } => refcounts(env, &kernels, &programs, timeout, settle, json, teardown),
        Cmd::Suite(args) => daxdiff::suite::cli::run_suite(env, args),
        Cmd::Kernel(cmd) => daxdiff::kbuild::cli::run(env, cmd).map(|()| ExitCode::SUCCESS),
        Cmd::Bisect(args) => daxdiff::bisect::cli::run_bisect(env, args),
        Cmd::Prog(cmd) => daxdiff::prog_cli::run(cmd),
        Cmd::Bench(BenchCmd::Exec {
            kernel,
            corpus,
            rounds,
            json,
        }) => {
            let progs = daxdiff::exec::load_corpus(&corpus)?;
            let p = prepare(env, &kernel)?;
            let mut vm = p.boot(MachineProfile::default(), None)?;
            let b = daxdiff::exec::bench(&mut vm, &progs, rounds, Duration::from_secs(30))?;
            vm.shutdown()?;
            if json {
                daxdiff::output::print(daxdiff::output::Schema::BenchExec, &b)?;
            } else {
                println!(
                    "kernel {}: {} programs x {} rounds",
                    b.kernel, b.programs, b.rounds
                );
                println!(
                    "  through the controller   {:.2} programs/s",
                    b.controller_per_second
                );
                println!(
                    "  looped inside the guest  {:.2} programs/s",
                    b.in_guest_per_second
                );
                println!("  controller / in-guest = {:.2} (target >= 0.80)", b.ratio);
                if !b.in_guest_step_ms.is_empty() {
                    println!("  in-guest ms per program, by step:");
                    for (step, ms) in &b.in_guest_step_ms {
                        println!("    {step:<12} {ms:9.1}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(BenchCmd::Fuzz {
            a,
            b,
            execs,
            seeds,
            boot_fresh,
            json,
        }) => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            let opts = daxdiff::bench::FuzzBenchOptions { seeds, boot_fresh };
            let f = daxdiff::bench::fuzz(&a, &b, execs, &opts, |m| {
                bar.set_message(format!("{a} vs {b}: {m}"))
            })?;
            bar.finish_and_clear();
            if json {
                daxdiff::output::print(daxdiff::output::Schema::BenchFuzz, &f)?;
            } else {
                println!(
                    "{} vs {}: {} program pairs (+{} stability re-runs) in {:.0}s",
                    f.a, f.b, f.execs, f.reruns, f.seconds
                );
                println!(
                    "  {:.2} program pairs/s per VM pair ({} VM restarts; {}, {})",
                    f.execs_per_second,
                    f.vm_restarts,
                    if f.seeds {
                        "seed corpus"
                    } else {
                        "generated only"
                    },
                    if f.boot_fresh {
                        "replacements booted"
                    } else {
                        "replacements restored"
                    }
                );
                for (k, t) in [(&f.a, &f.time_a), (&f.b, &f.time_b)] {
                    println!(
                        "  {k}: programs {:.0}s (teardown {:.0}s of it), boots {:.0}s, restores {:.0}s ({} restores, {} failed)",
                        t.programs_secs, t.teardown_secs, t.boot_secs, t.restore_secs, t.restores, t.restore_failures
                    );
                }
                println!(
                    "  host memory per VM pair: guests {:.0} MiB peak + controller {:.0} MiB peak",
                    f.guests_peak_rss_mib, f.controller_peak_rss_mib
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(BenchCmd::Boot { kernel, runs, json }) => {
            let p = prepare(env, &kernel)?;
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            let b = daxdiff::bench::boot(&p, runs, |m| bar.set_message(format!("{kernel}: {m}")))?;
            bar.finish_and_clear();
            if json {
                daxdiff::output::print(daxdiff::output::Schema::BenchBoot, &b)?;
            } else {
                let s = |d: Duration| format!("{:.2}s", d.as_secs_f64());
                println!(
                    "kernel {} ({}), {} runs, accel {}",
                    b.kernel, p.kernel.version, b.runs, b.accel
                );
                println!(
                    "  median kernel boot (QEMU start → init)   {}",
                    s(b.median.kernel)
                );
                println!(
                    "  median bring-up (init → DAX verified)     {}",
                    s(b.median.bringup)
                );
                println!(
                    "  median SSH ready (QEMU start → SSH)       {}",
                    s(b.median.ssh)
                );
                println!(
                    "  median ready                              {}",
                    s(b.median.ready)
                );
                println!(
                    "  median bare boot (QEMU start → init)      {}",
                    s(b.bare_median)
                );
                println!("  ready / bare = {:.2} (target ≤ 1.50)", b.ratio);
                println!(
                    "  median restore from snapshot (to SSH)     {} (load {}; target ≤ 3 s)",
                    s(b.restore_median),
                    s(b.restore_load_median)
                );
                println!(
                    "  snapshot: saved in {}, {:.0} MiB of state",
                    s(b.snapshot_save),
                    b.snapshot_state_bytes as f64 / (1u64 << 20) as f64
                );
                println!(
                    "  boot / restore = {:.1}",
                    b.median.ready.as_secs_f64() / b.restore_median.as_secs_f64().max(1e-9)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn refcounts(
    env: &Env,
    kernels: &[String],
    programs: &[PathBuf],
    timeout: Duration,
    settle: Duration,
    json: bool,
    teardown: bool,
) -> Result<ExitCode> {
    let progs = if programs.is_empty() {
        daxdiff::exec::load_corpus(std::path::Path::new("corpora"))?
    } else {
        programs
            .iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                daxdiff::exec::load_program(p).map(|x| (name, x))
            })
            .collect::<Result<_>>()?
    };
    for kernel in kernels {
        let p = prepare(env, kernel)?;
        let boot = || p.boot(MachineProfile::default(), None);
        let rows = daxdiff::refcounts::run_programs(&boot, &progs, timeout, settle, teardown)?;
        if json {
            println!(
                "{}",
                daxdiff::output::line(
                    daxdiff::output::Schema::Refcounts,
                    &serde_json::json!({"kernel": kernel, "programs": rows})
                )?
            );
            continue;
        }
        if let Some(first) = rows.first() {
            println!("{kernel}: counts at boot");
            print!("{}", daxdiff::refcounts::format_reading(&first.baseline));
        }
        print!("{}", daxdiff::refcounts::format_table(kernel, &rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_ready(vm: &daxdiff::vm::Vm) {
    let t = &vm.times;
    println!(
        "{}: ready in {:.1}s (kernel {:.1}s, bring-up {:.1}s, ssh at {:.1}s)",
        vm.kernel_name,
        t.ready.as_secs_f64(),
        t.kernel.as_secs_f64(),
        t.bringup.as_secs_f64(),
        t.ssh.as_secs_f64()
    );
    for f in &vm.topology.fs {
        println!(
            "  {} on {} at {}: dax {}",
            f.role,
            f.blockdev,
            f.mountpoint,
            if f.dax { "on" } else { "OFF" }
        );
    }
    for d in &vm.topology.devdax {
        println!("  devdax {}", d.chardev);
    }
    if let Some(n) = &vm.topology.nodax {
        println!(
            "  nodax on {} at {}: dax off, {} ms a request",
            n.blockdev, n.mountpoint, n.delay_ms
        );
    }
    if let Some(b) = &vm.topology.blkdev {
        println!(
            "  blkdev {} ({} MiB, no data kept)",
            b.blockdev,
            b.size >> 20
        );
    }
}

fn ssh_command(vm: &daxdiff::vm::Vm) -> String {
    vm.ssh_command().join(" ")
}

/// One kernel of `images list`: what its name resolves to today, or why it does not.
#[derive(serde::Serialize)]
struct KernelRow {
    name: String,
    kind: &'static str,
    /// The package version (or `local`); absent when the kernel does not resolve.
    version: Option<String>,
    release: Option<String>,
    scheme: Option<String>,
    cached: bool,
    /// Why the kernel does not resolve (no package, an unreachable mirror, a broken build).
    error: Option<String>,
}

fn images_list(env: &Env, refresh: bool, json: bool) -> Result<ExitCode> {
    let cat = env.catalogue()?;
    let store = KernelStore::new(&env.cache);
    let mut rows = Vec::new();
    for entry in cat.kernels.values() {
        let cached = store.cached(entry);
        let resolved: Result<(String, String, Option<String>)> = match (&entry.source, &cached) {
            (_, Some(k)) if !refresh => Ok((
                k.version.clone(),
                k.release.clone(),
                Some(k.scheme.to_string()),
            )),
            (KernelSource::Debian { scheme, .. }, _) => store.resolve_debian(entry).map(|d| {
                let sch = scheme.or_else(|| daxdiff::catalogue::Scheme::for_version(&d.release));
                (d.version, d.release, sch.map(|s| s.to_string()))
            }),
            (KernelSource::Local { .. }, _) => store
                .get(entry)
                .map(|k| (k.version, k.release, Some(k.scheme.to_string()))),
        };
        let row = match resolved {
            Ok((version, release, scheme)) => KernelRow {
                name: entry.name.0.clone(),
                kind: kind_of(&entry.source),
                cached: store.cached(entry).is_some_and(|k| k.version == version),
                version: Some(version),
                release: Some(release),
                scheme,
                error: None,
            },
            Err(e) => KernelRow {
                name: entry.name.0.clone(),
                kind: kind_of(&entry.source),
                version: None,
                release: None,
                scheme: None,
                cached: false,
                error: Some(format!("{e:#}")),
            },
        };
        rows.push(row);
    }
    let unresolved = rows.iter().filter(|r| r.error.is_some()).count();
    if json {
        daxdiff::output::print(
            daxdiff::output::Schema::ImagesList,
            &serde_json::json!({ "cache": env.cache, "kernels": rows }),
        )?;
    } else {
        println!(
            "{:<14} {:<7} {:<22} {:<26} {:<6} cached",
            "kernel", "kind", "version", "release", "scheme"
        );
        for r in &rows {
            println!(
                "{:<14} {:<7} {:<22} {:<26} {:<6} {}",
                r.name,
                r.kind,
                r.version.as_deref().unwrap_or("unresolved"),
                r.release.as_deref().unwrap_or(""),
                r.scheme.as_deref().unwrap_or("?"),
                if r.cached { "yes" } else { "no" }
            );
        }
        // Kernels that fail for one reason (an unreachable mirror) are named together.
        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
        for r in &rows {
            let Some(e) = r.error.as_deref() else {
                continue;
            };
            match reasons.iter_mut().find(|(why, _)| *why == e) {
                Some((_, names)) => names.push(&r.name),
                None => reasons.push((e, vec![&r.name])),
            }
        }
        for (why, names) in reasons {
            println!("{}: {why}", names.join(", "));
        }
        println!("cache: {}", env.cache.display());
    }
    if unresolved > 0 && unresolved == rows.len() {
        anyhow::bail!(
            "none of the {} kernels of the catalogue resolves (reasons above)",
            rows.len()
        );
    }
    Ok(if unresolved > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `images list --verify`: every entry of the cache, hashed.
fn verify_cache(env: &Env) -> Result<ExitCode> {
    use daxdiff::cache::{Depth, Verdict};
    let mut damaged = 0;
    for e in daxdiff::cache::entries(&env.cache) {
        let started = std::time::Instant::now();
        let verdict = e.inspect(Depth::Hashes);
        let secs = started.elapsed().as_secs_f64();
        let shown = e.dir.strip_prefix(&env.cache).unwrap_or(&e.dir).display();
        match verdict {
            Verdict::Intact(_) => println!("ok       {shown} ({secs:.1} s)"),
            Verdict::Older(m) => println!(
                "ok       {shown}: made by an older daxdiff, only its {} named file(s) checked \
                 (its next use records the rest)",
                m.files.len()
            ),
            Verdict::Damaged(why) => {
                damaged += 1;
                e.invalidate()?;
                println!("DAMAGED  {shown}: {why}; it is built again at its next use");
            }
            Verdict::Incomplete => {
                println!("partial  {shown}: never finished; built again at its next use")
            }
        }
    }
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn kind_of(s: &KernelSource) -> &'static str {
    match s {
        KernelSource::Debian { .. } => "debian",
        KernelSource::Local { .. } => "local",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every subcommand says in `--help` what it is for.
    #[test]
    fn every_flag_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "daxdiff", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }

    /// A default is shown once: clap prints `[default: …]` itself.
    #[test]
    fn no_default_is_printed_twice() {
        fn walk(cmd: &mut clap::Command, twice: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            for line in help.lines() {
                if line.matches("[default:").count() > 1 {
                    twice.push(format!("{}: {}", cmd.get_name(), line.trim()));
                }
            }
            for sub in cmd.get_subcommands_mut() {
                walk(sub, twice);
            }
        }
        let mut twice = Vec::new();
        walk(&mut Cli::command(), &mut twice);
        assert!(twice.is_empty(), "{twice:#?}");
    }

    #[test]
    fn a_usage_error_is_not_a_runtime_error() {
        let Err(e) = Cli::try_parse_from(["daxdiff", "fuzz", "--budget", "soon"]) else {
            panic!("a budget of `soon` parsed");
        };
        assert!(e.use_stderr());
        assert!(e.to_string().contains("e.g. 90s"), "{e}");
        let Err(help) = Cli::try_parse_from(["daxdiff", "--help"]) else {
            panic!("--help parsed as a command");
        };
        assert!(!help.use_stderr());
    }

    #[test]
    fn time_options_take_units_and_bare_seconds() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.cmd);
        match parse(&["daxdiff", "fuzz", "--budget", "1h30m", "--timeout", "15"]) {
            Ok(Cmd::Fuzz(f)) => {
                assert_eq!(f.budget, Duration::from_secs(5400));
                assert_eq!(f.timeout, Duration::from_secs(15));
            }
            _ => panic!("fuzz did not parse"),
        }
        match parse(&["daxdiff", "suite"]) {
            Ok(Cmd::Suite(s)) => assert_eq!(s.timeout, daxdiff::suite::DEFAULT_TIMEOUT),
            _ => panic!("suite did not parse"),
        }
    }
}
