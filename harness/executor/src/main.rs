//! `daxdiff-exec`: the guest-side agent. Thin dispatch over the library's subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use daxdiff_exec::{bringup, status, topology};

const USAGE: &str = "usage: daxdiff-exec <command>
  --version   print the version
  bringup     configure the NVDIMMs named by daxdiff.pmem= and mount DAX filesystems
  status      re-check DAX mounts and devices recorded by bringup";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("daxdiff-exec {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("bringup") => report(bringup::run(&bringup::Options::default())),
        Some("status") => report(status::run(&PathBuf::from(topology::TOPOLOGY_PATH))),
        Some("--help") | Some("-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
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
