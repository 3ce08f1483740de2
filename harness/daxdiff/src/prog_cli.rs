//! The `prog` subcommand: syzkaller program text in (`import`) and out (`export`).
//! Arguments, files and warnings only; the conversion is `daxdiff_prog::syz`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use daxdiff_prog::syz::{self, ExportOptions, ImportOptions, Refusal};
use daxdiff_prog::{FileTarget, Target};

#[derive(Subcommand, Debug)]
pub enum ProgCmd {
    /// Convert a syzkaller program (as syzbot's "syz repro" shows it) into daxdiff's text form
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Convert a daxdiff program into syzkaller's text form, where its calls have counterparts
    #[command(after_help = EXPORT_HELP)]
    Export(ExportArgs),
}

const IMPORT_HELP: &str = "Relative file names (./file0) are files on the --target mount; \
/dev/daxN.M is the devdax device; a comment line `# daxdiff target: xfs` before a call \
overrides --target for it. Addresses inside an earlier mmap become &rN+0x..., other pointers \
scratch buffers; MAP_FIXED is dropped; (async) runs the call on the second thread [t1]. \
Calls daxdiff does not describe are refused, each named with its line and the reason.";

const EXPORT_HELP: &str = "Mappings and buffers are laid out in syzkaller's 16 MiB data area \
(mapped MAP_FIXED); files off ext4 get a `# daxdiff target: ...` comment so `prog import` \
puts them back. daxdiff_pipe is pipe2 and daxdiff_uring_setup io_uring_setup; the other \
daxdiff_* pseudo-calls have no syzkaller counterpart and are refused (--skip-unknown writes \
them as `# daxdiff only: ...` comments).";

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// syzkaller program text ("-" reads standard input)
    pub file: PathBuf,
    /// Write the daxdiff program here instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Mount for relative file names: ext4, xfs or nodax (the non-DAX ext4), or blkdev
    #[arg(long, default_value = "ext4", value_parser = parse_target)]
    pub target: FileTarget,
    /// Drop the calls daxdiff cannot express (and the calls using what they made), with a
    /// warning naming each, instead of refusing the program
    #[arg(long)]
    pub skip_unknown: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// daxdiff program (text form; "-" reads standard input)
    pub file: PathBuf,
    /// Write the syzkaller program here instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Write calls without a syzkaller counterpart as comments, with a warning naming each,
    /// instead of refusing the program
    #[arg(long)]
    pub skip_unknown: bool,
}

fn parse_target(s: &str) -> Result<FileTarget, String> {
    match syz::file_target(s) {
        Some(FileTarget::Devdax) | None => Err(format!(
            "unknown mount `{s}`: use ext4, xfs, nodax or blkdev (devdax paths are /dev/daxN.M)"
        )),
        Some(t) => Ok(t),
    }
}

pub fn run(cmd: ProgCmd) -> Result<ExitCode> {
    let target = Target::builtin();
    match cmd {
        ProgCmd::Import(a) => {
            let text = read_input(&a.file)?;
            let opts = ImportOptions {
                target: a.target,
                skip_unknown: a.skip_unknown,
            };
            let im = syz::import(target, &text, &opts)
                .with_context(|| format!("import {}", a.file.display()))?;
            warn("dropped", &im.skipped);
            warn("note", &im.notes);
            let out = im.program.to_text();
            // What is written must be what daxdiff itself reads; a failure here is a bug.
            daxdiff_prog::parse(target, &out)
                .map_err(|e| anyhow::anyhow!("imported program does not parse ({e}):\n{out}"))?;
            write_output(a.output.as_deref(), &out)?;
        }
        ProgCmd::Export(a) => {
            let text = read_input(&a.file)?;
            let prog = daxdiff_prog::parse(target, &text)
                .map_err(|e| anyhow::anyhow!("{}:{e}", a.file.display()))?;
            let opts = ExportOptions {
                skip_unknown: a.skip_unknown,
            };
            let ex = syz::export(target, &prog, &opts)
                .with_context(|| format!("export {}", a.file.display()))?;
            warn("left as a comment", &ex.skipped);
            write_output(a.output.as_deref(), &ex.program.to_text())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn warn(what: &str, list: &[Refusal]) {
    for r in list {
        eprintln!("warning: {what}: {r}");
    }
}

fn read_input(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn write_output(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("write {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
