//! The `kernel` subcommands' arguments and output.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{build, BaseConfig, BuildRequest, SourceSpec};
use crate::catalogue::KernelName;
use crate::setup::Env;

#[derive(Subcommand, Debug)]
pub enum KernelCmd {
    /// Build a kernel from a source, a patch series and config fragments, and register it
    Build(BuildArgs),
    /// Add file:line to the frames of a kernel report (a console log or report text)
    Symbolize {
        /// The kernel that printed the report
        #[arg(long)]
        kernel: String,
        /// File with the report [default: standard input]
        file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  daxdiff kernel build --source linux-source-6.12 --name 6.12-kasan
  daxdiff kernel build --source linux-source-6.1 --patches series.mbox --fixups vm-images/fixups/dax-gup-v2-6.1 --name 6.1-kasan+dax-gup-v2
  daxdiff kernel build --source git:linux@v6.15 --config defconfig --fragment my.config --name mine

The result (bzImage, vmlinux, modules, .config, a build tree for out-of-tree modules) is cached by a hash of the source, \
patches, fixups, config, fragments and compiler, and registered under --name for every command (vm, run, fuzz, suite).")]
pub struct BuildArgs {
    /// linux-source-X.Y[=DEBIAN_VERSION] (fetched from the Debian mirror), git:REPO@REV, or a kernel tree
    #[arg(long)]
    pub source: String,
    /// Patch series: an mbox (as from the list) or a directory of .patch files, applied in order
    #[arg(long)]
    pub patches: Option<PathBuf>,
    /// Directory of fixups: forward-ported versions of patches that do not apply, each with a
    /// `Daxdiff-Fixup-For: <subject>` line
    #[arg(long)]
    pub fixups: Option<PathBuf>,
    /// Base config: lean (allnoconfig + kvm_guest.config), defconfig, or a .config file
    #[arg(long, default_value = "lean")]
    pub config: String,
    /// Config fragments merged in order: a shipped one by name (base, dax, debug, lockdep, suite;
    /// see vm-images/configs/) or a file [default: base, dax, debug]
    #[arg(long = "fragment")]
    pub fragments: Vec<String>,
    /// Name to register the kernel under
    #[arg(long)]
    pub name: String,
    /// Parallel make jobs [default: the number of CPUs]
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Build even when an option a fragment asks for is not in the final .config
    #[arg(long)]
    pub allow_unmet: bool,
    /// Stop after writing the .config (prints its path)
    #[arg(long)]
    pub config_only: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// Fragment arguments: a shipped fragment's name (`dax`, `debug`, `lockdep`, …) or a file.
pub fn resolve_fragments(cache: &std::path::Path, args: &[String]) -> Result<Vec<PathBuf>> {
    let names: Vec<String> = if args.is_empty() {
        super::config::DEFAULT_FRAGMENTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.to_vec()
    };
    names
        .iter()
        .map(|a| match super::config::shipped_fragment(a) {
            Some(text) => {
                let path = cache.join("kbuild/fragments").join(format!("{a}.config"));
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                    crate::cache::write_atomic(&path, text.as_bytes())?;
                }
                Ok(path)
            }
            None => {
                let p = PathBuf::from(a);
                if p.is_file() {
                    Ok(p)
                } else {
                    anyhow::bail!(
                        "config fragment `{a}` is neither a shipped fragment ({}) nor a file",
                        super::config::SHIPPED
                            .iter()
                            .map(|f| f.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
        })
        .collect()
}

pub fn run(env: &Env, cmd: KernelCmd) -> Result<()> {
    match cmd {
        KernelCmd::Symbolize { kernel, file } => {
            let text = match &file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("read {}: {e}", f.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let cat = env.catalogue()?;
            let k = crate::images::KernelStore::new(&env.cache).get(cat.get(&kernel)?)?;
            let mut s = crate::symbolize::Symbolizer::for_kernel(&env.cache, &k)?;
            print!("{}", s.symbolize(&text));
            Ok(())
        }
        KernelCmd::Build(a) => {
            let fragments = resolve_fragments(&env.cache, &a.fragments)?;
            let req = BuildRequest {
                name: KernelName(a.name),
                source: SourceSpec::parse(&a.source)?,
                patches: a.patches,
                fixups: a.fixups,
                base: BaseConfig::parse(&a.config)?,
                fragments,
                jobs: a
                    .jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                allow_unmet: a.allow_unmet,
                config_only: a.config_only,
                register: true,
                seed_from: None,
            };
            let built = build(&env.cache, &req, &env.base_catalogue()?)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&built)?);
            } else if a.config_only {
                // Standard output is the .config's path alone, for scripts; the series report
                // goes to standard error (a cached application prints nothing while applying).
                if !built.patches.is_empty() {
                    eprintln!("series:");
                    for p in &built.patches {
                        eprintln!("  {p}");
                    }
                }
                if let Some(t) = &built.tree {
                    eprintln!("patched tree: {}", t.display());
                }
                if let Some(r) = &built.apply_report {
                    eprintln!("apply report: {}", r.display());
                }
                println!("{}", built.dir.join(".config").display());
            } else {
                if !built.patches.is_empty() {
                    println!("series:");
                    for p in &built.patches {
                        println!("  {p}");
                    }
                }
                println!(
                    "kernel {} ({}) from {}: {}",
                    built.name,
                    built.release,
                    built.source,
                    match built.build_secs {
                        Some(s) => format!(
                            "built in {}",
                            crate::suite::report::fmt_secs(std::time::Duration::from_secs_f64(s))
                        ),
                        None => "cached".into(),
                    }
                );
                println!("  {}", built.dir.display());
            }
            Ok(())
        }
    }
}
