//! The reference-count probe (`vm-images/probe`): an out-of-tree module built against each
//! kernel's own headers (Debian's `linux-headers-*`), cached by content, carried by the guest.
//!
//! Debian builds a kernel with one compiler, named in its `CONFIG_CC_VERSION_TEXT`: gcc-12 for
//! bookworm's kernels and the `+deb12` backports, gcc-14 for trixie's and its backports (7.x).
//! The headers of a gcc-14 kernel pass gcc-14-only flags (`-fmin-function-alignment=16`), so
//! the host's gcc-12 cannot build against them. When the host lacks the kernel's compiler, the
//! module is built in a minimal chroot of the Debian release that ships that compiler, made
//! once with debootstrap under the cache directory; the host's own packages never change.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::apt::{compare_versions, Apt, Mirrors, Package, Suites};
use super::kernel::{config_lookup, Kernel};
use crate::cache::{self, Entry, KeyBuilder};

/// The module's sources, built into daxdiff so the cache key covers them.
const SOURCES: [(&str, &str); 3] = [
    (
        "daxdiff_probe.c",
        include_str!("../../../../vm-images/probe/daxdiff_probe.c"),
    ),
    ("Kbuild", include_str!("../../../../vm-images/probe/Kbuild")),
    (
        "Makefile",
        include_str!("../../../../vm-images/probe/Makefile"),
    ),
];

pub const MODULE_FILE: &str = "daxdiff_probe.ko";

/// Where a guest image carries the module, under `lib/modules/<release>/`; `/init` loads it.
pub const GUEST_DIR: &str = "extra";

/// Make arguments shared by every build: module BTF needs pahole and only serves BPF
/// introspection of the module itself.
const MAKE_ARGS: [&str; 2] = ["CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"];

/// A Debian release whose default compiler built its kernels, and what a build chroot of it
/// needs: the compiler, make, and the libraries Debian's kbuild tools (objtool) link.
struct ChrootRelease {
    release: &'static str,
    gcc_major: u32,
    packages: &'static [&'static str],
}

const CHROOT_RELEASES: [ChrootRelease; 2] = [
    ChrootRelease {
        release: "bookworm",
        gcc_major: 12,
        packages: &["gcc-12", "make", "libelf1"],
    },
    ChrootRelease {
        release: "trixie",
        gcc_major: 14,
        packages: &["gcc-14", "make", "libelf1t64"],
    },
];

/// A built probe module.
#[derive(Clone, Debug)]
pub struct ProbeModule {
    pub ko: PathBuf,
    pub sha256: String,
    /// How it was built, for messages: `gcc-14 in a trixie chroot`.
    pub toolchain: String,
}

/// The compiler a kernel was built with, from `CONFIG_CC_VERSION_TEXT`
/// (`x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCompiler {
    pub command: String,
    pub major: u32,
}

pub fn kernel_compiler(config: &str) -> Result<KernelCompiler> {
    let text = config_lookup(config, "CONFIG_CC_VERSION_TEXT")
        .context("the kernel config has no CONFIG_CC_VERSION_TEXT")?;
    if config_lookup(config, "CONFIG_CC_IS_GCC").as_deref() != Some("y") {
        bail!("the kernel was built with {text:?}, not gcc; the probe builds only with gcc");
    }
    let command = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let major = text
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no gcc version in {text:?}"))?;
    Ok(KernelCompiler { command, major })
}

/// Names and exact versions in a `Depends:` field (first alternative of each), e.g.
/// `linux-headers-7.3.4+deb13-common (= 7.3.4-1~bpo13+1)`.
pub fn parse_depends(field: &str) -> Vec<(String, Option<String>)> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?.trim();
            if name.is_empty() {
                return None;
            }
            let exact = first
                .split_once("(=")
                .and_then(|(_, v)| v.split(')').next())
                .map(|v| v.trim().to_string());
            Some((name.to_string(), exact))
        })
        .collect()
}

/// Debian's flavour headers directory holds only `include <common>/Makefile`; the build runs
/// from that common tree with the flavour directory as `O=`.
pub fn common_tree(flavour_makefile: &str) -> Option<&str> {
    flavour_makefile.lines().find_map(|l| {
        l.trim()
            .strip_prefix("include ")?
            .trim()
            .strip_suffix("/Makefile")
    })
}

/// The `vermagic=` string a module carries in its `.modinfo` section.
pub fn vermagic(ko: &[u8]) -> Option<String> {
    let key = b"vermagic=";
    let at = ko.windows(key.len()).position(|w| w == key)? + key.len();
    let end = ko[at..].iter().position(|&b| b == 0)? + at;
    String::from_utf8(ko[at..end].to_vec()).ok()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".+*?()[]{}^$|\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn find_on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn first_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where `make` runs: on the host, or in a build chroot.
enum Toolchain {
    Host {
        compiler: String,
    },
    Chroot {
        root: PathBuf,
        release: &'static str,
        compiler: String,
    },
}

impl Toolchain {
    fn describe(&self) -> String {
        match self {
            Toolchain::Host { compiler } => format!("the host's {compiler}"),
            Toolchain::Chroot {
                release, compiler, ..
            } => format!("{compiler} in a {release} chroot"),
        }
    }

    /// Scratch space the toolchain can see.
    fn scratch(&self, cache_dir: &Path) -> Result<tempfile::TempDir> {
        let parent = match self {
            Toolchain::Host { .. } => cache_dir.join("probes"),
            Toolchain::Chroot { root, .. } => root.join("build"),
        };
        fs::create_dir_all(&parent).with_context(|| format!("create {}", parent.display()))?;
        tempfile::Builder::new()
            .prefix(".build-")
            .tempdir_in(&parent)
            .with_context(|| format!("create a build directory in {}", parent.display()))
    }

    /// A host path as the toolchain sees it.
    fn path(&self, p: &Path) -> String {
        match self {
            Toolchain::Host { .. } => p.display().to_string(),
            Toolchain::Chroot { root, .. } => Path::new("/")
                .join(p.strip_prefix(root).unwrap_or(p))
                .display()
                .to_string(),
        }
    }

    /// `argv` run by the toolchain with a clean environment. A chroot gets its own mount
    /// and pid namespaces, so the `/proc` objtool needs disappears with the command.
    fn command(&self, argv: &[String]) -> Command {
        let mut c = match self {
            Toolchain::Host { .. } => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            Toolchain::Chroot { root, .. } => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--pid", "--fork", "--propagation", "private"])
                    .args([
                        "sh",
                        "-c",
                        r#"mount -t proc proc "$0/proc" && exec chroot "$0" "$@""#,
                    ])
                    .arg(root)
                    .args(argv);
                c
            }
        };
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("LC_ALL", "C")
            .env("HOME", "/root");
        c
    }
}

pub struct ProbeBuilder {
    cache: PathBuf,
}

impl ProbeBuilder {
    pub fn new(cache: &Path) -> ProbeBuilder {
        ProbeBuilder {
            cache: cache.to_path_buf(),
        }
    }

    /// Builds (or finds in the cache) the probe for `kernel`.
    pub fn build(&self, kernel: &Kernel) -> Result<ProbeModule> {
        if kernel.version == "local" {
            return self.build_local(kernel);
        }
        let config = kernel
            .config
            .as_ref()
            .and_then(|c| fs::read_to_string(c).ok())
            .with_context(|| {
                format!("kernel {} has no config to tell its compiler", kernel.name)
            })?;
        let cc = kernel_compiler(&config)?;
        let apt = Apt::open(&self.cache.join("apt/kernels"), Suites::Kernels)?;
        apt.update(false)?;
        let headers = self.header_packages(&apt, kernel)?;
        let toolchain = self.toolchain(&cc)?;
        let mut key = KeyBuilder::default().part("probe-layout", "v1");
        for (name, text) in SOURCES {
            key = key.part(name, text);
        }
        for p in &headers {
            key = key.part(&p.name, &p.version);
        }
        let key = key.part("toolchain", toolchain.describe()).finish();
        let e = Entry::new(&self.cache, "probes", &kernel.name.0, &key);
        if let Some(m) = e.verify() {
            return Ok(self.module(&e, &m));
        }
        self.refuse_known_failure(&e)?;
        eprintln!(
            "probe: building {MODULE_FILE} for {} ({}) with {}",
            kernel.name,
            kernel.release,
            toolchain.describe()
        );
        let debs = apt.download(&headers)?;
        let m = e.build(|dir| {
            let work = toolchain.scratch(&self.cache)?;
            let root = work.path().join("root");
            for d in &debs {
                super::apt::unpack(d, &root, None)?;
            }
            let flavour = root
                .join("usr/src")
                .join(format!("linux-headers-{}", kernel.release));
            let makefile = fs::read_to_string(flavour.join("Makefile")).with_context(|| {
                format!(
                    "the headers packages ({}) hold no {}",
                    headers
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    flavour.join("Makefile").display()
                )
            })?;
            let tree = match common_tree(&makefile) {
                Some(common) => vec![
                    "-C".to_string(),
                    toolchain.path(&root.join(common.trim_start_matches('/'))),
                    format!("O={}", toolchain.path(&flavour)),
                ],
                None => vec!["-C".to_string(), toolchain.path(&flavour)],
            };
            self.compile(&e, &toolchain, work.path(), &tree, kernel, dir)
        })?;
        Ok(self.module(&e, &m))
    }

    /// A local kernel brings its build tree as `lib/modules/<release>/build`.
    fn build_local(&self, kernel: &Kernel) -> Result<ProbeModule> {
        let build = kernel
            .modules_dir()
            .map(|d| d.join("build"))
            .filter(|b| b.join("Makefile").is_file())
            .with_context(|| {
                format!(
                    "local kernel {}: the probe is built against the kernel's build tree, expected at \
                     <modules>/build (lib/modules/{}/build); add `modules` to its catalogue entry \
                     with that symlink",
                    kernel.name, kernel.release
                )
            })?;
        let compiler = Command::new("gcc")
            .arg("--version")
            .output()
            .map(|o| first_line(&o))
            .context("run gcc: building the probe for a local kernel needs the host's gcc")?;
        let toolchain = Toolchain::Host { compiler };
        let e = self.local_entry(kernel, &toolchain)?;
        if let Some(m) = e.verify() {
            return Ok(self.module(&e, &m));
        }
        self.refuse_known_failure(&e)?;
        check_tree_holds(&build, kernel)?;
        eprintln!(
            "probe: building {MODULE_FILE} for {} against {}",
            kernel.name,
            build.display()
        );
        let m = e.build(|dir| {
            let work = toolchain.scratch(&self.cache)?;
            let tree = vec!["-C".to_string(), build.display().to_string()];
            self.compile(&e, &toolchain, work.path(), &tree, kernel, dir)
        })?;
        Ok(self.module(&e, &m))
    }

    /// A local kernel's probe is keyed by the kernel itself (its image and config): one
    /// build tree holds one revision after another during a bisection, and a probe built
    /// against another revision's headers would misread the structures it walks.
    fn local_entry(&self, kernel: &Kernel, toolchain: &Toolchain) -> Result<Entry> {
        let mut key = KeyBuilder::default().part("probe-layout", "v2");
        for (name, text) in SOURCES {
            key = key.part(name, text);
        }
        key = key.part("bzImage", cache::sha256_file(&kernel.bzimage)?);
        if let Some(c) = &kernel.config {
            key = key.part("config", cache::sha256_file(c)?);
        }
        let key = key.part("toolchain", toolchain.describe()).finish();
        Ok(Entry::new(&self.cache, "probes", &kernel.name.0, &key))
    }

    /// Whether the probe of a local kernel is built already (no build tree needed).
    pub fn local_cached(&self, kernel: &Kernel) -> bool {
        let Ok(o) = Command::new("gcc").arg("--version").output() else {
            return false;
        };
        let toolchain = Toolchain::Host {
            compiler: first_line(&o),
        };
        self.local_entry(kernel, &toolchain)
            .is_ok_and(|e| e.verify().is_some())
    }

    fn module(&self, e: &Entry, m: &cache::Manifest) -> ProbeModule {
        ProbeModule {
            ko: e.dir.join(MODULE_FILE),
            sha256: m.files.get(MODULE_FILE).cloned().unwrap_or_default(),
            toolchain: m.facts.get("toolchain").cloned().unwrap_or_default(),
        }
    }

    /// A compile failure is kept beside the entry: the same sources, headers and compiler
    /// would fail again, and every guest build would wait for it.
    fn failure_log(e: &Entry) -> PathBuf {
        // Not with_extension(): kernel names such as debian-7.3 carry dots.
        let name = e.dir.file_name().unwrap_or_default().to_string_lossy();
        e.dir.with_file_name(format!("{name}.failed.log"))
    }

    fn refuse_known_failure(&self, e: &Entry) -> Result<()> {
        let log = Self::failure_log(e);
        if let Ok(text) = fs::read_to_string(&log) {
            bail!(
                "the probe failed to build before with these sources, headers and compiler; \
                 fix the cause and remove {} to retry. End of its log:\n{}",
                log.display(),
                tail(&text, 15)
            );
        }
        Ok(())
    }

    /// Writes the sources next to the unpacked headers, runs make, checks the result.
    fn compile(
        &self,
        e: &Entry,
        toolchain: &Toolchain,
        work: &Path,
        tree: &[String],
        kernel: &Kernel,
        out_dir: &Path,
    ) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let src = work.join("src");
        fs::create_dir_all(&src)?;
        for (name, text) in SOURCES {
            fs::write(src.join(name), text)?;
        }
        let mut argv = vec!["make".to_string()];
        argv.extend(tree.iter().cloned());
        argv.push(format!("M={}", toolchain.path(&src)));
        argv.extend(MAKE_ARGS.iter().map(|s| s.to_string()));
        let out = toolchain
            .command(&argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", argv.join(" ")))?;
        let log = format!(
            "$ {}\n{}{}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ko = src.join(MODULE_FILE);
        if !out.status.success() || !ko.is_file() {
            let hint = if log.contains("error while loading shared libraries") {
                "\nhint: a kbuild tool lacks a library; on the host install libelf1 (bookworm's \
                 kbuild links it), or remove the build chroot under toolchains/ to remake it"
            } else {
                ""
            };
            let path = Self::failure_log(e);
            cache::write_atomic(&path, log.as_bytes())?;
            bail!(
                "building {MODULE_FILE} for {} with {} failed (log: {}):\n{}{hint}",
                kernel.name,
                toolchain.describe(),
                path.display(),
                tail(&log, 20)
            );
        }
        let data = fs::read(&ko)?;
        let magic = vermagic(&data).unwrap_or_default();
        if magic.split_whitespace().next() != Some(kernel.release.as_str()) {
            bail!(
                "{MODULE_FILE} was built for {magic:?}, not {}: the headers do not match the kernel",
                kernel.release
            );
        }
        fs::write(out_dir.join(MODULE_FILE), &data)?;
        fs::write(out_dir.join("build.log"), &log)?;
        let mut facts = BTreeMap::new();
        facts.insert("toolchain".into(), toolchain.describe());
        facts.insert("vermagic".into(), magic);
        Ok((vec![MODULE_FILE.into()], facts))
    }

    /// `linux-headers-<release>` at the kernel's version and the headers and kbuild packages
    /// it depends on (`-common`, `linux-kbuild-*`).
    fn header_packages(&self, apt: &Apt, kernel: &Kernel) -> Result<Vec<Package>> {
        let top = Package {
            name: format!("linux-headers-{}", kernel.release),
            version: kernel.version.clone(),
        };
        let versions = |name: &str| apt.search(&format!("^{}$", regex_escape(name)));
        if !versions(&top.name)?.contains(&top) {
            bail!(
                "the mirror serves no {} {} for kernel {}: the probe cannot be built without the \
                 kernel's headers (run `daxdiff images list --refresh`; a newer kernel may have \
                 replaced this one)",
                top.name,
                top.version,
                kernel.name
            );
        }
        let mut pkgs = vec![top.clone()];
        for (name, exact) in parse_depends(&apt.depends(&top)?) {
            if !(name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-")) {
                continue;
            }
            let version = match exact {
                Some(v) => v,
                None => {
                    let mut known = versions(&name)?;
                    known.sort_by(|a, b| compare_versions(&a.version, &b.version));
                    known
                        .iter()
                        .find(|p| p.version == kernel.version)
                        .or(known.last())
                        .map(|p| p.version.clone())
                        .with_context(|| {
                            format!("{} needs {name}, which the mirror does not serve", top.name)
                        })?
                }
            };
            pkgs.push(Package { name, version });
        }
        Ok(pkgs)
    }

    /// The host when it has the kernel's compiler, else a chroot of the release that has it.
    fn toolchain(&self, cc: &KernelCompiler) -> Result<Toolchain> {
        if let Some(path) = find_on_path(&cc.command) {
            if find_on_path("make").is_none() {
                bail!("make is missing on the host: install it (apt-get install make) to build the probe");
            }
            let out = Command::new(&path).arg("--version").output()?;
            return Ok(Toolchain::Host {
                compiler: first_line(&out),
            });
        }
        let rel = CHROOT_RELEASES
            .iter()
            .find(|r| r.gcc_major == cc.major)
            .with_context(|| {
                format!(
                    "the kernel was built with {} (gcc {}), which neither the host has nor a known \
                     Debian release ships ({}); add its release to CHROOT_RELEASES in images/probe.rs",
                    cc.command,
                    cc.major,
                    CHROOT_RELEASES
                        .iter()
                        .map(|r| format!("{}: gcc-{}", r.release, r.gcc_major))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let (root, compiler) = self.chroot(rel)?;
        Ok(Toolchain::Chroot {
            root,
            release: rel.release,
            compiler,
        })
    }

    /// The build chroot of a release, made once with debootstrap (needs root).
    fn chroot(&self, rel: &ChrootRelease) -> Result<(PathBuf, String)> {
        let key = KeyBuilder::default()
            .part("debootstrap-layout", "v1")
            .part("release", rel.release)
            .part("packages", rel.packages.join(","))
            .finish();
        // Probe builds run in root/build (see `Toolchain::scratch`).
        let e = Entry::new(&self.cache, "toolchains", rel.release, &key).with_scratch("root/build");
        let gcc = format!("usr/bin/x86_64-linux-gnu-gcc-{}", rel.gcc_major);
        let m = match e.verify() {
            Some(m) => m,
            None => {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    bail!(
                        "the kernel needs gcc-{0}, which the host lacks; daxdiff builds the probe in a \
                         {1} chroot, and making one (debootstrap) needs root: run once as root, or \
                         install gcc-{0} on the host if its release ships it",
                        rel.gcc_major,
                        rel.release
                    );
                }
                let debootstrap = find_on_path("debootstrap").context(
                    "debootstrap is missing: install it from the host's release (apt-get install \
                     debootstrap); daxdiff makes a build chroot with it for kernels built with a \
                     compiler the host lacks",
                )?;
                let mirrors = Mirrors::from_host()?;
                eprintln!(
                    "probe: making a {} build chroot with {} (debootstrap from {}; once, 1-3 minutes) in {}",
                    rel.release,
                    rel.packages.join(", "),
                    mirrors.debian,
                    e.dir.display()
                );
                e.build(|dir| make_chroot(&debootstrap, &mirrors, rel, &dir.join("root"), &gcc))?
            }
        };
        let compiler = m
            .facts
            .get("compiler")
            .cloned()
            .unwrap_or_else(|| format!("gcc-{}", rel.gcc_major));
        Ok((e.dir.join("root"), compiler))
    }
}

fn make_chroot(
    debootstrap: &Path,
    mirrors: &Mirrors,
    rel: &ChrootRelease,
    root: &Path,
    gcc: &str,
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let out = Command::new(debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--include={}", rel.packages.join(",")))
        .arg(format!("--keyring={}", mirrors.keyring))
        .arg(rel.release)
        .arg(root)
        .arg(&mirrors.debian)
        .stdin(Stdio::null())
        .output()
        .context("run debootstrap")?;
    // debootstrap mounts /proc and /sys in the target; never leave them behind a failure.
    unmount_below(root);
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        bail!(
            "debootstrap {} from {} failed (is the mirror reachable?):\n{}",
            rel.release,
            mirrors.debian,
            tail(&log, 20)
        );
    }
    if let Ok(rd) = fs::read_dir(root.join("var/cache/apt/archives")) {
        for f in rd.flatten() {
            if f.path().extension().is_some_and(|x| x == "deb") {
                let _ = fs::remove_file(f.path());
            }
        }
    }
    let chroot = find_on_path("chroot").context("chroot (package coreutils) is missing")?;
    let version = Command::new(chroot)
        .arg(root)
        .arg(format!("/{gcc}"))
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .context("run the chroot's compiler")?;
    if !version.status.success() {
        bail!(
            "the new {} chroot's /{gcc} does not run: {}",
            rel.release,
            String::from_utf8_lossy(&version.stderr)
        );
    }
    let mut facts = BTreeMap::new();
    facts.insert("compiler".into(), first_line(&version));
    Ok((
        vec![format!("root/{gcc}"), "root/usr/bin/make".into()],
        facts,
    ))
}

/// Lazily unmounts whatever is mounted at or below `root`, deepest first.
fn unmount_below(root: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = root.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// The probe for a guest image, or `None` with a warning: a guest without the probe boots and
/// runs programs, it only cannot report reference counts.
pub fn for_guest(cache_dir: &Path, kernel: &Kernel) -> Option<ProbeModule> {
    match ProbeBuilder::new(cache_dir).build(kernel) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!(
                "probe: WARNING: no reference-count probe for {}: {e:#}\nprobe: the guest boots \
                 without it; `daxdiff-exec refcounts` and refcount readings are unavailable on this kernel",
                kernel.name
            );
            None
        }
    }
}

/// The build tree a local kernel names must still hold that kernel: kbuild reuses one output
/// directory for consecutive revisions, so after a later build it holds another kernel's
/// headers and configuration.
pub fn check_tree_holds(build: &Path, kernel: &Kernel) -> Result<()> {
    let theirs = build.join("arch/x86/boot/bzImage");
    if !theirs.is_file() {
        return Ok(());
    }
    if cache::sha256_file(&theirs)? != cache::sha256_file(&kernel.bzimage)? {
        bail!(
            "{} now holds another build than kernel {} (a later build reused the directory): \
             the probe would be compiled against the wrong headers; rebuild {} (a bisection \
             rebuilds such a step by itself)",
            build.display(),
            kernel.name,
            kernel.name
        );
    }
    Ok(())
}

/// Appends a second newc archive holding the module to an initramfs: the kernel unpacks
/// concatenated archives in order, so the guest image's own writer stays untouched.
pub fn append_to_initramfs(initramfs: &Path, release: &str, module: &ProbeModule) -> Result<()> {
    let data = fs::read(&module.ko).with_context(|| format!("read {}", module.ko.display()))?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(initramfs)
        .with_context(|| format!("open {}", initramfs.display()))?;
    // Each archive must start 4-byte aligned; the kernel skips zeros between archives.
    let len = f.metadata()?.len();
    f.write_all(&vec![0u8; ((4 - len % 4) % 4) as usize])?;
    let base = format!("lib/modules/{release}");
    let mut w = std::io::BufWriter::new(f);
    let mut ino = 1;
    let mut entry = |w: std::io::BufWriter<fs::File>, name: &str, mode: u32, body: &[u8]| {
        ino += 1;
        let mut e = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .nlink(1)
            .write(w, body.len() as u32);
        e.write_all(body)?;
        e.finish()
    };
    for d in ["lib", "lib/modules", &base, &format!("{base}/{GUEST_DIR}")] {
        w = entry(w, d, 0o040755, &[])?;
    }
    w = entry(
        w,
        &format!("{base}/{GUEST_DIR}/{MODULE_FILE}"),
        0o100644,
        &data,
    )?;
    cpio::newc::trailer(w)?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_kernel(dir: &Path, image: &str) -> Kernel {
        fs::write(dir.join("bzImage"), image).unwrap();
        Kernel {
            name: crate::catalogue::KernelName("bisect-0123456789ab".into()),
            version: "local".into(),
            release: "6.1.0".into(),
            scheme: crate::catalogue::Scheme::Old,
            bzimage: dir.join("bzImage"),
            modules_root: None,
            config: None,
            vmlinux: None,
            packages: vec![],
        }
    }

    #[test]
    fn a_build_tree_that_moved_on_to_another_revision_is_refused() {
        let k = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let kernel = local_kernel(k.path(), "revision 16");
        // A tree without a kernel image (a user's own layout): nothing to compare.
        check_tree_holds(tree.path(), &kernel).unwrap();
        let image = tree.path().join("arch/x86/boot/bzImage");
        fs::create_dir_all(image.parent().unwrap()).unwrap();
        fs::write(&image, "revision 16").unwrap();
        check_tree_holds(tree.path(), &kernel).unwrap();
        fs::write(&image, "revision 17").unwrap();
        let e = check_tree_holds(tree.path(), &kernel)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bisect-0123456789ab") && e.contains("rebuild"),
            "{e}"
        );
        assert!(e.contains(&tree.path().display().to_string()), "{e}");
    }

    #[test]
    fn each_local_kernel_has_its_own_probe() {
        let cache = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let builder = ProbeBuilder::new(cache.path());
        let tc = Toolchain::Host {
            compiler: "gcc 12".into(),
        };
        let key = |k: &Kernel| builder.local_entry(k, &tc).unwrap().dir;
        // Same name, same tree files, another image: another probe.
        assert_ne!(
            key(&local_kernel(a.path(), "revision 16")),
            key(&local_kernel(b.path(), "revision 17"))
        );
        assert_eq!(
            key(&local_kernel(a.path(), "revision 16")),
            key(&local_kernel(b.path(), "revision 16"))
        );
        assert!(!builder.local_cached(&local_kernel(a.path(), "revision 16")));
    }

    #[test]
    fn compiler_from_both_debian_kernels() {
        let old = "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\nCONFIG_CC_IS_GCC=y\n";
        assert_eq!(
            kernel_compiler(old).unwrap(),
            KernelCompiler {
                command: "x86_64-linux-gnu-gcc-12".into(),
                major: 12
            }
        );
        let new = "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0\"\nCONFIG_CC_IS_GCC=y\n";
        assert_eq!(kernel_compiler(new).unwrap().major, 14);
        let clang =
            "CONFIG_CC_VERSION_TEXT=\"Debian clang version 19.1.7\"\nCONFIG_CC_IS_CLANG=y\n";
        assert!(kernel_compiler(clang)
            .unwrap_err()
            .to_string()
            .contains("not gcc"));
        // Every known compiler has a release to build in.
        for r in &CHROOT_RELEASES {
            assert!(r
                .packages
                .contains(&format!("gcc-{}", r.gcc_major).as_str()));
        }
    }

    #[test]
    fn headers_depends_name_common_and_kbuild() {
        // linux-headers-7.3.4+deb13-amd64 7.3.4-1~bpo13+1, as apt-cache shows it.
        let d = "gcc-14-for-host, linux-base (>= 4.12~), linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-headers-7.3.4+deb13-common (= 7.3.4-1~bpo13+1), linux-kbuild-7.3.4+deb13";
        let deps = parse_depends(d);
        assert_eq!(deps.len(), 5);
        assert_eq!(
            deps[3],
            (
                "linux-headers-7.3.4+deb13-common".into(),
                Some("7.3.4-1~bpo13+1".into())
            )
        );
        assert_eq!(deps[4], ("linux-kbuild-7.3.4+deb13".into(), None));
        assert_eq!(
            deps[1],
            ("linux-base".into(), None),
            ">= is not an exact version"
        );
        let alt = parse_depends("linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1) | linux-image-6.12.117+deb12-amd64-unsigned (= 6.12.117-1~deb12u1), gcc-12");
        assert_eq!(alt[0].0, "linux-image-6.12.117+deb12-amd64");
        assert_eq!(alt[1], ("gcc-12".into(), None));
    }

    #[test]
    fn flavour_makefiles_point_at_the_common_tree() {
        let m612 = "include /usr/src/linux-headers-6.12.117+deb12-common/Makefile\n";
        assert_eq!(
            common_tree(m612),
            Some("/usr/src/linux-headers-6.12.117+deb12-common")
        );
        let m73 = "KBUILD_OUTPUT=/usr/src/linux-headers-7.3.4+deb13-amd64\ninclude /usr/src/linux-headers-7.3.4+deb13-common/Makefile\n";
        assert_eq!(
            common_tree(m73),
            Some("/usr/src/linux-headers-7.3.4+deb13-common")
        );
        assert_eq!(common_tree("VERSION = 6\nPATCHLEVEL = 12\n"), None);
    }

    #[test]
    fn a_recorded_build_failure_is_refused_for_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = ProbeBuilder::new(dir.path());
        let failed = Entry::new(dir.path(), "probes", "debian-7.3", "aaaa");
        let other = Entry::new(dir.path(), "probes", "debian-7.3", "bbbb");
        assert!(b.refuse_known_failure(&failed).is_ok());
        let log = ProbeBuilder::failure_log(&failed);
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        fs::write(&log, "$ make\nerror: unknown type name 'foo'\n").unwrap();
        let e = b.refuse_known_failure(&failed).unwrap_err().to_string();
        assert!(
            e.contains("unknown type name") && e.contains("remove"),
            "{e}"
        );
        assert!(e.contains("debian-7.3-aaaa.failed.log"), "{e}");
        assert!(b.refuse_known_failure(&other).is_ok(), "another key builds");
    }

    #[test]
    fn vermagic_and_regex_escaping() {
        let ko =
            b"\x7fELF....license=GPL\0vermagic=7.3.4+deb13-amd64 SMP preempt mod_unload \0name=x\0";
        assert_eq!(
            vermagic(ko).as_deref(),
            Some("7.3.4+deb13-amd64 SMP preempt mod_unload ")
        );
        assert_eq!(vermagic(b"nothing here"), None);
        assert_eq!(
            regex_escape("linux-kbuild-7.3.4+deb13"),
            "linux-kbuild-7\\.3\\.4\\+deb13"
        );
    }

    #[test]
    fn the_module_is_appended_as_a_second_archive() {
        let dir = tempfile::tempdir().unwrap();
        let initramfs = dir.path().join("initramfs.cpio");
        // A first archive of odd length, as another writer might leave it.
        let mut first = cpio::newc::Builder::new("init")
            .mode(0o100755)
            .write(Vec::new(), 3);
        first.write_all(b"abc").unwrap();
        let first = cpio::newc::trailer(first.finish().unwrap()).unwrap();
        let mut bytes = first.clone();
        bytes.push(0);
        fs::write(&initramfs, &bytes).unwrap();
        let ko = dir.path().join(MODULE_FILE);
        fs::write(&ko, b"module bytes").unwrap();
        let m = ProbeModule {
            ko,
            sha256: String::new(),
            toolchain: String::new(),
        };
        append_to_initramfs(&initramfs, "7.3.4+deb13-amd64", &m).unwrap();
        let all = fs::read(&initramfs).unwrap();
        let second_at = all[bytes.len()..].iter().position(|&b| b != 0).unwrap() + bytes.len();
        assert_eq!(second_at % 4, 0, "the second archive starts aligned");
        let mut rest = &all[second_at..];
        let mut names = Vec::new();
        loop {
            let r = cpio::newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            names.push(r.entry().name().to_string());
            let mut body = Vec::new();
            let mut r = r;
            std::io::Read::read_to_end(&mut r, &mut body).unwrap();
            if names.last().unwrap().ends_with(".ko") {
                assert_eq!(body, b"module bytes");
            }
            rest = r.finish().unwrap();
        }
        assert_eq!(
            names.last().map(String::as_str),
            Some("lib/modules/7.3.4+deb13-amd64/extra/daxdiff_probe.ko")
        );
    }
}
