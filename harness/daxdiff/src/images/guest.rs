//! Guest images: an initramfs built from Debian packages of the host's release, the guest
//! executor, `/init`, and the kernel modules DAX needs (resolved with their dependencies).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::apt::{Apt, Package, Suites};
use super::kernel::Kernel;
use crate::cache::{sha256_file, Entry, KeyBuilder};

pub const RECIPE: &str = include_str!("../../../../vm-images/guest/recipe.toml");
pub const INIT: &str = include_str!("../../../../vm-images/guest/init.sh");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub packages: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub strip: Vec<String>,
    pub modules: Vec<String>,
    #[serde(default)]
    pub optional_modules: Vec<String>,
    /// Ship the kernel's whole module tree as packaged (compressed, with depmod's indexes)
    /// for a real `modprobe`, and list the modules to load by name in `modules.probe`,
    /// instead of decompressed files for busybox `insmod` listed in `modules.load`.
    #[serde(default)]
    pub module_tree: bool,
}

impl Recipe {
    pub fn builtin() -> Recipe {
        toml::from_str(RECIPE).expect("the shipped recipe parses (tested)")
    }

    pub fn parse(text: &str) -> Result<Recipe> {
        toml::from_str(text).context("parse guest recipe")
    }

    pub fn excludes(&self, package: &str) -> bool {
        self.exclude.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => package.starts_with(prefix),
            None => package == e,
        })
    }
}

/// The image's `probe` fact when the builder was told to leave the probe out (a probe that
/// did not build is `none`, and the host printed why).
pub const PROBE_LEFT_OUT: &str = "left out";

/// A built guest image for one kernel.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub initramfs: PathBuf,
    pub facts: BTreeMap<String, String>,
}

/// Where the guest executor binary is: `$DAXDIFF_EXEC`, beside this program, or the
/// workspace's static build output.
pub fn find_executor() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DAXDIFF_EXEC") {
        let p = PathBuf::from(p);
        return check_static(&p).map(|_| p);
    }
    let mut cands = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            cands.push(dir.join("daxdiff-exec"));
            // target/<profile>/daxdiff → target/x86_64-unknown-linux-gnu/release/daxdiff-exec
            if let Some(target) = dir.parent() {
                cands.push(target.join("x86_64-unknown-linux-gnu/release/daxdiff-exec"));
            }
            if let Some(target) = dir.parent().and_then(Path::parent) {
                cands.push(target.join("x86_64-unknown-linux-gnu/release/daxdiff-exec"));
            }
        }
    }
    // A candidate that is there but unusable (truncated, dynamic) is named in the error:
    // "not found" would send the user looking for a file that exists.
    let mut refused = Vec::new();
    for c in &cands {
        if c.is_file() {
            match check_static(c) {
                Ok(()) => return Ok(c.clone()),
                Err(e) => refused.push(format!("{e:#}")),
            }
        }
    }
    let refused = refused.iter().map(|r| format!("; {r}")).collect::<String>();
    bail!(
        "no usable guest executor daxdiff-exec (a static binary) was found (looked at {}){refused}; build it with `ci/build.sh` or set DAXDIFF_EXEC",
        cands.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// The guest has no host libraries: the executor must carry no ELF interpreter.
fn check_static(path: &Path) -> Result<()> {
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if data.get(..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) {
        bail!(
            "{} is not a 64-bit ELF binary; rebuild it with `ci/build.sh`",
            path.display()
        );
    }
    match has_interpreter(&data) {
        None => bail!(
            "{} is a truncated or damaged ELF file ({} bytes; an interrupted build?); rebuild it with `ci/build.sh`",
            path.display(),
            data.len()
        ),
        Some(true) => bail!(
            "{} is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu",
            path.display()
        ),
        Some(false) => {}
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF image has a `PT_INTERP` program header; `None` when its
/// header or program headers lie past the end of the data.
fn has_interpreter(data: &[u8]) -> Option<bool> {
    let bytes = |o: usize, n: usize| data.get(o..o.checked_add(n)?);
    let u16at = |o: usize| Some(u16::from_le_bytes(bytes(o, 2)?.try_into().ok()?) as usize);
    let phoff = usize::try_from(u64::from_le_bytes(bytes(0x20, 8)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (u16at(0x36)?, u16at(0x38)?);
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let ptype = u32::from_le_bytes(bytes(off, 4)?.try_into().ok()?);
        if ptype == 3 {
            return Some(true);
        }
    }
    Some(false)
}

/// Which guest to build: a recipe, an `/init`, and host trees laid over the packages.
#[derive(Clone, Debug)]
pub struct Flavour {
    /// `fuzz` for the fuzzing guest; any other name labels its own cache entries.
    pub name: String,
    /// The recipe's TOML text (part of the cache key).
    pub recipe: String,
    pub init: String,
    pub overlays: Vec<Overlay>,
}

/// A host directory copied into the guest image.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub source: PathBuf,
    /// Where it lands in the guest, relative to `/` (e.g. `opt/ndctl`).
    pub target: String,
    /// Identifies the directory's content (its cache key): a new key rebuilds the image.
    pub key: String,
}

impl Flavour {
    /// The guest the fuzzer and `daxdiff vm` boot (`vm-images/guest`).
    pub fn fuzz() -> Flavour {
        Flavour {
            name: "fuzz".into(),
            recipe: RECIPE.into(),
            init: INIT.into(),
            overlays: vec![],
        }
    }

    fn is_fuzz(&self) -> bool {
        self.name == "fuzz"
    }

    // The fuzzing guest keeps the cache labels it had before flavours existed.
    fn userspace_label(&self) -> &str {
        if self.is_fuzz() {
            "debian"
        } else {
            &self.name
        }
    }

    fn guest_label(&self, kernel: &Kernel) -> String {
        if self.is_fuzz() {
            kernel.name.0.clone()
        } else {
            format!("{}-{}", kernel.name, self.name)
        }
    }
}

pub struct GuestBuilder {
    cache: PathBuf,
    recipe: Recipe,
    flavour: Flavour,
    probe: bool,
}

impl GuestBuilder {
    pub fn new(cache: &Path) -> GuestBuilder {
        GuestBuilder {
            cache: cache.to_path_buf(),
            recipe: Recipe::builtin(),
            flavour: Flavour::fuzz(),
            probe: true,
        }
    }

    /// Leaves the reference-count probe out: for guests that never read reference counts
    /// (bisection steps), which then need no kernel headers and no module build.
    pub fn without_probe(mut self) -> GuestBuilder {
        self.probe = false;
        self
    }

    /// A builder for another guest than the fuzzing one.
    pub fn with_flavour(cache: &Path, flavour: Flavour) -> Result<GuestBuilder> {
        let recipe = Recipe::parse(&flavour.recipe)
            .with_context(|| format!("the {} guest's recipe", flavour.name))?;
        Ok(GuestBuilder {
            cache: cache.to_path_buf(),
            recipe,
            flavour,
            probe: true,
        })
    }

    /// The userspace tree (kernel independent), cached by package versions and recipe.
    fn userspace(&self) -> Result<(PathBuf, Vec<Package>)> {
        let apt = Apt::open(&self.cache.join("apt/userspace"), Suites::HostRelease)?;
        apt.update(false)?;
        let names: Vec<&str> = self.recipe.packages.iter().map(String::as_str).collect();
        let pkgs: Vec<Package> = apt
            .closure(&names)?
            .into_iter()
            .filter(|p| !self.recipe.excludes(&p.name))
            .collect();
        let mut key = KeyBuilder::default().part("recipe", &self.flavour.recipe);
        for p in &pkgs {
            key = key.part(&p.name, &p.version);
        }
        let e = Entry::new(
            &self.cache,
            "userspace",
            self.flavour.userspace_label(),
            &key.finish(),
        );
        if e.verify().is_none() {
            eprintln!(
                "guest: unpacking {} Debian packages for the guest userspace",
                pkgs.len()
            );
            let debs = apt.download(&pkgs)?;
            e.build(|dir| {
                let root = dir.join("root");
                for d in &debs {
                    super::apt::unpack(d, &root, None)?;
                }
                for s in &self.recipe.strip {
                    let _ = fs::remove_dir_all(root.join(s));
                }
                let listing = tree_listing(&root)?;
                fs::write(dir.join("listing"), listing)?;
                Ok((vec!["listing".into()], BTreeMap::new()))
            })?;
        }
        // The listing names every file with its size: a damaged tree fails this check.
        let listing = fs::read_to_string(e.dir.join("listing"))?;
        if tree_listing(&e.dir.join("root"))? != listing {
            fs::remove_dir_all(&e.dir)?;
            bail!("guest userspace cache {} was damaged and has been removed; run again to rebuild it", e.dir.display());
        }
        Ok((e.dir.join("root"), pkgs))
    }

    /// Builds (or finds) the guest image for `kernel`.
    pub fn build(&self, kernel: &Kernel) -> Result<GuestImage> {
        let exec = find_executor()?;
        let exec_sum = sha256_file(&exec)?;
        let (userspace, pkgs) = self.userspace()?;
        let modules = self.resolve_modules(kernel)?;
        // The reference-count probe (images::probe) is optional: a guest without it boots.
        let probe = self
            .probe
            .then(|| super::probe::for_guest(&self.cache, kernel))
            .flatten();
        let mut key = KeyBuilder::default()
            .part("layout", "builtin-index")
            .part(
                "kernel",
                format!(
                    "{} {} {}",
                    kernel.release,
                    kernel.version,
                    kernel.bzimage.display()
                ),
            )
            .part("recipe", &self.flavour.recipe)
            .part("init", &self.flavour.init)
            .part("executor", &exec_sum);
        for p in &pkgs {
            key = key.part(&p.name, &p.version);
        }
        for (g, group) in modules.iter().enumerate() {
            for m in group {
                key = key.part(&format!("module{g}"), m.to_string_lossy().as_bytes());
            }
        }
        for o in &self.flavour.overlays {
            key = key.part("overlay", format!("{} {}", o.target, o.key));
        }
        key = key.part(
            "probe",
            probe.as_ref().map_or("none", |p| p.sha256.as_str()),
        );
        let e = Entry::new(
            &self.cache,
            "guests",
            &self.flavour.guest_label(kernel),
            &key.finish(),
        );
        let manifest = match e.verify() {
            Some(m) => m,
            None => {
                eprintln!(
                    "guest: building the initramfs for {} ({} modules)",
                    kernel.name,
                    modules.iter().map(Vec::len).sum::<usize>()
                );
                e.build(|dir| {
                    let path = dir.join("initramfs.cpio");
                    write_initramfs(
                        &path,
                        &userspace,
                        kernel,
                        &modules,
                        &exec,
                        &self.flavour,
                        self.recipe.module_tree,
                    )?;
                    if let Some(p) = &probe {
                        super::probe::append_to_initramfs(&path, &kernel.release, p)?;
                    }
                    let mut facts = BTreeMap::new();
                    facts.insert("kernel".into(), kernel.release.clone());
                    facts.insert(
                        "packages".into(),
                        pkgs.iter()
                            .map(|p| format!("{}={}", p.name, p.version))
                            .collect::<Vec<_>>()
                            .join(" "),
                    );
                    facts.insert("executor".into(), exec_sum.clone());
                    let absent = if self.probe { "none" } else { PROBE_LEFT_OUT };
                    facts.insert(
                        "probe".into(),
                        probe
                            .as_ref()
                            .map_or(absent.into(), |p| p.toolchain.clone()),
                    );
                    Ok((vec!["initramfs.cpio".into()], facts))
                })?
            }
        };
        Ok(GuestImage {
            initramfs: e.dir.join("initramfs.cpio"),
            facts: manifest.facts,
        })
    }

    /// Module files (relative to the modules dir) in groups that share no module: each group
    /// in load order (dependencies first); the guest loads the groups in parallel, which
    /// matters under TCG where relocating xfs and ext4 takes seconds.
    pub fn resolve_modules(&self, kernel: &Kernel) -> Result<Vec<Vec<PathBuf>>> {
        let Some(root) = &kernel.modules_root else {
            return Ok(vec![]); // a local kernel with everything built in
        };
        let dir = kernel.modules_dir().expect("root implies dir");
        let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        let is_builtin = |m: &str| {
            let file = format!("/{}.ko", m.replace('-', "_"));
            builtin
                .lines()
                .any(|l| l.replace('-', "_").ends_with(&file))
        };
        let mut chains: Vec<Vec<PathBuf>> = Vec::new();
        let wanted = self
            .recipe
            .optional_modules
            .iter()
            .map(|m| (m, true))
            .chain(self.recipe.modules.iter().map(|m| (m, false)));
        for (m, optional) in wanted {
            if is_builtin(m) {
                continue;
            }
            let out = Command::new("modprobe")
                .args(["-C", "/dev/null", "-d"])
                .arg(root)
                .args(["-S", &kernel.release, "--show-depends", m])
                .output()
                .context("run modprobe (package kmod)")?;
            if !out.status.success() {
                if optional {
                    continue;
                }
                bail!(
                    "kernel {} lacks module {m} needed for DAX testing (not built in, not in {}): {}",
                    kernel.name,
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let mut chain = Vec::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(path) = line.strip_prefix("insmod ") else {
                    continue;
                };
                let path = Path::new(path.split_whitespace().next().unwrap_or(path));
                let rel = path.strip_prefix(&dir).with_context(|| {
                    format!("module path {} outside {}", path.display(), dir.display())
                })?;
                chain.push(rel.to_path_buf());
            }
            chains.push(chain);
        }
        Ok(group_chains(chains))
    }
}

/// Merges dependency chains that share a module into one group (order kept, duplicates
/// dropped), so groups are independent and each is still dependencies-first.
pub fn group_chains(chains: Vec<Vec<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    for chain in chains {
        let (mut touching, rest): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .partition(|g| g.iter().any(|m| chain.contains(m)));
        let mut merged: Vec<PathBuf> = touching.drain(..).flatten().collect();
        for m in chain {
            if !merged.contains(&m) {
                merged.push(m);
            }
        }
        groups = rest;
        if !merged.is_empty() {
            groups.push(merged);
        }
    }
    groups
}

/// Names and sizes of every file under `root`, sorted: a cheap integrity fingerprint.
fn tree_listing(root: &Path) -> Result<String> {
    let mut lines = Vec::new();
    walk(root, root, &mut |rel, meta| {
        lines.push(format!(
            "{} {:o} {}",
            rel.display(),
            meta.mode(),
            if meta.is_file() { meta.len() } else { 0 }
        ));
        Ok(())
    })?;
    lines.sort();
    Ok(lines.join("\n"))
}

fn walk(
    root: &Path,
    dir: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta = fs::symlink_metadata(&path)?;
        f(path.strip_prefix(root).unwrap(), &meta)?;
        if meta.is_dir() {
            walk(root, &path, f)?;
        }
    }
    Ok(())
}

/// Writes the newc cpio archive the kernel unpacks as its root file system.
fn write_initramfs(
    path: &Path,
    userspace: &Path,
    kernel: &Kernel,
    modules: &[Vec<PathBuf>],
    exec: &Path,
    flavour: &Flavour,
    module_tree: bool,
) -> Result<()> {
    let mut w = Cpio::new(BufWriter::new(fs::File::create(path)?));
    let mut written: BTreeSet<String> = BTreeSet::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "mnt",
        "etc",
        "etc/daxdiff",
        "usr",
        "usr/bin",
        "lib",
        "lib/modules",
    ] {
        w.dir(d, 0o755)?;
        written.insert(d.to_string());
    }
    w.node("dev/console", 0o020600, 5, 1)?;
    w.node("dev/null", 0o020666, 1, 3)?;
    written.insert("dev/console".into());
    written.insert("dev/null".into());

    // Debian's unpacked packages.
    walk(userspace, userspace, &mut |rel, meta| {
        let name = rel.to_string_lossy().to_string();
        if written.contains(&name) {
            return Ok(());
        }
        let full = userspace.join(rel);
        if meta.file_type().is_symlink() {
            w.symlink(&name, &fs::read_link(&full)?.to_string_lossy())?;
        } else if meta.is_dir() {
            w.dir(&name, meta.mode() & 0o7777)?;
        } else if meta.is_file() {
            w.file(&name, meta.mode() & 0o7777, &fs::read(&full)?)?;
        }
        written.insert(name);
        Ok(())
    })?;

    // busybox applets where no real tool exists.
    let busybox = userspace.join("bin/busybox");
    let out = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .context("run the guest's busybox to list its applets")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim_start_matches('/');
        if applet.is_empty() || written.contains(applet) || userspace.join(applet).exists() {
            continue;
        }
        // Parent directories exist in every Debian tree (bin, sbin, usr/bin, usr/sbin).
        w.symlink(applet, "/bin/busybox")?;
        written.insert(applet.to_string());
    }

    w.file("init", 0o755, flavour.init.as_bytes())?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    w.file("etc/group", 0o644, b"root:x:0:\n")?;
    w.file("etc/shells", 0o644, b"/bin/sh\n")?;
    w.file(
        "etc/ld.so.conf",
        0o644,
        b"/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n",
    )?;
    w.file("etc/ld.so.cache", 0o644, &ld_cache(userspace)?)?;
    w.file("usr/bin/daxdiff-exec", 0o755, &fs::read(exec)?)?;

    for o in &flavour.overlays {
        write_tree(&mut w, &mut written, &o.source, &o.target)?;
    }

    if module_tree {
        if let Some(dir) = kernel.modules_dir() {
            let base = format!("lib/modules/{}", kernel.release);
            write_tree(&mut w, &mut written, &dir, &base)?;
        }
        let names: String = modules
            .iter()
            .flatten()
            .map(|m| module_name(m) + "\n")
            .collect();
        w.file("etc/daxdiff/modules.probe", 0o644, names.as_bytes())?;
        w.finish()?;
        return Ok(());
    }

    // Modules, decompressed so the guest's busybox insmod can load them.
    let mut load = String::new();
    if let Some(dir) = kernel.modules_dir() {
        let base = format!("lib/modules/{}", kernel.release);
        w.dir(&base, 0o755)?;
        // daxctl asks libkmod for device_dax and friends: on kernels that build them in, the
        // builtin index is what tells libkmod there is nothing to load.
        for index in [
            "modules.builtin",
            "modules.builtin.bin",
            "modules.builtin.modinfo",
        ] {
            if let Ok(data) = fs::read(dir.join(index)) {
                w.file(&format!("{base}/{index}"), 0o644, &data)?;
            }
        }
        let mut dirs = BTreeSet::new();
        for (group, rel) in modules
            .iter()
            .enumerate()
            .flat_map(|(g, v)| v.iter().map(move |m| (g, m)))
        {
            let mut plain = rel.to_string_lossy().to_string();
            let data = fs::read(dir.join(rel))?;
            let data = if let Some(stripped) = plain.strip_suffix(".xz") {
                plain = stripped.to_string();
                let mut out = Vec::new();
                xz2::read::XzDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .with_context(|| format!("decompress {}", rel.display()))?;
                out
            } else if plain.ends_with(".zst") || plain.ends_with(".gz") {
                bail!(
                    "module {} uses a compression daxdiff does not unpack (only .xz)",
                    rel.display()
                );
            } else {
                data
            };
            let target = Path::new(&base).join(&plain);
            for anc in target
                .parent()
                .unwrap()
                .ancestors()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let s = anc.to_string_lossy().to_string();
                if !s.is_empty() && !written.contains(&s) && dirs.insert(s.clone()) {
                    w.dir(&s, 0o755)?;
                }
            }
            w.file(&target.to_string_lossy(), 0o644, &data)?;
            load.push_str(&format!("{group} {plain}\n"));
        }
    }
    w.file("etc/daxdiff/modules.load", 0o644, load.as_bytes())?;
    w.finish()?;
    Ok(())
}

/// Copies the host tree `source` into the archive at `target`, creating missing parents.
fn write_tree<W: Write>(
    w: &mut Cpio<W>,
    written: &mut BTreeSet<String>,
    source: &Path,
    target: &str,
) -> Result<()> {
    let target = target.trim_matches('/');
    let mut parent = PathBuf::new();
    for part in Path::new(target).components() {
        parent.push(part);
        let s = parent.to_string_lossy().to_string();
        if written.insert(s.clone()) {
            w.dir(&s, 0o755)?;
        }
    }
    walk(source, source, &mut |rel, meta| {
        let name = format!("{target}/{}", rel.display());
        if !written.insert(name.clone()) {
            return Ok(());
        }
        let full = source.join(rel);
        if meta.file_type().is_symlink() {
            w.symlink(&name, &fs::read_link(&full)?.to_string_lossy())?;
        } else if meta.is_dir() {
            w.dir(&name, meta.mode() & 0o7777)?;
        } else if meta.is_file() {
            w.file(&name, meta.mode() & 0o7777, &fs::read(&full)?)?;
        }
        Ok(())
    })
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`: the name modprobe takes.
fn module_name(rel: &Path) -> String {
    let file = rel.file_name().unwrap_or_default().to_string_lossy();
    file.split(".ko").next().unwrap_or(&file).to_string()
}

/// Builds `ld.so.cache` for the guest tree with the host's ldconfig (same release, same format).
fn ld_cache(userspace: &Path) -> Result<Vec<u8>> {
    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("ld.so.conf");
    let cache = tmp.path().join("ld.so.cache");
    fs::write(
        &conf,
        format!(
            "{0}/lib/x86_64-linux-gnu\n{0}/usr/lib/x86_64-linux-gnu\n",
            userspace.display()
        ),
    )?;
    let st = Command::new("ldconfig")
        .arg("-X")
        .arg("-f")
        .arg(&conf)
        .arg("-C")
        .arg(&cache)
        .status()
        .or_else(|_| {
            Command::new("/sbin/ldconfig")
                .arg("-X")
                .arg("-f")
                .arg(&conf)
                .arg("-C")
                .arg(&cache)
                .status()
        })
        .context("run ldconfig (package libc-bin)")?;
    if !st.success() {
        bail!("ldconfig failed for the guest tree");
    }
    // The cache records host paths of the tree; the guest sees them at /.
    let data = fs::read(&cache)?;
    Ok(replace_prefix(
        &data,
        userspace.to_string_lossy().as_bytes(),
    ))
}

/// Drops every occurrence of `prefix` from NUL-terminated strings in an ld.so.cache, keeping
/// the string table's offsets valid by padding each shortened string with NULs.
fn replace_prefix(data: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut i = 0;
    while i + prefix.len() <= out.len() {
        if &out[i..i + prefix.len()] == prefix {
            let end = out[i..]
                .iter()
                .position(|&b| b == 0)
                .map_or(out.len(), |p| i + p);
            let rest: Vec<u8> = out[i + prefix.len()..end].to_vec();
            out[i..i + rest.len()].copy_from_slice(&rest);
            for b in &mut out[i + rest.len()..end] {
                *b = 0;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// A small newc writer over the `cpio` crate with inode numbers handed out in order.
struct Cpio<W: Write> {
    w: Option<W>,
    ino: u32,
}

impl<W: Write> Cpio<W> {
    fn new(w: W) -> Self {
        Cpio { w: Some(w), ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> Result<()> {
        self.ino += 1;
        let b = cpio::newc::Builder::new(name)
            .ino(self.ino)
            .mode(mode)
            .nlink(1)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1);
        let mut writer = b.write(self.w.take().expect("writer present"), data.len() as u32);
        writer.write_all(data)?;
        self.w = Some(writer.finish()?);
        Ok(())
    }

    fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(name, 0o040000 | perm, &[], (0, 0))
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, 0o100000 | perm, data, (0, 0))
    }
    fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0))
    }
    fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(name, mode, &[], (major, minor))
    }
    fn finish(mut self) -> Result<()> {
        let mut w = cpio::newc::trailer(self.w.take().unwrap())?;
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipe_names_the_dax_modules_and_tools() {
        let r = Recipe::builtin();
        for m in ["nfit", "nd_pmem", "dax_pmem", "device_dax", "ext4", "xfs"] {
            assert!(r.modules.iter().any(|x| x == m), "{m}");
        }
        for p in [
            "ndctl",
            "daxctl",
            "e2fsprogs",
            "xfsprogs",
            "dropbear-bin",
            "busybox-static",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert!(
            INIT.contains("daxdiff-init: $*"),
            "markers the controller reads"
        );
        assert!(
            r.excludes("perl-base") && r.excludes("python3.11-minimal") && r.excludes("libicu72")
        );
        assert!(!r.excludes("libc6") && !r.excludes("e2fsprogs") && !r.excludes("python"));
    }

    #[test]
    fn chains_sharing_a_module_load_in_one_group() {
        let p = |s: &str| PathBuf::from(s);
        let chains = vec![
            vec![p("libnvdimm"), p("nfit")],
            vec![p("crc32c")],
            vec![p("libnvdimm"), p("nd_pmem")],
            vec![p("mbcache"), p("ext4")],
            vec![p("crc32c"), p("libcrc32c"), p("xfs")],
        ];
        let g = group_chains(chains);
        assert_eq!(g.len(), 3, "{g:?}");
        assert!(g.contains(&vec![p("libnvdimm"), p("nfit"), p("nd_pmem")]));
        assert!(g.contains(&vec![p("crc32c"), p("libcrc32c"), p("xfs")]));
        assert!(g.contains(&vec![p("mbcache"), p("ext4")]));
    }

    #[test]
    fn ld_cache_prefix_is_removed_in_place() {
        let data = b"hdr\0/tmp/x/root/lib/x86_64-linux-gnu/libc.so.6\0libc.so.6\0".to_vec();
        let out = replace_prefix(&data, b"/tmp/x/root");
        assert_eq!(out.len(), data.len());
        let s: Vec<&[u8]> = out.split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
        assert_eq!(
            s,
            vec![
                &b"hdr"[..],
                b"/lib/x86_64-linux-gnu/libc.so.6",
                b"libc.so.6"
            ]
        );
    }

    #[test]
    fn dynamic_binaries_are_refused_as_executor() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().unwrap();
        let err = check_static(&me).unwrap_err().to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("crt-static"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_executor_names_the_file_and_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daxdiff-exec");
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // An interrupted copy: 5 bytes, a header without its program headers, and a header
        // whose program-header offset points past the end.
        let mut far = me[..64].to_vec();
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        for data in [&me[..5], &me[..64], &far[..]] {
            fs::write(&p, data).unwrap();
            let err = format!("{:#}", check_static(&p).unwrap_err());
            assert!(
                err.contains(&p.display().to_string()) && err.contains("ci/build.sh"),
                "{err}"
            );
        }
    }
}
