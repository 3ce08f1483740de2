//! The kernel catalogue (`vm-images/kernels.toml`): which kernels exist by name and where
//! each comes from. Resolving a name to files on disk is the `images` module's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The catalogue shipped with the project; a user file given with `--catalogue` replaces it.
pub const BUILTIN: &str = include_str!("../../../vm-images/kernels.toml");

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KernelName(pub String);

impl fmt::Display for KernelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for KernelName {
    fn from(s: &str) -> Self {
        KernelName(s.to_string())
    }
}

/// Which DAX page refcount scheme a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// ≤ 6.14: pages idle at refcount 1, gup takes pgmap references.
    Old,
    /// ≥ 6.15: "fs/dax: Fix ZONE_DEVICE page reference counts".
    New,
}

impl Scheme {
    /// The scheme an upstream version runs, from its major.minor.
    pub fn for_version(upstream: &str) -> Option<Scheme> {
        let mut it = upstream.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next()?.parse().ok()?;
        let minor: u32 = it.next()?.parse().ok()?;
        Some(if (major, minor) >= (6, 15) {
            Scheme::New
        } else {
            Scheme::Old
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Old => "old",
            Scheme::New => "new",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum KernelSource {
    Debian {
        /// Upstream series ("6.12"): the newest package of it is taken.
        #[serde(default)]
        series: Option<String>,
        /// One exact Debian package version.
        #[serde(default)]
        version: Option<String>,
        /// Prefer packages whose name carries `+<abi>` (e.g. "deb12").
        #[serde(default)]
        abi: Option<String>,
        #[serde(default)]
        scheme: Option<Scheme>,
    },
    Local {
        bzimage: PathBuf,
        #[serde(default)]
        modules: Option<PathBuf>,
        #[serde(default)]
        config: Option<PathBuf>,
        #[serde(default)]
        vmlinux: Option<PathBuf>,
        #[serde(default)]
        scheme: Option<Scheme>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    pub name: KernelName,
    pub source: KernelSource,
}

#[derive(Debug, Default)]
pub struct Catalogue {
    pub kernels: BTreeMap<KernelName, KernelEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("kernel catalogue {origin}: {msg}")]
    Parse { origin: String, msg: String },
    #[error("kernel catalogue {origin}: kernel `{name}`: {msg}")]
    Entry {
        origin: String,
        name: String,
        msg: String,
    },
    #[error("unknown kernel `{name}`; known kernels: {known}. Add it to vm-images/kernels.toml or pass --catalogue FILE")]
    Unknown { name: String, known: String },
    // The OS error is the source: anyhow prints it once, after this line.
    #[error("cannot read kernel catalogue {path} (--catalogue); give the path of a readable TOML file, or leave the option out for the shipped catalogue")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    kernels: BTreeMap<String, KernelSource>,
}

impl Catalogue {
    pub fn builtin() -> Catalogue {
        Catalogue::parse(BUILTIN, "vm-images/kernels.toml", Path::new("."))
            .expect("the shipped catalogue parses (tested)")
    }

    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Catalogue::parse(&text, &path.display().to_string(), base)
    }

    /// Parses catalogue text; relative paths of `local` kernels are taken from `base`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Catalogue, CatalogueError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogueError::Parse {
            origin: origin.to_string(),
            msg: e.to_string(),
        })?;
        let mut kernels = BTreeMap::new();
        for (name, mut source) in file.kernels {
            let bad = |msg: &str| CatalogueError::Entry {
                origin: origin.to_string(),
                name: name.clone(),
                msg: msg.to_string(),
            };
            if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
                return Err(bad("a name must be non-empty, without '/' or spaces"));
            }
            match &mut source {
                KernelSource::Debian {
                    series, version, ..
                } => {
                    if series.is_none() == version.is_none() {
                        return Err(bad(
                            "a debian kernel needs exactly one of `series` or `version`",
                        ));
                    }
                }
                KernelSource::Local {
                    bzimage,
                    modules,
                    config,
                    vmlinux,
                    ..
                } => {
                    for p in [
                        Some(bzimage),
                        modules.as_mut(),
                        config.as_mut(),
                        vmlinux.as_mut(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if p.is_relative() {
                            *p = base.join(&*p);
                        }
                    }
                }
            }
            let name = KernelName(name);
            kernels.insert(name.clone(), KernelEntry { name, source });
        }
        Ok(Catalogue { kernels })
    }

    pub fn get(&self, name: &str) -> Result<&KernelEntry, CatalogueError> {
        self.kernels
            .get(&KernelName::from(name))
            .ok_or_else(|| CatalogueError::Unknown {
                name: name.to_string(),
                known: self
                    .kernels
                    .keys()
                    .map(|k| k.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_has_the_default_pair_and_6_1() {
        let c = Catalogue::builtin();
        for name in ["debian-6.1", "debian-6.12", "debian-7.3"] {
            assert!(c.get(name).is_ok(), "{name} missing");
        }
        match &c.get("debian-6.12").unwrap().source {
            KernelSource::Debian { series, abi, .. } => {
                assert_eq!(series.as_deref(), Some("6.12"));
                assert_eq!(abi.as_deref(), Some("deb12"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_kernel_lists_known_ones() {
        let err = Catalogue::builtin()
            .get("debian-5.10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown kernel `debian-5.10`"), "{err}");
        assert!(
            err.contains("debian-6.12") && err.contains("debian-7.3"),
            "{err}"
        );
    }

    #[test]
    fn local_paths_are_relative_to_the_catalogue() {
        let text = "[kernels.mine]\nkind = \"local\"\nbzimage = \"k/bzImage\"\nvmlinux = \"/abs/vmlinux\"\n";
        let c = Catalogue::parse(text, "t.toml", Path::new("/base")).unwrap();
        match &c.get("mine").unwrap().source {
            KernelSource::Local {
                bzimage, vmlinux, ..
            } => {
                assert_eq!(bzimage, Path::new("/base/k/bzImage"));
                assert_eq!(vmlinux.as_deref(), Some(Path::new("/abs/vmlinux")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn debian_entry_needs_series_or_version_not_both() {
        let both = "[kernels.x]\nkind = \"debian\"\nseries = \"6.1\"\nversion = \"6.1.1-1\"\n";
        let err = Catalogue::parse(both, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kernel `x`") && err.contains("exactly one"),
            "{err}"
        );
        let neither = "[kernels.x]\nkind = \"debian\"\n";
        assert!(Catalogue::parse(neither, "t.toml", Path::new(".")).is_err());
    }

    #[test]
    fn unknown_field_and_kind_are_errors_naming_the_file() {
        let err = Catalogue::parse("[kernels.x]\nkind = \"git\"\n", "my.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("kernel catalogue my.toml"), "{err}");
        let typo = "[kernels.x]\nkind = \"debian\"\nseries = \"6.1\"\nserie = \"6.2\"\n";
        assert!(Catalogue::parse(typo, "t.toml", Path::new(".")).is_err());
    }

    #[test]
    fn scheme_follows_the_6_15_rework() {
        assert_eq!(Scheme::for_version("6.1.192"), Some(Scheme::Old));
        assert_eq!(Scheme::for_version("6.12.117"), Some(Scheme::Old));
        assert_eq!(Scheme::for_version("6.14"), Some(Scheme::Old));
        assert_eq!(Scheme::for_version("6.15.0"), Some(Scheme::New));
        assert_eq!(Scheme::for_version("7.3.4"), Some(Scheme::New));
        assert_eq!(Scheme::for_version("garbage"), None);
    }
}
