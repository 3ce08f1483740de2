//! Building the kernels under test: a source, an optional patch series with fixups, a base
//! config and fragments, built with KASAN/KCOV where the fragments ask, cached by a hash of
//! all of these and the compiler, and registered under a name every command accepts.

pub mod cli;
pub mod config;
pub mod make;
pub mod seed;
pub mod series;
pub mod source;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cache::{self, Entry, KeyBuilder};
use crate::catalogue::{Catalogue, KernelName};
pub use config::{BaseConfig, Unmet};
pub use series::{Applied, PatchReport};
pub use source::SourceSpec;

/// Bumped when the layout of a built kernel's cache entry changes.
const LAYOUT: &str = "kbuild-v2";

/// Where the registry of built kernels lives (a catalogue in the cache, merged into the
/// shipped one by every command).
pub fn registry_path(cache_root: &Path) -> PathBuf {
    cache_root.join("kernels/built.toml")
}

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub name: KernelName,
    pub source: SourceSpec,
    /// An mbox or a directory of `.patch` files.
    pub patches: Option<PathBuf>,
    /// Fixups for patches that do not apply (see `series`).
    pub fixups: Option<PathBuf>,
    pub base: BaseConfig,
    pub fragments: Vec<PathBuf>,
    pub jobs: usize,
    /// Build even when a fragment's option did not make it into `.config`.
    pub allow_unmet: bool,
    /// Stop after writing `.config` (for checking a configuration).
    pub config_only: bool,
    /// Register the result under `name` for every command (bisection steps are not).
    pub register: bool,
    /// Git sources: start a repository's first output directory from this build (its output
    /// directory and source tree; see `seed`).
    pub seed_from: Option<(PathBuf, PathBuf)>,
}

/// What a build produced (or found in the cache).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Built {
    pub name: String,
    pub release: String,
    pub key: String,
    pub dir: PathBuf,
    pub source: String,
    pub compiler: String,
    /// Seconds `make` took; `None` when the result came from the cache.
    pub build_secs: Option<f64>,
    pub patches: Vec<PatchReport>,
    pub unmet: Vec<String>,
    /// sha256 of the bzImage (bisection compares a culprit's with its parent's).
    pub bzimage_sha256: String,
    /// The patched source tree, when a series was applied (for rebuilding single objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<PathBuf>,
    /// Where the per-patch report of the series is saved (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_report: Option<PathBuf>,
}

impl Built {
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
}

/// Programs a build runs, with the Debian packages that provide them.
const TOOLS: [(&str, &str); 9] = [
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("git", "git"),
    ("patch", "patch"),
    ("depmod", "kmod"),
];

fn check_tools() -> Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(t, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "kernel builds need {}; install them with `apt-get install {} libelf-dev libssl-dev` (ci/setup.sh does)",
            missing.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
            missing.iter().map(|m| m.1).collect::<Vec<_>>().join(" ")
        );
    }
    if !Path::new("/usr/include/libelf.h").exists() {
        bail!("kernel builds need libelf headers; install them with `apt-get install libelf-dev`");
    }
    Ok(())
}

fn compiler() -> Result<String> {
    let o = Command::new("gcc")
        .arg("--version")
        .output()
        .context("run gcc --version")?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Builds (or finds in the cache) the kernel `req` describes and registers it.
/// `taken` holds the names of the catalogue a built kernel must not shadow.
pub fn build(cache_root: &Path, req: &BuildRequest, taken: &Catalogue) -> Result<Built> {
    if taken.kernels.contains_key(&req.name) {
        bail!(
            "the catalogue already has a kernel named `{}`; choose another --name",
            req.name
        );
    }
    check_tools()?;
    // Everything that can be wrong with the inputs is found before anything is built.
    let patches = match &req.patches {
        Some(p) => series::load(p)?,
        None => Vec::new(),
    };
    let fixups = match &req.fixups {
        Some(d) => series::load_fixups(d)?,
        None => Vec::new(),
    };
    for f in &req.fragments {
        if !f.is_file() {
            bail!(
                "config fragment {} does not exist (shipped fragments are in vm-images/configs/)",
                f.display()
            );
        }
    }
    let src = source::materialize(cache_root, &req.source)?;
    let cc = compiler()?;
    // The work directory (tree copy, output) belongs to the source and the series: a change
    // of config or fragments rebuilds incrementally in it (kbuild tracks options per file),
    // and the built kernel is keyed below by what it is made of.
    let mut request = KeyBuilder::default()
        .part("layout", LAYOUT)
        .part("source", &src.identity);
    for p in &patches {
        request = request.part("patch", &p.text);
    }
    for f in &fixups {
        request = request.part("fixup", &f.text);
    }
    let request = request.finish();

    let work = cache_root.join("kbuild/work").join(&request);
    fs::create_dir_all(&work)?;
    let _lock = take_work_dir(&work)?;
    let tree = if patches.is_empty() {
        src.tree.clone()
    } else {
        let repo = source::writable_git_copy(&src, &work.join("src"))?;
        match apply_once(&repo, &work, &patches, &fixups) {
            Ok(tree) => tree,
            Err(e) => {
                // A series that does not apply leaves nothing behind (for a git source, the
                // worktree goes back to the requested commit at the next use).
                if src.git_commit.is_none() {
                    let _ = fs::remove_dir_all(&work);
                }
                return Err(e);
            }
        }
    };
    let (reports, tree_used, apply_report): (Vec<PatchReport>, _, _) = if patches.is_empty() {
        (Vec::new(), None, None)
    } else {
        let report = work.join("apply-report.json");
        (
            serde_json::from_str(&fs::read_to_string(&report)?)?,
            Some(tree.clone()),
            Some(report),
        )
    };
    // Git sources share one output directory per repository and configuration, so the next
    // revision rebuilds only what changed.
    let out = match &src.git_commit {
        Some(_) => cache_root
            .join("kbuild/out")
            .join(tree.file_name().unwrap().to_string_lossy().as_ref()),
        None => work.join("out"),
    };
    if let (Some((base_out, base_tree)), Some(_)) = (&req.seed_from, &src.git_commit) {
        if !out.exists() {
            eprintln!(
                "kernel {}: starting from the objects of {} (files identical to its tree keep their times)",
                req.name,
                base_out.display()
            );
            let s = seed::seed(base_out, base_tree, &tree, &out)?;
            eprintln!(
                "kernel {}: {} files as in that tree, {} different; {} build records moved to this tree",
                req.name, s.same, s.differ, s.rewritten
            );
        }
    }
    eprintln!(
        "kernel {}: configuring {} ({} + {} fragment(s))",
        req.name,
        src.describe,
        req.base.identity()?,
        req.fragments.len()
    );
    let (unmet, unknown) = config::configure(&tree, &out, &req.base, &req.fragments)?;
    if !unknown.is_empty() {
        eprintln!(
            "kernel {}: this tree has no {} (fragments span kernel versions; ignored)",
            req.name,
            unknown.join(", ")
        );
    }
    if !unmet.is_empty() {
        let list = unmet
            .iter()
            .map(|u| format!("  {u}"))
            .collect::<Vec<_>>()
            .join("\n");
        if !req.allow_unmet {
            bail!(
                "the configuration does not have what the fragments ask for:\n{list}\n\
                 an option usually ends up unset because something it depends on is off (see its \
                 `depends on` in Kconfig); add that to a fragment, or pass --allow-unmet"
            );
        }
        eprintln!(
            "kernel {}: building although these are unmet:\n{list}",
            req.name
        );
    }
    if req.config_only {
        return Ok(Built {
            name: req.name.0.clone(),
            release: String::new(),
            key: request,
            dir: out,
            source: src.describe,
            compiler: cc,
            build_secs: None,
            patches: reports,
            unmet: unmet.iter().map(ToString::to_string).collect(),
            bzimage_sha256: String::new(),
            tree: tree_used,
            apply_report,
        });
    }
    let config_text = fs::read_to_string(out.join(".config"))?;
    let mut key = KeyBuilder::default()
        .part("layout", LAYOUT)
        .part("source", &src.identity)
        .part("compiler", &cc)
        .part("config", &config_text);
    for p in &patches {
        key = key.part("patch", &p.text);
    }
    for f in &fixups {
        key = key.part("fixup", &f.text);
    }
    let key = key.finish();
    let entry = Entry::new(cache_root, "kernels", "built", &key);
    if let Some(m) = entry.verify() {
        let built: Built = serde_json::from_str(
            m.facts
                .get("built")
                .context("built kernel entry without its record")?,
        )?;
        let built = Built {
            name: req.name.0.clone(),
            dir: entry.dir.clone(),
            build_secs: None,
            ..built
        };
        if req.register {
            register(cache_root, &built)?;
        }
        eprintln!("kernel {}: up to date ({})", req.name, entry.dir.display());
        return Ok(built);
    }
    let estimate_key = KeyBuilder::default().part("config", &config_text).finish();
    eprintln!(
        "kernel {}: building with {} jobs at low priority (interrupt any time: the next run resumes); log {}",
        req.name,
        req.jobs,
        work.join("build.log").display()
    );
    let t0 = Instant::now();
    make::run(
        &tree,
        &out,
        req.jobs,
        &["bzImage", "modules"],
        &work.join("build.log"),
        &cache_root.join("kbuild/estimates.json"),
        &estimate_key,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let release = make::kernelrelease(&tree, &out)?;
    eprintln!(
        "kernel {}: built {release} in {:.0} s; installing into the cache",
        req.name, secs
    );
    let record = Built {
        name: req.name.0.clone(),
        release: release.clone(),
        key: key.clone(),
        dir: entry.dir.clone(),
        source: src.describe.clone(),
        compiler: cc.clone(),
        build_secs: Some(secs),
        patches: reports,
        unmet: unmet.iter().map(ToString::to_string).collect(),
        bzimage_sha256: cache::sha256_file(&out.join("arch/x86/boot/bzImage"))?,
        tree: tree_used,
        apply_report,
    };
    entry.build(|dir| install(&tree, &out, &release, &record, dir))?;
    if req.register {
        register(cache_root, &record)?;
    }
    Ok(record)
}

/// One build at a time per work directory (two would share its tree and output).
fn take_work_dir(work: &Path) -> Result<crate::lock::Lock> {
    crate::lock::Lock::take(&work.join(".lock"), "kernel build directory", |busy| {
        eprintln!(
            "kernel build: {} is in use by another build{}; waiting for it",
            work.display(),
            busy.holder
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        )
    })
}

/// Applies the series once per work directory; an interrupted application starts over from
/// the recorded base commit.
fn apply_once(
    repo: &Path,
    work: &Path,
    patches: &[series::Patch],
    fixups: &[series::Fixup],
) -> Result<PathBuf> {
    let done = work.join("apply-report.json");
    let head = |r: &Path| -> Result<String> {
        let o = Command::new("git")
            .arg("-C")
            .arg(r)
            .args(["rev-parse", "HEAD"])
            .output()?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let base_file = work.join("base-commit");
    if done.exists()
        && fs::read_to_string(work.join("series-head")).ok().as_deref()
            == Some(head(repo)?.as_str())
    {
        return Ok(repo.to_path_buf());
    }
    let base = match fs::read_to_string(&base_file) {
        Ok(b) => b.trim().to_string(),
        Err(_) => {
            let b = head(repo)?;
            cache::write_atomic(&base_file, b.as_bytes())?;
            b
        }
    };
    // Files an interrupted run's patches created are untracked (or ignored): clean them too,
    // or the same patch finds its new file already there.
    for args in [
        &["reset", "-q", "--hard", &base][..],
        &["clean", "-q", "-fdx"],
    ] {
        let st = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .status()?;
        if !st.success() {
            bail!("cannot reset {} to the series base {base}", repo.display());
        }
    }
    eprintln!("series: applying {} patch(es)", patches.len());
    let reports = series::apply(repo, patches, fixups)?;
    cache::write_atomic(&done, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    cache::write_atomic(&work.join("series-head"), head(repo)?.as_bytes())?;
    Ok(repo.to_path_buf())
}

fn install(
    tree: &Path,
    out: &Path,
    release: &str,
    record: &Built,
    dir: &Path,
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    for (from, to) in [
        ("arch/x86/boot/bzImage", "bzImage"),
        ("vmlinux", "vmlinux"),
        ("System.map", "System.map"),
        (".config", "config"),
    ] {
        fs::copy(out.join(from), dir.join(to))
            .with_context(|| format!("copy {}", out.join(from).display()))?;
    }
    let st = make::make_command(tree, out, 1)
        .arg(format!(
            "INSTALL_MOD_PATH={}",
            dir.join("modules").display()
        ))
        .args(["-s", "modules_install"])
        .status()
        .context("run make modules_install")?;
    if !st.success() {
        bail!("make modules_install failed");
    }
    // Out-of-tree modules (the refcount probe) build against the output tree.
    let mdir = dir.join("modules/lib/modules").join(release);
    for (link, target) in [("build", out), ("source", tree)] {
        let l = mdir.join(link);
        let _ = fs::remove_file(&l);
        std::os::unix::fs::symlink(target, &l)?;
    }
    let mut facts = BTreeMap::new();
    facts.insert("built".to_string(), serde_json::to_string(record)?);
    if !record.patches.is_empty() {
        cache::write_atomic(
            &dir.join("apply-report.json"),
            serde_json::to_string_pretty(&record.patches)?.as_bytes(),
        )?;
    }
    Ok((
        vec!["bzImage".into(), "config".into(), "System.map".into()],
        facts,
    ))
}

#[derive(Default, Serialize, Deserialize)]
struct Registry {
    #[serde(default)]
    kernels: BTreeMap<String, toml::Table>,
}

/// Records `built` in the registry of built kernels (atomically: readers never see a torn file).
pub fn register(cache_root: &Path, built: &Built) -> Result<()> {
    let path = registry_path(cache_root);
    // Read, change, write: two builds registering at once would each drop the other's.
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _lock = crate::lock::Lock::take(
        &path.with_extension("toml.lock"),
        "registry of built kernels",
        |_| {},
    )?;
    let mut reg: Registry = match fs::read_to_string(&path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parse {}", path.display()))?,
        Err(_) => Registry::default(),
    };
    let mut t = toml::Table::new();
    let s = |p: PathBuf| toml::Value::String(p.display().to_string());
    t.insert("kind".into(), "local".into());
    t.insert("bzimage".into(), s(built.dir.join("bzImage")));
    t.insert("vmlinux".into(), s(built.dir.join("vmlinux")));
    t.insert("config".into(), s(built.dir.join("config")));
    t.insert(
        "modules".into(),
        s(built.dir.join("modules/lib/modules").join(&built.release)),
    );
    reg.kernels.insert(built.name.clone(), t);
    let text = format!(
        "# Kernels built by `daxdiff kernel build`, merged into the catalogue by every command.\n{}",
        toml::to_string(&reg)?
    );
    cache::write_atomic(&path, text.as_bytes())
}

/// The bzImage of built kernel `name`, when one of that name was built here.
pub fn built_bzimage(cache_root: &Path, name: &str) -> Result<Option<PathBuf>> {
    let path = registry_path(cache_root);
    let reg: Registry = match fs::read_to_string(&path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parse {}", path.display()))?,
        Err(_) => return Ok(None),
    };
    Ok(reg
        .kernels
        .get(name)
        .and_then(|t| t.get("bzimage"))
        .and_then(|v| v.as_str())
        .map(PathBuf::from))
}

/// The built kernels' catalogue, when there is one.
pub fn registry(cache_root: &Path) -> Result<Option<Catalogue>> {
    let path = registry_path(cache_root);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Catalogue::load(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_kernels_load_as_local_catalogue_entries() {
        let d = tempfile::tempdir().unwrap();
        let built = Built {
            name: "6.12-kasan".into(),
            release: "6.12.117".into(),
            key: "k".into(),
            dir: d.path().join("kernels/built-6.12-kasan-k"),
            source: "linux-source-6.12 6.12.117-1~deb12u1".into(),
            compiler: "gcc".into(),
            build_secs: Some(1.0),
            patches: vec![],
            unmet: vec![],
            bzimage_sha256: String::new(),
            tree: None,
            apply_report: None,
        };
        register(d.path(), &built).unwrap();
        let again = Built {
            name: "7.3-kasan".into(),
            ..built.clone()
        };
        register(d.path(), &again).unwrap();
        let cat = registry(d.path()).unwrap().unwrap();
        let e = cat.get("6.12-kasan").unwrap();
        match &e.source {
            crate::catalogue::KernelSource::Local {
                bzimage, modules, ..
            } => {
                assert_eq!(bzimage, &built.dir.join("bzImage"));
                assert!(modules.as_ref().unwrap().ends_with("lib/modules/6.12.117"));
            }
            other => panic!("{other:?}"),
        }
        assert!(cat.get("7.3-kasan").is_ok());
    }

    #[test]
    fn kernels_registered_at_the_same_time_are_all_in_the_registry() {
        let d = tempfile::tempdir().unwrap();
        let all: Vec<_> = (0..16)
            .map(|i| {
                let root = d.path().to_path_buf();
                std::thread::spawn(move || {
                    let built = Built {
                        name: format!("k{i}"),
                        release: "6.12.117".into(),
                        key: "k".into(),
                        dir: root.join(format!("kernels/built-{i}")),
                        source: "s".into(),
                        compiler: "gcc".into(),
                        build_secs: None,
                        patches: vec![],
                        unmet: vec![],
                        bzimage_sha256: String::new(),
                        tree: None,
                        apply_report: None,
                    };
                    register(&root, &built).unwrap()
                })
            })
            .collect();
        for t in all {
            t.join().unwrap();
        }
        let cat = registry(d.path()).unwrap().unwrap();
        for i in 0..16 {
            assert!(cat.get(&format!("k{i}")).is_ok(), "k{i} lost");
        }
    }
}
