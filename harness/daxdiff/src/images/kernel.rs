//! Kernels on disk: a catalogue entry resolved to a bzImage, its modules and config, fetched
//! from Debian packages (both package layouts) or taken from a user's local build.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::apt::{compare_versions, Apt, Package, Suites};
use crate::cache::{self, Entry, KeyBuilder};
use crate::catalogue::{KernelEntry, KernelName, KernelSource, Scheme};

/// A kernel ready to boot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    pub name: KernelName,
    /// The Debian package version fetched, or "local".
    pub version: String,
    /// `uname -r` of the kernel; the modules directory's name.
    pub release: String,
    pub scheme: Scheme,
    pub bzimage: PathBuf,
    /// `<root>/lib/modules/<release>` lives under this root (for `depmod -b`).
    pub modules_root: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub vmlinux: Option<PathBuf>,
    pub packages: Vec<String>,
}

impl Kernel {
    /// Whether its .config has `CONFIG_<option>=y`; `None` when the kernel has no known .config.
    pub fn config_enabled(&self, option: &str) -> Option<bool> {
        let text = std::fs::read_to_string(self.config.as_ref()?).ok()?;
        let want = format!("CONFIG_{option}=y");
        Some(text.lines().any(|l| l == want))
    }

    pub fn modules_dir(&self) -> Option<PathBuf> {
        self.modules_root
            .as_ref()
            .map(|r| r.join("lib/modules").join(&self.release))
    }

    /// The value of a `CONFIG_` option in the kernel's config, if it has one.
    pub fn config_value(&self, option: &str) -> Option<String> {
        let text = fs::read_to_string(self.config.as_ref()?).ok()?;
        config_lookup(&text, option)
    }
}

pub fn config_lookup(config: &str, option: &str) -> Option<String> {
    let prefix = format!("{option}=");
    config.lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// The package set of one Debian kernel build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianKernel {
    pub release: String,
    pub version: String,
    pub packages: Vec<Package>,
}

/// Picks the newest kernel of `series` (or the exact `version`) among the packages apt knows.
/// Handles both layouts: `linux-image-<release>-unsigned` (≤ 6.x) and the split
/// `linux-binary-unsigned-<release>` + `linux-modules-<release>` + `linux-base-<release>` (7.x).
pub fn choose_debian(
    candidates: &[Package],
    series: Option<&str>,
    version: Option<&str>,
    abi: Option<&str>,
) -> Option<DebianKernel> {
    let mut best: Option<(&Package, String, bool)> = None;
    for p in candidates {
        let release = if let Some(r) = p.name.strip_prefix("linux-binary-unsigned-") {
            r.to_string()
        } else if let Some(r) = p
            .name
            .strip_prefix("linux-image-")
            .and_then(|r| r.strip_suffix("-unsigned"))
        {
            r.to_string()
        } else {
            continue;
        };
        if !release.ends_with("-amd64")
            || release.ends_with("-cloud-amd64")
            || release.ends_with("-rt-amd64")
        {
            continue;
        }
        if let Some(s) = series {
            // "6.1" must not match "6.12": the next character must end the series.
            match release.strip_prefix(s) {
                Some(rest) if rest.starts_with('.') || rest.starts_with('-') => {}
                _ => continue,
            }
        }
        if let Some(v) = version {
            if p.version != v {
                continue;
            }
        }
        let abi_ok = abi.is_none_or(|a| release.contains(&format!("+{a}")));
        let better = match &best {
            None => true,
            Some((b, _, b_abi)) => match abi_ok.cmp(b_abi) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => compare_versions(&p.version, &b.version).is_gt(),
            },
        };
        if better {
            best = Some((p, release, abi_ok));
        }
    }
    let (p, release, _) = best?;
    let packages = if p.name.starts_with("linux-binary-unsigned-") {
        vec![
            p.clone(),
            Package {
                name: format!("linux-modules-{release}"),
                version: p.version.clone(),
            },
            Package {
                name: format!("linux-base-{release}"),
                version: p.version.clone(),
            },
        ]
    } else {
        vec![p.clone()]
    };
    Some(DebianKernel {
        release,
        version: p.version.clone(),
        packages,
    })
}

pub struct KernelStore {
    cache: PathBuf,
}

impl KernelStore {
    pub fn new(cache: &Path) -> KernelStore {
        KernelStore {
            cache: cache.to_path_buf(),
        }
    }

    fn apt(&self) -> Result<Apt> {
        Apt::open(&self.cache.join("apt/kernels"), Suites::Kernels)
    }

    /// Resolves which Debian packages a catalogue entry means today.
    pub fn resolve_debian(&self, entry: &KernelEntry) -> Result<DebianKernel> {
        let KernelSource::Debian {
            series,
            version,
            abi,
            ..
        } = &entry.source
        else {
            bail!("kernel {} is not a Debian kernel", entry.name);
        };
        let apt = self.apt()?;
        apt.update(false)?;
        let mut candidates = apt.search("^linux-image-[0-9].*-amd64-unsigned$")?;
        candidates.extend(apt.search("^linux-binary-unsigned-[0-9].*-amd64$")?);
        choose_debian(&candidates, series.as_deref(), version.as_deref(), abi.as_deref()).with_context(|| {
            format!(
                "no Debian kernel package matches {} ({}); `daxdiff images list --refresh` shows what the mirror serves",
                entry.name,
                series.as_deref().map(|s| format!("series {s}")).or(version.clone()).unwrap_or_default()
            )
        })
    }

    /// The cached kernel if it is there and intact; never fetches.
    pub fn cached(&self, entry: &KernelEntry) -> Option<Kernel> {
        let index = self
            .cache
            .join("kernels")
            .join(format!("{}.json", entry.name));
        let k: Kernel = serde_json::from_str(&fs::read_to_string(index).ok()?).ok()?;
        Entry::at(k.bzimage.parent()?)?.verify().map(|_| k)
    }

    /// Fetches (or finds in the cache) the kernel a catalogue entry names.
    pub fn get(&self, entry: &KernelEntry) -> Result<Kernel> {
        match &entry.source {
            KernelSource::Local {
                bzimage,
                modules,
                config,
                vmlinux,
                scheme,
            } => local_kernel(
                &entry.name,
                bzimage,
                modules.as_deref(),
                config.as_deref(),
                vmlinux.as_deref(),
                *scheme,
            ),
            KernelSource::Debian { scheme, .. } => {
                let deb = self.resolve_debian(entry)?;
                let mut key = KeyBuilder::default().part("layout", "v1");
                for p in &deb.packages {
                    key = key.part(&p.name, &p.version);
                }
                let key = key.finish();
                let e = Entry::new(&self.cache, "kernels", &entry.name.0, &key);
                if e.verify().is_none() {
                    eprintln!(
                        "kernel {}: fetching Debian {} ({})",
                        entry.name, deb.release, deb.version
                    );
                    let apt = self.apt()?;
                    let debs = apt.download(&deb.packages)?;
                    e.build(|dir| unpack_debian(dir, &deb, &debs))?;
                }
                let release = deb.release.clone();
                let k = Kernel {
                    name: entry.name.clone(),
                    version: deb.version.clone(),
                    scheme: scheme
                        .or_else(|| Scheme::for_version(&release))
                        .unwrap_or(Scheme::Old),
                    bzimage: e.dir.join("vmlinuz"),
                    modules_root: Some(e.dir.clone()),
                    config: Some(e.dir.join("config")),
                    vmlinux: None,
                    packages: deb
                        .packages
                        .iter()
                        .map(|p| format!("{}={}", p.name, p.version))
                        .collect(),
                    release,
                };
                cache::write_atomic(
                    &self
                        .cache
                        .join("kernels")
                        .join(format!("{}.json", entry.name)),
                    serde_json::to_string_pretty(&k)?.as_bytes(),
                )?;
                Ok(k)
            }
        }
    }
}

fn unpack_debian(
    dir: &Path,
    deb: &DebianKernel,
    debs: &[PathBuf],
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let raw = dir.join("raw");
    for d in debs {
        super::apt::unpack(d, &raw, None)?;
    }
    let r = &deb.release;
    let first = |cands: &[String]| cands.iter().map(|c| raw.join(c)).find(|p| p.exists());
    let vmlinuz = first(&[
        format!("boot/vmlinuz-{r}"),
        format!("usr/lib/modules/{r}/vmlinuz.unsigned"),
        format!("usr/lib/modules/{r}/vmlinuz"),
    ])
    .with_context(|| format!("no kernel image in the packages of {r}"))?;
    let config = first(&[
        format!("boot/config-{r}"),
        format!("usr/lib/modules/{r}/config"),
    ])
    .with_context(|| format!("no kernel config in the packages of {r}"))?;
    let mods = first(&[format!("lib/modules/{r}"), format!("usr/lib/modules/{r}")])
        .with_context(|| format!("no modules directory in the packages of {r}"))?;
    fs::rename(&vmlinuz, dir.join("vmlinuz"))?;
    fs::copy(&config, dir.join("config"))?;
    fs::create_dir_all(dir.join("lib/modules"))?;
    fs::rename(&mods, dir.join("lib/modules").join(r))?;
    fs::remove_dir_all(&raw)?;
    // Debian's packages leave modules.dep to the installer: build it for our tree.
    let st = Command::new("depmod")
        .arg("-b")
        .arg(dir)
        .arg(r)
        .status()
        .context("run depmod (package kmod)")?;
    if !st.success() {
        bail!("depmod for {r} failed");
    }
    let mut facts = BTreeMap::new();
    facts.insert("release".into(), r.clone());
    facts.insert("version".into(), deb.version.clone());
    Ok((
        vec![
            "vmlinuz".into(),
            "config".into(),
            format!("lib/modules/{r}/modules.dep"),
            format!("lib/modules/{r}/modules.builtin"),
        ],
        facts,
    ))
}

fn local_kernel(
    name: &KernelName,
    bzimage: &Path,
    modules: Option<&Path>,
    config: Option<&Path>,
    vmlinux: Option<&Path>,
    scheme: Option<Scheme>,
) -> Result<Kernel> {
    if !bzimage.is_file() {
        bail!(
            "kernel {name}: bzImage {} does not exist; fix `bzimage` in the catalogue",
            bzimage.display()
        );
    }
    let release = match modules {
        Some(m) => m
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "kernel {name}: modules path {} should end in lib/modules/<release>",
                    m.display()
                )
            })?,
        None => bzimage_release(bzimage).unwrap_or_else(|| "unknown".to_string()),
    };
    let modules_root = match modules {
        Some(m) => {
            let root = m
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .with_context(|| {
                    format!(
                        "kernel {name}: modules path {} should end in lib/modules/<release>",
                        m.display()
                    )
                })?;
            if !m.join("modules.dep").exists() {
                bail!(
                    "kernel {name}: {} has no modules.dep; run `depmod -b {} {release}`",
                    m.display(),
                    root.display()
                );
            }
            Some(root.to_path_buf())
        }
        None => None,
    };
    Ok(Kernel {
        name: name.clone(),
        version: "local".into(),
        scheme: scheme
            .or_else(|| Scheme::for_version(&release))
            .unwrap_or(Scheme::Old),
        release,
        bzimage: bzimage.to_path_buf(),
        modules_root,
        config: config.map(Path::to_path_buf),
        vmlinux: vmlinux.map(Path::to_path_buf),
        packages: vec![],
    })
}

/// The release string a bzImage carries in its header (x86 boot protocol: kernel_version).
pub fn bzimage_release(path: &Path) -> Option<String> {
    let data = fs::read(path).ok()?;
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize + 0x200;
    let s = data.get(off..off + 256)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    String::from_utf8(s[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
        }
    }

    fn candidates() -> Vec<Package> {
        vec![
            p("linux-image-6.1.0-55-amd64-unsigned", "6.1.190-1"),
            p("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2"),
            p("linux-image-6.1.0-56-cloud-amd64-unsigned", "6.1.192-2"),
            p(
                "linux-image-6.12.115+deb12-amd64-unsigned",
                "6.12.115-1~deb12u1",
            ),
            p(
                "linux-image-6.12.117+deb12-amd64-unsigned",
                "6.12.117-1~deb12u1",
            ),
            p("linux-image-6.12.119+deb13-amd64-unsigned", "6.12.119-1"),
            p(
                "linux-binary-unsigned-7.2.12+deb13-amd64",
                "7.2.12-1~bpo13+1",
            ),
            p("linux-binary-unsigned-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
            p(
                "linux-binary-unsigned-7.3.4+deb13-rt-amd64",
                "7.3.4-1~bpo13+1",
            ),
        ]
    }

    #[test]
    fn newest_of_a_series_and_6_1_is_not_6_12() {
        let k = choose_debian(&candidates(), Some("6.1"), None, None).unwrap();
        assert_eq!(k.release, "6.1.0-56-amd64");
        assert_eq!(k.version, "6.1.192-2");
        assert_eq!(k.packages.len(), 1);
    }

    #[test]
    fn abi_preference_picks_the_gcc12_build_even_if_older() {
        let k = choose_debian(&candidates(), Some("6.12"), None, Some("deb12")).unwrap();
        assert_eq!(k.release, "6.12.117+deb12-amd64");
        let any = choose_debian(&candidates(), Some("6.12"), None, None).unwrap();
        assert_eq!(any.release, "6.12.119+deb13-amd64");
    }

    #[test]
    fn split_layout_brings_modules_and_base() {
        let k = choose_debian(&candidates(), Some("7.3"), None, None).unwrap();
        assert_eq!(k.release, "7.3.4+deb13-amd64");
        let names: Vec<_> = k.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linux-binary-unsigned-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64",
                "linux-base-7.3.4+deb13-amd64"
            ]
        );
        assert!(k.packages.iter().all(|p| p.version == "7.3.4-1~bpo13+1"));
    }

    #[test]
    fn exact_version_and_missing_series() {
        let k = choose_debian(&candidates(), None, Some("6.12.115-1~deb12u1"), None).unwrap();
        assert_eq!(k.release, "6.12.115+deb12-amd64");
        assert!(choose_debian(&candidates(), Some("5.10"), None, None).is_none());
    }

    #[test]
    fn config_values() {
        let cfg = "CONFIG_FS_DAX=y\n# CONFIG_KASAN is not set\nCONFIG_LOCALVERSION=\"-x\"\n";
        assert_eq!(config_lookup(cfg, "CONFIG_FS_DAX").as_deref(), Some("y"));
        assert_eq!(config_lookup(cfg, "CONFIG_KASAN"), None);
        assert_eq!(
            config_lookup(cfg, "CONFIG_LOCALVERSION").as_deref(),
            Some("-x")
        );
    }
}
