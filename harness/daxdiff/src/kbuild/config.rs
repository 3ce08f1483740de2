//! The kernel configuration: a base (lean, defconfig, a catalogue kernel's config or a
//! file) with fragments merged in order, then checked: every option a fragment asks for must
//! be in the final `.config`, or the build stops saying which option and why it may be missing.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Fragments shipped in `vm-images/configs/`, by name.
pub const SHIPPED: [(&str, &str); 5] = [
    (
        "base",
        include_str!("../../../../vm-images/configs/base.config"),
    ),
    (
        "dax",
        include_str!("../../../../vm-images/configs/dax.config"),
    ),
    (
        "debug",
        include_str!("../../../../vm-images/configs/debug.config"),
    ),
    (
        "lockdep",
        include_str!("../../../../vm-images/configs/lockdep.config"),
    ),
    (
        "suite",
        include_str!("../../../../vm-images/configs/suite.config"),
    ),
];

/// What `daxdiff kernel build` merges when no fragment is named: a lean guest with DAX,
/// KASAN and KCOV.
pub const DEFAULT_FRAGMENTS: [&str; 3] = ["base", "dax", "debug"];

pub fn shipped_fragment(name: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|f| f.0 == name).map(|f| f.1)
}

/// Where the configuration starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseConfig {
    /// `allnoconfig` + the tree's `kernel/configs/kvm_guest.config`: the fragments add what
    /// the guest needs and nothing else is built (a fraction of defconfig's build time).
    Lean,
    /// `make defconfig`.
    Defconfig,
    /// A `.config` file (for example Debian's, from `/boot/config-*` of a packaged kernel).
    File(PathBuf),
}

impl BaseConfig {
    pub fn parse(s: &str) -> Result<BaseConfig> {
        Ok(match s {
            "lean" => BaseConfig::Lean,
            "defconfig" => BaseConfig::Defconfig,
            path => {
                let p = PathBuf::from(path);
                if !p.is_file() {
                    bail!(
                        "base config `{path}` is neither `lean`, `defconfig` nor a file; \
                         for a Debian kernel's config use the `config` path `daxdiff images list` shows"
                    );
                }
                BaseConfig::File(p)
            }
        })
    }

    /// What identifies the base in a cache key.
    pub fn identity(&self) -> Result<String> {
        Ok(match self {
            BaseConfig::Lean => "lean".into(),
            BaseConfig::Defconfig => "defconfig".into(),
            BaseConfig::File(p) => format!("file:{}", crate::cache::sha256_file(p)?),
        })
    }
}

/// One value a fragment asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub option: String,
    /// `y`, `m`, `n` (from `# CONFIG_X is not set` or `=n`), a number or a quoted string.
    pub value: String,
    pub fragment: String,
}

/// Options of a fragment, in order.
pub fn parse_fragment(text: &str, origin: &str) -> Vec<Wanted> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (option, value) = if let Some(rest) = l.strip_prefix("# ") {
                (rest.strip_suffix(" is not set")?, "n")
            } else if l.starts_with("CONFIG_") {
                l.split_once('=')?
            } else {
                return None;
            };
            Some(Wanted {
                option: option.to_string(),
                value: value.to_string(),
                fragment: origin.to_string(),
            })
        })
        .collect()
}

/// An option the final configuration does not have as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub wanted: Wanted,
    /// What `.config` has (`n` when the option is absent or unset).
    pub got: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} (from {}) ended up {}",
            self.wanted.option, self.wanted.value, self.wanted.fragment, self.got
        )
    }
}

/// Checks the final configuration against what the fragments asked; the last fragment to
/// name an option wins, as in the merge.
pub fn unmet(wanted: &[Wanted], config: &str) -> Vec<Unmet> {
    let mut last: Vec<&Wanted> = Vec::new();
    for w in wanted {
        last.retain(|x| x.option != w.option);
        last.push(w);
    }
    last.into_iter()
        .filter_map(|w| {
            let got = crate::images::kernel::config_lookup(config, &w.option)
                .unwrap_or_else(|| "n".to_string());
            (got != w.value).then(|| Unmet {
                wanted: w.clone(),
                got,
            })
        })
        .collect()
}

/// Every symbol the tree's Kconfig files define (`config X`, `menuconfig X`).
pub fn kconfig_symbols(tree: &Path) -> Result<std::collections::HashSet<String>> {
    let mut syms = std::collections::HashSet::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).with_context(|| format!("read {}", d.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && !name.starts_with('.') {
                stack.push(p);
            } else if ft.is_file() && name.starts_with("Kconfig") {
                let text = fs::read_to_string(&p).unwrap_or_default();
                syms.extend(defined_symbols(&text));
            }
        }
    }
    Ok(syms)
}

fn defined_symbols(kconfig: &str) -> impl Iterator<Item = String> + '_ {
    kconfig.lines().filter_map(|l| {
        let l = l.trim_start();
        let rest = l
            .strip_prefix("config ")
            .or_else(|| l.strip_prefix("menuconfig "))?;
        let sym = rest.trim();
        (!sym.is_empty() && sym.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| format!("CONFIG_{sym}"))
    })
}

/// Writes `out/.config` from the base and fragments; returns the options left unmet and the
/// options this tree does not define at all (fragments are shared across kernel versions).
pub fn configure(
    src: &Path,
    out: &Path,
    base: &BaseConfig,
    fragments: &[PathBuf],
) -> Result<(Vec<Unmet>, Vec<String>)> {
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let make = |target: &str| -> Result<()> {
        let o = Command::new("make")
            .arg("-C")
            .arg(src)
            .arg(format!("O={}", out.display()))
            .args(["ARCH=x86_64", "-s", target])
            .output()
            .context("run make (install build-essential, flex, bison: see ci/setup.sh)")?;
        if !o.status.success() {
            bail!(
                "make {target} failed in {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    };
    let mut merge: Vec<PathBuf> = Vec::new();
    match base {
        BaseConfig::Lean => {
            make("allnoconfig")?;
            let kvm = src.join("kernel/configs/kvm_guest.config");
            if kvm.is_file() {
                merge.push(kvm);
            }
        }
        BaseConfig::Defconfig => make("defconfig")?,
        BaseConfig::File(p) => {
            fs::copy(p, out.join(".config"))
                .with_context(|| format!("copy base config {}", p.display()))?;
        }
    }
    let mut wanted = Vec::new();
    for f in fragments {
        let text = fs::read_to_string(f)
            .with_context(|| format!("read config fragment {}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = parse_fragment(&text, &name);
        if parsed.is_empty() {
            bail!("config fragment {} sets no CONFIG_ option", f.display());
        }
        wanted.extend(parsed);
        merge.push(f.clone());
    }
    if !merge.is_empty() {
        let o = Command::new(src.join("scripts/kconfig/merge_config.sh"))
            .current_dir(src)
            .env("ARCH", "x86_64")
            .args(["-m", "-O"])
            .arg(out)
            .arg(out.join(".config"))
            .args(&merge)
            .output()
            .context("run scripts/kconfig/merge_config.sh")?;
        if !o.status.success() {
            bail!(
                "merge_config.sh failed:\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    make("olddefconfig")?;
    let config = fs::read_to_string(out.join(".config"))?;
    let known = kconfig_symbols(src)?;
    let (unmet, unknown): (Vec<Unmet>, Vec<Unmet>) = unmet(&wanted, &config)
        .into_iter()
        .partition(|u| known.contains(&u.wanted.option));
    Ok((
        unmet,
        unknown.into_iter().map(|u| u.wanted.option).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_parse_set_unset_and_values() {
        let w = parse_fragment(
            "# comment\nCONFIG_KASAN=y\n# CONFIG_SOUND is not set\nCONFIG_NR_CPUS=8\nCONFIG_X=\"a b\"\n",
            "f",
        );
        let v: Vec<_> = w
            .iter()
            .map(|w| (w.option.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(
            v,
            [
                ("CONFIG_KASAN", "y"),
                ("CONFIG_SOUND", "n"),
                ("CONFIG_NR_CPUS", "8"),
                ("CONFIG_X", "\"a b\"")
            ]
        );
    }

    #[test]
    fn unmet_options_are_reported_with_their_fragment_and_the_last_fragment_wins() {
        let mut w = parse_fragment(
            "CONFIG_KASAN=y\nCONFIG_MEMORY_FAILURE=y\nCONFIG_SOUND=n\n",
            "debug.config",
        );
        w.extend(parse_fragment("CONFIG_KASAN=n\n", "nokasan.config"));
        let config = "CONFIG_KASAN=y\n# CONFIG_MEMORY_FAILURE is not set\n";
        let u = unmet(&w, config);
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(u[0].wanted.option, "CONFIG_MEMORY_FAILURE");
        assert_eq!(u[0].got, "n");
        assert_eq!(u[1].wanted.fragment, "nokasan.config");
        assert_eq!(u[1].got, "y");
        assert!(u[0].to_string().contains("from debug.config"));
    }

    #[test]
    fn kconfig_definitions_are_found() {
        let text = "config FS_DAX\n\tbool \"x\"\nmenuconfig CRYPTO\n  config  \nif FOO\n\tdepends on config_x\n";
        let syms: Vec<String> = defined_symbols(text).collect();
        assert_eq!(syms, ["CONFIG_FS_DAX", "CONFIG_CRYPTO"]);
    }

    #[test]
    fn shipped_fragments_ask_for_the_dax_and_debug_options() {
        let dax = parse_fragment(shipped_fragment("dax").unwrap(), "dax");
        for o in [
            "CONFIG_FS_DAX",
            "CONFIG_DEV_DAX_PMEM",
            "CONFIG_ACPI_NFIT",
            "CONFIG_ZONE_DEVICE",
            "CONFIG_XFS_FS",
            "CONFIG_EXT4_FS",
        ] {
            assert!(dax.iter().any(|w| w.option == o && w.value == "y"), "{o}");
        }
        let dbg = parse_fragment(shipped_fragment("debug").unwrap(), "debug");
        for o in [
            "CONFIG_KASAN",
            "CONFIG_KCOV",
            "CONFIG_DEBUG_VM",
            "CONFIG_DETECT_HUNG_TASK",
        ] {
            assert!(dbg.iter().any(|w| w.option == o && w.value == "y"), "{o}");
        }
    }
}
