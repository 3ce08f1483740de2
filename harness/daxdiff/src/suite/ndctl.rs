//! ndctl's test build: meson with the tests (destructive ones included) from Debian's orig
//! tarball, against the host's libraries (the suite guest has the same release's), cached.
//! The cache entry holds what the guest runs: the built programs and libraries under
//! `tree/build` and the source's `test/` directory under `tree/src/test`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::source::{self, Tarball};
use super::spec;
use crate::cache::{Entry, KeyBuilder};

/// meson options: tests on, destructive tests on, nothing the guest cannot use.
pub const MESON_OPTIONS: &[&str] = &[
    "-Dtest=enabled",
    "-Ddestructive=enabled",
    "-Ddocs=disabled",
    "-Dsystemd=disabled",
    "-Dbashcompletiondir=no",
    "--buildtype=debug",
];

/// Host packages (the host's release) the build needs; `ci/setup.sh` installs them.
pub const BUILD_DEPS: &[&str] = &[
    "meson",
    "ninja-build",
    "pkg-config",
    "gcc",
    "libc6-dev",
    "libkmod-dev",
    "libudev-dev",
    "uuid-dev",
    "libjson-c-dev",
    "libiniparser-dev",
    "libkeyutils-dev",
    "libtracefs-dev",
    "libtraceevent-dev",
];

/// ndctl's tests found in the guest under this directory.
pub const GUEST_DIR: &str = "/opt/ndctl";

/// A cached test build.
#[derive(Clone, Debug)]
pub struct NdctlBuild {
    /// `build/…` and `src/test/…` below it, laid into the guest at [`GUEST_DIR`].
    pub tree: PathBuf,
    pub version: String,
    /// The cache key: changes with the tarball, the options and the host toolchain.
    pub key: String,
    /// The dax tests the source's meson.build lists.
    pub dax_tests: Vec<String>,
}

/// The versions of the build dependencies installed on the host, for the cache key; an
/// error names what to install when one is missing.
fn toolchain() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}=${Version} ${db:Status-Abbrev}\\n"])
        .args(BUILD_DEPS)
        .output()
        .context("run dpkg-query (the host must be Debian)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = BUILD_DEPS
        .iter()
        .copied()
        .filter(|p| {
            !text
                .lines()
                .any(|l| l.split('=').next() == Some(*p) && l.trim_end().ends_with("ii"))
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "building ndctl's tests needs host packages that are not installed: {}; install them with `apt-get install --no-install-recommends {}` (ci/setup.sh does)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    Ok(text.into_owned())
}

impl NdctlBuild {
    /// Fetches the source and builds it unless the cache holds this build already.
    pub fn get(cache: &Path) -> Result<NdctlBuild> {
        let tarball = source::fetch_orig(cache, "ndctl")?;
        let toolchain = toolchain()?;
        let key = KeyBuilder::default()
            .part("tarball", &tarball.sha256)
            .part("options", MESON_OPTIONS.join(" "))
            .part("toolchain", &toolchain)
            .finish();
        let upstream = tarball.version.split('-').next().unwrap_or("").to_string();
        let e = Entry::new(cache, "ndctl", &format!("ndctl-{upstream}"), &key);
        let manifest = match e.verify() {
            Some(m) => m,
            None => {
                eprintln!(
                    "suite: building ndctl {} with its tests (meson, ninja)",
                    tarball.version
                );
                e.build(|dir| build(&tarball, dir))?
            }
        };
        let dax_tests = manifest
            .facts
            .get("dax_tests")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(NdctlBuild {
            tree: e.dir.join("tree"),
            version: tarball.version,
            key,
            dax_tests,
        })
    }
}

type Built = (Vec<String>, BTreeMap<String, String>);

fn run(cmd: &mut Command, what: &str, log: &Path) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("run {what} (is it installed? ci/setup.sh installs it)"))?;
    let mut text = fs::read(log).unwrap_or_default();
    text.extend_from_slice(&out.stdout);
    text.extend_from_slice(&out.stderr);
    fs::write(log, &text)?;
    if !out.status.success() {
        let all = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = all.lines().rev().take(25).collect();
        bail!(
            "{what} failed building ndctl:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

fn build(tarball: &Tarball, dir: &Path) -> Result<Built> {
    let work = tempfile::Builder::new().prefix("ndctl-build-").tempdir()?;
    let log = dir.join("build.log");
    fs::write(&log, b"")?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball.path)
            .arg("-C")
            .arg(work.path()),
        "tar",
        &log,
    )?;
    let src = fs::read_dir(work.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("meson.build").is_file())
        .with_context(|| format!("{} holds no meson project", tarball.path.display()))?;
    let bdir = work.path().join("build");
    run(
        Command::new("meson")
            .arg("setup")
            .args(MESON_OPTIONS)
            .arg(&bdir)
            .arg(&src),
        "meson setup",
        &log,
    )?;
    run(Command::new("ninja").arg("-C").arg(&bdir), "ninja", &log)?;

    let tree = dir.join("tree");
    let mut files = vec!["build.log".to_string()];
    copy_outputs(&bdir, &bdir, &tree.join("build"), &mut files)?;
    copy_dir(&src.join("test"), &tree.join("src/test"), &mut files)?;
    for f in files.iter_mut().skip(1) {
        *f = format!(
            "tree/{}",
            Path::new(f)
                .strip_prefix(&tree)
                .unwrap_or(Path::new(f))
                .display()
        );
    }
    let meson = fs::read_to_string(src.join("test/meson.build"))?;
    let dax = spec::dax_tests_in_meson(&meson);
    let ours: Vec<&str> = spec::DAX_SUITE.iter().map(|t| t.name).collect();
    if dax != ours {
        eprintln!(
            "suite: warning: ndctl {}'s dax suite lists {} but daxdiff knows {}",
            tarball.version,
            dax.join(" "),
            ours.join(" ")
        );
    }
    let mut facts = BTreeMap::new();
    facts.insert("version".into(), tarball.version.clone());
    facts.insert("tarball_sha256".into(), tarball.sha256.clone());
    facts.insert("options".into(), MESON_OPTIONS.join(" "));
    facts.insert("dax_tests".into(), dax.join(" "));
    Ok((files, facts))
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    use std::io::Read;
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Copies the build's programs and shared libraries (and the libraries' symlinks), keeping
/// their relative paths: their `$ORIGIN` run paths then still find each other.
fn copy_outputs(root: &Path, dir: &Path, to: &Path, files: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let meta = fs::symlink_metadata(&path)?;
        let dest = to.join(path.strip_prefix(root)?);
        if meta.is_dir() {
            if name.ends_with(".p") || name.starts_with("meson-") {
                continue;
            }
            copy_outputs(root, &path, to, files)?;
        } else if meta.file_type().is_symlink() {
            if name.contains(".so") {
                fs::create_dir_all(dest.parent().unwrap())?;
                std::os::unix::fs::symlink(fs::read_link(&path)?, &dest)?;
            }
        } else if meta.is_file() && !name.ends_with(".o") && is_elf(&path) {
            fs::create_dir_all(dest.parent().unwrap())?;
            fs::copy(&path, &dest)?;
            files.push(dest.display().to_string());
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path, files: &mut Vec<String>) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let path = e.path();
        let dest = to.join(e.file_name());
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            copy_dir(&path, &dest, files)?;
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&path)?, &dest)?;
        } else {
            fs::copy(&path, &dest)?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(meta.permissions().mode()))?;
            files.push(dest.display().to_string());
        }
    }
    Ok(())
}
