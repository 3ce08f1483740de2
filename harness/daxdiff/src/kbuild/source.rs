//! Where a kernel's source comes from: a Debian `linux-source-*` package (fetched with the
//! private apt configuration and unpacked once into the cache), a local tree, or a git tree at
//! a revision (checked out in a worktree the cache keeps, so consecutive revisions rebuild
//! only what changed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cache::{self, Entry, KeyBuilder};
use crate::images::apt::{self, Apt, Suites};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `linux-source-6.12` (newest served) or `linux-source-6.12=6.12.117-1~deb12u1`.
    Debian {
        package: String,
        version: Option<String>,
    },
    /// A kernel tree on disk, used in place (built out of tree).
    Tree(PathBuf),
    /// `git:REPO@REV`: a git repository (path) at a revision.
    Git { repo: PathBuf, rev: String },
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<SourceSpec> {
        if let Some(rest) = s.strip_prefix("git:") {
            let Some((repo, rev)) = rest.rsplit_once('@') else {
                bail!("git source `{s}` needs a revision: git:REPO@REV (e.g. git:linux@v6.12)");
            };
            return Ok(SourceSpec::Git {
                repo: PathBuf::from(repo),
                rev: rev.to_string(),
            });
        }
        if s.starts_with("linux-source-") {
            let (package, version) = match s.split_once('=') {
                Some((p, v)) => (p.to_string(), Some(v.to_string())),
                None => (s.to_string(), None),
            };
            return Ok(SourceSpec::Debian { package, version });
        }
        let p = PathBuf::from(s);
        if p.join("Makefile").is_file() && p.join("Kconfig").is_file() {
            return Ok(SourceSpec::Tree(p));
        }
        bail!(
            "source `{s}` is not a Debian source package (linux-source-6.12[=VERSION]), a git tree \
             (git:REPO@REV) or a kernel tree (a directory with Makefile and Kconfig)"
        )
    }
}

/// A source tree ready to configure and build.
#[derive(Clone, Debug)]
pub struct Source {
    /// The tree (read-only for Debian sources: builds are out of tree).
    pub tree: PathBuf,
    /// What identifies the content in a cache key.
    pub identity: String,
    /// For people: `linux-source-6.12 6.12.117-1~deb12u1`, `git linux 1c23f9e627a7`.
    pub describe: String,
    /// The tree is a git repository at a commit daxdiff may move (patches become commits).
    pub git_commit: Option<String>,
}

pub fn materialize(cache_root: &Path, spec: &SourceSpec) -> Result<Source> {
    match spec {
        SourceSpec::Debian { package, version } => debian(cache_root, package, version.as_deref()),
        SourceSpec::Tree(p) => tree(p),
        SourceSpec::Git { repo, rev } => git_tree(cache_root, repo, rev),
    }
}

fn debian(cache_root: &Path, package: &str, version: Option<&str>) -> Result<Source> {
    let apt = Apt::open(&cache_root.join("apt/kernels"), Suites::Kernels)?;
    apt.update(false)?;
    let mut served: Vec<apt::Package> = apt
        .search(&format!("^{}$", regex_quote(package)))?
        .into_iter()
        .filter(|p| p.name == package)
        .collect();
    served.sort_by(|a, b| apt::compare_versions(&a.version, &b.version));
    served.dedup_by(|a, b| a.version == b.version);
    let chosen = match version {
        Some(v) => served.iter().find(|p| p.version == v).cloned().with_context(|| {
            format!(
                "{package}={v} is not served; versions served: {}",
                served.iter().map(|p| p.version.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?,
        None => served.last().cloned().with_context(|| {
            format!(
                "the Debian mirror serves no {package}; source packages are named like linux-source-6.12 \
                 (run `apt-cache search linux-source` to see which exist)"
            )
        })?,
    };
    let debs = apt.download(std::slice::from_ref(&chosen))?;
    let deb = &debs[0];
    let sum = cache::sha256_file(deb)?;
    let key = KeyBuilder::default()
        .part("layout", "v1")
        .part("deb", &sum)
        .finish();
    let label = format!(
        "{}-{}",
        package,
        chosen.version.replace(['~', '+', ':'], "_")
    );
    let e = Entry::new(cache_root, "sources", &label, &key);
    let m = match e.verify() {
        Some(m) => m,
        None => {
            eprintln!(
                "source: unpacking {package} {} (about a minute)",
                chosen.version
            );
            e.build(|dir| unpack_source_deb(deb, package, dir))?
        }
    };
    let tree = e
        .dir
        .join(m.facts.get("tree").context("source entry without a tree")?);
    Ok(Source {
        tree,
        identity: format!("debian:{package}:{}:{sum}", chosen.version),
        describe: format!("{package} {}", chosen.version),
        git_commit: None,
    })
}

fn unpack_source_deb(
    deb: &Path,
    package: &str,
    dir: &Path,
) -> Result<(Vec<String>, std::collections::BTreeMap<String, String>)> {
    let tarball = format!("./usr/src/{package}.tar.xz");
    apt::unpack(deb, dir, Some(&tarball))?;
    let tb = dir.join(&tarball);
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tb)
        .arg("-C")
        .arg(dir)
        .status()
        .context("run tar")?;
    if !st.success() {
        bail!("unpacking {} failed", tb.display());
    }
    fs::remove_dir_all(dir.join("usr"))?;
    if !dir.join(package).join("Makefile").is_file() {
        bail!("{} did not unpack to {package}/", tb.display());
    }
    let mut facts = std::collections::BTreeMap::new();
    facts.insert("tree".to_string(), package.to_string());
    Ok((vec![format!("{package}/Makefile")], facts))
}

fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

fn tree(p: &Path) -> Result<Source> {
    let tree = fs::canonicalize(p).with_context(|| format!("kernel tree {}", p.display()))?;
    if tree.join(".config").exists() {
        bail!(
            "{} has a .config: daxdiff builds out of tree and needs a clean source tree; run `make mrproper` there",
            tree.display()
        );
    }
    // A git tree is identified by its commit and its uncommitted changes; anything else by
    // the names, sizes and times of its files.
    let identity = if tree.join(".git").exists() {
        let head = git_out(&tree, &["rev-parse", "HEAD"])?;
        let diff = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["diff", "HEAD"])
            .output()?;
        let status = git_out(&tree, &["status", "--porcelain", "--untracked-files=all"])?;
        KeyBuilder::default()
            .part("head", &head)
            .part("diff", &diff.stdout)
            .part("status", &status)
            .finish()
    } else {
        let out = Command::new("find")
            .arg(&tree)
            .args(["-type", "f", "-printf", "%P %s %T@\n"])
            .output()
            .context("run find")?;
        let mut lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
        lines.sort();
        KeyBuilder::default().part("files", lines.concat()).finish()
    };
    Ok(Source {
        describe: format!("tree {}", tree.display()),
        identity: format!("tree:{}:{identity}", tree.display()),
        tree,
        git_commit: None,
    })
}

fn git_out(repo: &Path, args: &[&str]) -> Result<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .context("run git")?;
    if !o.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One worktree per repository under the cache, moved to each requested commit.
fn git_tree(cache_root: &Path, repo: &Path, rev: &str) -> Result<Source> {
    let repo =
        fs::canonicalize(repo).with_context(|| format!("git repository {}", repo.display()))?;
    let commit = git_out(
        &repo,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )
    .with_context(|| format!("revision {rev} is not a commit of {}", repo.display()))?;
    let tag = KeyBuilder::default()
        .part("repo", repo.display().to_string())
        .finish();
    let wt = cache_root.join("kbuild/trees").join(&tag);
    if !wt.join(".git").exists() {
        fs::create_dir_all(wt.parent().unwrap())?;
        git_out(
            &repo,
            &[
                "worktree",
                "add",
                "--detach",
                "-f",
                &wt.display().to_string(),
                &commit,
            ],
        )?;
    } else {
        git_out(&wt, &["checkout", "-q", "--detach", "-f", &commit])?;
        git_out(&wt, &["clean", "-q", "-fdx"])?;
    }
    Ok(Source {
        tree: wt,
        identity: format!("git:{commit}"),
        describe: format!("git {} {}", repo.display(), &commit[..12]),
        git_commit: Some(commit),
    })
}

/// A writable git copy of `src` for applying patches: the source itself for git trees,
/// otherwise a copy under `dest` committed as the base.
pub fn writable_git_copy(src: &Source, dest: &Path) -> Result<PathBuf> {
    if src.git_commit.is_some() {
        return Ok(src.tree.clone());
    }
    if dest.join(".git").exists() {
        return Ok(dest.to_path_buf());
    }
    let tmp = dest.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    eprintln!("source: copying the tree and committing it as the base of the series");
    let st = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(format!("{}/.", src.tree.display()))
        .arg(&tmp)
        .status()
        .context("run cp")?;
    if !st.success() {
        bail!("copying {} failed", src.tree.display());
    }
    let _ = fs::remove_dir_all(tmp.join(".git"));
    for args in [
        &["init", "-q"][..],
        // Debian's tarball carries a .gitignore that ignores everything at the top.
        &["add", "-A", "-f", "."],
        &[
            "-c",
            "user.name=daxdiff",
            "-c",
            "user.email=daxdiff@localhost",
            "commit",
            "-q",
            "--no-verify",
            "-m",
        ],
    ] {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if a.last().map(String::as_str) == Some("-m") {
            a.push(format!("base: {}", src.describe));
        }
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        git_out(&tmp, &refs)?;
    }
    fs::rename(&tmp, dest).with_context(|| format!("move the tree to {}", dest.display()))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            SourceSpec::parse("linux-source-6.12=6.12.117-1~deb12u1").unwrap(),
            SourceSpec::Debian {
                package: "linux-source-6.12".into(),
                version: Some("6.12.117-1~deb12u1".into())
            }
        );
        assert_eq!(
            SourceSpec::parse("git:/src/linux@v6.1").unwrap(),
            SourceSpec::Git {
                repo: "/src/linux".into(),
                rev: "v6.1".into()
            }
        );
        let e = SourceSpec::parse("git:/src/linux").unwrap_err().to_string();
        assert!(e.contains("needs a revision"), "{e}");
        let e = SourceSpec::parse("/nonexistent").unwrap_err().to_string();
        assert!(e.contains("linux-source-6.12"), "{e}");
    }
}
