//! ndctl's upstream source from Debian: the newest `ndctl_*.orig.tar.*` the mirror serves,
//! checked against the checksum in the Sources index. The `.dsc` is not needed (and some
//! mirrors do not serve it): the orig tarball is the upstream tree with its tests.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::cache::sha256_file;
use crate::images::apt::{compare_versions, Apt, Suites};

/// An upstream tarball on disk.
#[derive(Clone, Debug)]
pub struct Tarball {
    pub path: PathBuf,
    /// The Debian source version it came with (`81-1`).
    pub version: String,
    pub sha256: String,
}

/// One version of a source package as `apt-cache showsrc` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceVersion {
    pub version: String,
    /// (file name, sha256) of every file the version consists of.
    pub files: Vec<(String, String)>,
}

impl SourceVersion {
    pub fn orig_tarball(&self) -> Option<&(String, String)> {
        self.files
            .iter()
            .find(|(name, _)| name.contains(".orig.tar."))
    }
}

/// Parses `apt-cache showsrc` stanzas; the same version listed by several suites appears once.
pub fn parse_showsrc(text: &str) -> Vec<SourceVersion> {
    let mut out: Vec<SourceVersion> = Vec::new();
    for stanza in text.split("\n\n") {
        let mut version = None;
        let mut files = Vec::new();
        let mut in_sums = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim().to_string());
            }
            if line.starts_with(' ') {
                if in_sums {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    if let [sum, _size, name] = w.as_slice() {
                        files.push((name.to_string(), sum.to_string()));
                    }
                }
                continue;
            }
            in_sums = line.starts_with("Checksums-Sha256:");
        }
        if let Some(version) = version {
            if !files.is_empty() && !out.iter().any(|v| v.version == version) {
                out.push(SourceVersion { version, files });
            }
        }
    }
    out.sort_by(|a, b| compare_versions(&b.version, &a.version));
    out
}

/// The newest orig tarball of `package` that the mirror really serves, downloaded once into
/// `cache/sources/<package>` and verified by checksum every time it is used.
pub fn fetch_orig(cache: &Path, package: &str) -> Result<Tarball> {
    let apt = Apt::open_with_sources(&cache.join("apt/sources"), Suites::Kernels)?;
    apt.update(false)?;
    let versions = parse_showsrc(&apt.showsrc(package)?);
    if versions.is_empty() {
        bail!("the Debian mirror lists no source package `{package}` (deb-src of the host's release and the next)");
    }
    let dir = cache.join("sources").join(package);
    let mut tried = Vec::new();
    for v in &versions {
        let Some((name, sum)) = v.orig_tarball() else {
            tried.push(format!("{}: no orig tarball listed", v.version));
            continue;
        };
        let path = dir.join(name);
        if path.exists() && sha256_file(&path)? == *sum {
            return Ok(Tarball {
                path,
                version: v.version.clone(),
                sha256: sum.clone(),
            });
        }
        let _ = fs::remove_file(&path);
        eprintln!("suite: fetching {name} ({package} {})", v.version);
        let out = apt.download_source(&format!("{package}={}", v.version), &dir)?;
        if path.exists() {
            let got = sha256_file(&path)?;
            if got == *sum {
                return Ok(Tarball {
                    path,
                    version: v.version.clone(),
                    sha256: sum.clone(),
                });
            }
            fs::remove_file(&path).ok();
            tried.push(format!(
                "{}: {name} has sha256 {got}, the index says {sum}",
                v.version
            ));
        } else {
            let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            let why = err
                .lines()
                .find(|l| l.contains(name.as_str()) || l.starts_with("E:"))
                .unwrap_or("not downloaded")
                .trim()
                .to_string();
            tried.push(format!("{}: {why}", v.version));
        }
    }
    bail!(
        "no {package} orig tarball could be fetched from the Debian mirror (versions tried, newest first):\n  {}",
        tried.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWSRC: &str = "Package: ndctl
Binary: ndctl, daxctl
Version: 76.1-1
Checksums-Sha256:
 aaaa 1234 ndctl_76.1-1.dsc
 bbbb 5678 ndctl_76.1.orig.tar.gz
 cccc 910 ndctl_76.1-1.debian.tar.xz

Package: ndctl
Version: 81-1
Files:
 0123 1 ndctl_81-1.dsc
Checksums-Sha256:
 dddd 4321 ndctl_81-1.dsc
 eeee 436889 ndctl_81.orig.tar.gz
Homepage: https://github.com/pmem/ndctl

Package: ndctl
Version: 81-1
Checksums-Sha256:
 dddd 4321 ndctl_81-1.dsc
 eeee 436889 ndctl_81.orig.tar.gz
";

    #[test]
    fn showsrc_newest_first_with_orig_checksums() {
        let v = parse_showsrc(SHOWSRC);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].version, "81-1");
        assert_eq!(
            v[0].orig_tarball(),
            Some(&("ndctl_81.orig.tar.gz".to_string(), "eeee".to_string()))
        );
        // Files: lists md5 sums; only the sha256 section counts.
        assert!(!v[0].files.iter().any(|(_, s)| s == "0123"));
        assert_eq!(v[1].orig_tarball().unwrap().1, "bbbb");
    }
}
