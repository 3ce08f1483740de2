//! `daxdiff-exec`: the guest-side agent. Thin dispatch over the library's subcommands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use daxdiff_exec::run::env::RunEnv;
use daxdiff_exec::run::{bench, serve, Executor};
use daxdiff_exec::{bringup, status, topology};
use daxdiff_prog::wire::Request;

const USAGE: &str = "usage: daxdiff-exec <command>
  --version   print the version
  bringup     configure the NVDIMMs named by daxdiff.pmem= and mount DAX filesystems
  status      re-check DAX mounts and devices recorded by bringup
  refcounts   print the reference-count probe's reading (pgmap refs, page refcounts) as JSON
  run [--dirs EXT4DIR,XFSDIR]
              read program requests (JSON lines) on stdin, answer one JSON line each
  loop --count N [--timeout-ms MS] [--dirs EXT4DIR,XFSDIR] [PROGRAM-FILE...]
              run the batch (program files, or requests on stdin) N times and print
              programs/second
Programs run against the topology in /run/daxdiff/topology.json, or against plain
directories given with --dirs (no remount, no device-dax).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("daxdiff-exec {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help") | Some("-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("bringup") => return report(bringup::run(&bringup::Options::default())),
        Some("status") => return report(status::run(Path::new(topology::TOPOLOGY_PATH))),
        Some("refcounts") => cmd_refcounts(),
        Some("run") => cmd_run(&args[1..]),
        Some("loop") => cmd_loop(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daxdiff-exec: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(t: topology::Topology) -> ExitCode {
    println!("{}", t.to_json());
    if t.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{}",
            t.error
                .as_deref()
                .unwrap_or("failed without an error message")
        );
        ExitCode::FAILURE
    }
}

/// Options shared by `run` and `loop`.
#[derive(Default)]
struct Opts {
    dirs: Option<(PathBuf, PathBuf)>,
    count: Option<u64>,
    timeout_ms: u64,
    files: Vec<PathBuf>,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        timeout_ms: 5000,
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--dirs" => {
                let v = value("--dirs")?;
                let (e, x) = v.split_once(',').context("--dirs takes EXT4DIR,XFSDIR")?;
                o.dirs = Some((PathBuf::from(e), PathBuf::from(x)));
            }
            "--count" => {
                o.count = Some(
                    value("--count")?
                        .parse()
                        .context("--count takes a number")?,
                )
            }
            "--timeout-ms" => {
                o.timeout_ms = value("--timeout-ms")?
                    .parse()
                    .context("--timeout-ms takes a number")?
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s => o.files.push(PathBuf::from(s)),
        }
    }
    Ok(o)
}

fn executor(o: &Opts) -> Result<Executor> {
    if let Some((e, x)) = &o.dirs {
        return Ok(Executor::new(RunEnv::plain_dirs(e, x)));
    }
    let path = Path::new(topology::TOPOLOGY_PATH);
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (run `daxdiff-exec bringup` first, or pass --dirs)",
            path.display()
        )
    })?;
    let t: topology::Topology =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if !t.ok {
        bail!(
            "bring-up failed, refusing to run programs: {}",
            t.error.unwrap_or_default()
        );
    }
    Ok(Executor::with_topology(RunEnv::from_topology(&t), t))
}

fn cmd_refcounts() -> Result<()> {
    let topology = std::fs::read_to_string(topology::TOPOLOGY_PATH)
        .ok()
        .and_then(|t| serde_json::from_str::<topology::Topology>(&t).ok());
    let reading = daxdiff_exec::refcounts::read(topology.as_ref())?;
    println!("{}", serde_json::to_string(&reading)?);
    Ok(())
}

fn cmd_run(args: &[String]) -> Result<()> {
    let o = parse_opts(args)?;
    let mut exec = executor(&o)?;
    if o.dirs.is_none() {
        if let Err(e) =
            daxdiff_exec::run::lower_hung_task_timeout(daxdiff_prog::wire::HUNG_TASK_TIMEOUT_SECS)
        {
            eprintln!("daxdiff-exec: could not lower the hung-task timeout: {e}");
        }
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(&mut exec, stdin.lock(), stdout.lock()).context("talking to the controller")
}

fn cmd_loop(args: &[String]) -> Result<()> {
    let o = parse_opts(args)?;
    let count = o.count.context("loop needs --count N")?;
    let batch: Vec<Request> = if o.files.is_empty() {
        BufReader::new(std::io::stdin())
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).context("stdin line is not a JSON Request"))
            .collect::<Result<_>>()?
    } else {
        o.files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let program = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                Ok(Request::new(i as u64, program, o.timeout_ms))
            })
            .collect::<Result<_>>()?
    };
    if batch.is_empty() {
        bail!("loop: no programs given (files as arguments, or requests on stdin)");
    }
    let mut exec = executor(&o)?;
    let r = bench::run(&mut exec, &batch, count);
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
