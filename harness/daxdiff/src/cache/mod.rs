//! The content-addressed cache: kernels, guest images and the private apt state live under
//! one directory; an entry is complete only if everything its manifest records is still there.

mod contents;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lock::Lock;
pub use contents::{Contents, Depth, Held, CONTENTS};

/// Where cached artifacts go: `--cache`, else `$DAXDIFF_CACHE`, else `$XDG_CACHE_HOME/daxdiff`.
pub fn default_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DAXDIFF_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("daxdiff")
}

/// A stable key built from named parts: the same parts give the same key.
#[derive(Default)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    pub fn part(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// 16 hex digits: short enough for directory names, long enough not to collide here.
    pub fn finish(self) -> String {
        hex::encode(&self.hasher.finalize()[..8])
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    // Most files of a tree are small: a buffer allocated per file would cost more than
    // hashing them.
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What a finished cache entry holds: the checksums of the files its builder names (hashed
/// at every use), free-form facts about it, and the sha256 of its full [`Contents`] list.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub files: BTreeMap<String, String>,
    pub facts: BTreeMap<String, String>,
    /// sha256 of `contents.txt`; `None` in an entry made before contents were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
}

pub const MANIFEST: &str = "manifest.json";

/// One keyed entry directory in the cache.
pub struct Entry {
    pub dir: PathBuf,
    pub key: String,
    /// A directory inside the entry that its users write into (a build chroot's build
    /// directories): not part of what the entry holds.
    pub scratch: Option<PathBuf>,
}

impl Entry {
    pub fn new(root: &Path, kind: &str, label: &str, key: &str) -> Entry {
        Entry {
            dir: root.join(kind).join(format!("{label}-{key}")),
            key: key.to_string(),
            scratch: None,
        }
    }

    /// The entry at `dir` (named `<label>-<key>`), as an index file points to it.
    pub fn at(dir: &Path) -> Option<Entry> {
        let key = dir.file_name()?.to_str()?.rsplit('-').next()?.to_string();
        Some(Entry {
            dir: dir.to_path_buf(),
            key,
            scratch: None,
        })
    }

    /// Users of the entry write into `rel` (relative to the entry): its contents are not
    /// recorded or checked.
    pub fn with_scratch(mut self, rel: &str) -> Entry {
        self.scratch = Some(PathBuf::from(rel));
        self
    }

    fn record(&self, dir: &Path) -> Result<Contents> {
        Contents::record(dir, &[MANIFEST, CONTENTS], self.scratch.as_deref())
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The entry's lock, beside it (the entry itself is replaced whole): whoever builds,
    /// re-records or removes the entry holds it.
    fn lock_path(&self) -> PathBuf {
        self.dir.with_file_name(format!(".{}.lock", self.name()))
    }

    /// Build directories of this entry are named `.partial-<entry>-<random>`.
    fn partial_prefix(&self) -> String {
        format!(".partial-{}-", self.name())
    }

    fn lock(&self) -> Result<Lock> {
        Lock::take(&self.lock_path(), "cache entry", |busy| {
            eprintln!(
                "cache: {} is being built by another daxdiff process{}; waiting for it",
                self.dir.display(),
                busy.holder
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default()
            )
        })
    }

    /// The manifest if the entry is complete and intact; a partial or damaged entry yields
    /// `None` (and a note saying why), never a stale result.
    ///
    /// Every use checks that every recorded file is there with its recorded size (a stat
    /// per file) and hashes only the few files the builder named; everything is hashed when
    /// the entry is built. Measured on a tree like a kernel source (70,000 files, 1.5 GB,
    /// in the page cache): the size check takes 0.5 s, hashing all of it 4.4 s, hashing only
    /// the files under 4 KiB still 1 s for 3% of the bytes; from disk, hashing is slower
    /// still. What goes wrong in a cache in practice (a killed unpack, a full disk, a
    /// deleted or truncated file) changes sizes or removes files; `daxdiff images list
    /// --verify` hashes every file of every entry ([`Entry::verify_full`]).
    pub fn verify(&self) -> Option<Manifest> {
        match self.inspect(Depth::Sizes) {
            Verdict::Intact(m) => Some(m),
            Verdict::Older(m) => Some(self.record_contents(m)),
            Verdict::Damaged(why) => {
                eprintln!(
                    "cache: {} is damaged ({why}); rebuilding it",
                    self.dir.display()
                );
                None
            }
            Verdict::Incomplete => None,
        }
    }

    /// Like [`Entry::verify`], hashing every file the entry holds; changes nothing (an
    /// entry of an older daxdiff is checked by its named files).
    pub fn verify_full(&self) -> Option<Manifest> {
        match self.inspect(Depth::Hashes) {
            Verdict::Intact(m) | Verdict::Older(m) => Some(m),
            Verdict::Damaged(_) | Verdict::Incomplete => None,
        }
    }

    /// What the entry is, checked to `depth`; says nothing.
    pub fn inspect(&self, depth: Depth) -> Verdict {
        let Some(m) = fs::read_to_string(self.dir.join(MANIFEST))
            .ok()
            .and_then(|text| serde_json::from_str::<Manifest>(&text).ok())
            .filter(|m| m.key == self.key)
        else {
            return Verdict::Incomplete;
        };
        for (rel, sum) in &m.files {
            match sha256_file(&self.dir.join(rel)) {
                Ok(s) if &s == sum => {}
                _ => return Verdict::Damaged(format!("{rel} changed")),
            }
        }
        let Some(sum) = &m.contents else {
            return Verdict::Older(m);
        };
        let list = self.dir.join(CONTENTS);
        let contents = match fs::read_to_string(&list) {
            Ok(text) if sha256_hex(text.as_bytes()) == *sum => Contents::parse(&text),
            _ => Err(anyhow::anyhow!("{CONTENTS} changed")),
        };
        match contents.map(|c| c.check(&self.dir, depth)) {
            Ok(None) => Verdict::Intact(m),
            Ok(Some(why)) => Verdict::Damaged(why),
            Err(e) => Verdict::Damaged(format!("{e:#}")),
        }
    }

    /// Has the entry built again at its next use (its manifest goes; the rest is replaced
    /// by that build).
    pub fn invalidate(&self) -> Result<()> {
        let _lock = self.lock()?;
        match fs::remove_file(self.dir.join(MANIFEST)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("remove {}", self.dir.join(MANIFEST).display()))
            }
        }
    }

    /// An entry made before contents were recorded passed the checks of its day (its named
    /// files): record what it holds now, once, so later uses check all of it. Rebuilding it
    /// instead could take hours (a kernel build) for an entry that is most likely fine.
    fn record_contents(&self, mut m: Manifest) -> Manifest {
        let Ok(_lock) = Lock::try_take(&self.lock_path(), "cache entry") else {
            return m;
        };
        let recorded = self.record(&self.dir).and_then(|c| {
            let text = c.to_text();
            write_atomic(&self.dir.join(CONTENTS), text.as_bytes())?;
            let mut newer = m.clone();
            newer.contents = Some(sha256_hex(text.as_bytes()));
            write_atomic(
                &self.dir.join(MANIFEST),
                serde_json::to_string_pretty(&newer)?.as_bytes(),
            )?;
            Ok((c, newer))
        });
        match recorded {
            Ok((c, newer)) => {
                eprintln!(
                    "cache: {} was made by an older daxdiff that recorded {} of its files; \
                     recorded all {} now ({} bytes), from here on every use checks them \
                     (damage from before now cannot be seen: `daxdiff images list --verify` \
                     checks the named files again)",
                    self.dir.display(),
                    m.files.len(),
                    c.0.len(),
                    c.bytes()
                );
                m = newer;
            }
            Err(e) => eprintln!(
                "cache: {}: cannot record its contents ({e:#}); checked by its named files only",
                self.dir.display()
            ),
        }
        m
    }

    /// Builds the entry in a sibling temporary directory, records everything it holds,
    /// writes the manifest last and renames the directory into place, so an interrupted
    /// build leaves nothing that looks complete.
    ///
    /// One process builds an entry at a time: a second one waits, then uses the first one's
    /// result without building. Build directories left by killed builds of this entry are
    /// removed first (holding the entry's lock, no other builder of it is alive).
    pub fn build(
        &self,
        build: impl FnOnce(&Path) -> Result<(Vec<String>, BTreeMap<String, String>)>,
    ) -> Result<Manifest> {
        let parent = self.dir.parent().expect("entry has a parent");
        fs::create_dir_all(parent)
            .with_context(|| format!("create cache dir {}", parent.display()))?;
        let _lock = self.lock()?;
        if let Some(m) = self.verify() {
            return Ok(m);
        }
        self.sweep_partials(parent);
        let tmp = tempfile::Builder::new()
            .prefix(&self.partial_prefix())
            .tempdir_in(parent)
            .with_context(|| format!("create temporary dir in {}", parent.display()))?;
        // A Ctrl-C or SIGTERM mid-build removes it too (the signal handler does not unwind).
        let _registered = crate::vm::reaper::Registered::new(tmp.path());
        let (files, facts) = build(tmp.path())?;
        let contents = self.record(tmp.path())?;
        let text = contents.to_text();
        write_atomic(&tmp.path().join(CONTENTS), text.as_bytes())?;
        let mut m = Manifest {
            key: self.key.clone(),
            files: BTreeMap::new(),
            facts,
            contents: Some(sha256_hex(text.as_bytes())),
        };
        for rel in files {
            let sum = sha256_file(&tmp.path().join(&rel))?;
            m.files.insert(rel, sum);
        }
        write_atomic(
            &tmp.path().join(MANIFEST),
            serde_json::to_string_pretty(&m)?.as_bytes(),
        )?;
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("remove stale cache entry {}", self.dir.display()))?;
        }
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &self.dir) {
            let _ = fs::remove_dir_all(&tmp);
            bail!("install cache entry {}: {e}", self.dir.display());
        }
        Ok(m)
    }

    /// Removes the entry (to have it built again), waiting for a build of it to finish.
    pub fn remove(&self) -> Result<()> {
        let _lock = self.lock()?;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", self.dir.display())),
        }
    }

    /// Removes this entry's build directories; called holding its lock, so their builders
    /// are dead. Build directories of other entries are theirs to sweep.
    fn sweep_partials(&self, parent: &Path) {
        let prefix = self.partial_prefix();
        let Ok(rd) = fs::read_dir(parent) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                eprintln!(
                    "cache: removing {} (left by a build that was killed)",
                    e.path().display()
                );
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// What checking an entry found.
#[derive(Debug)]
pub enum Verdict {
    /// Complete, and everything recorded is as recorded.
    Intact(Manifest),
    /// Made by a daxdiff that did not record contents; its named files are intact.
    Older(Manifest),
    /// Said for a person: the first thing found not as recorded.
    Damaged(String),
    /// No manifest (a build never finished) or one of another key.
    Incomplete,
}

/// Every entry in the cache at `root`, of every kind.
pub fn entries(root: &Path) -> Vec<Entry> {
    let mut all = Vec::new();
    let Ok(kinds) = fs::read_dir(root) else {
        return all;
    };
    for kind in kinds.flatten() {
        let Ok(dirs) = fs::read_dir(kind.path()) else {
            continue;
        };
        for d in dirs.flatten() {
            if !d.file_name().to_string_lossy().starts_with('.')
                && d.path().join(MANIFEST).is_file()
            {
                all.extend(Entry::at(&d.path()));
            }
        }
    }
    all.sort_by(|a, b| a.dir.cmp(&b.dir));
    all
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes a file so that readers see the old or the new content, never a torn one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create temporary file in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_sensitive_to_every_part() {
        let a = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "x")
            .finish();
        let b = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "x")
            .finish();
        let c = KeyBuilder::default()
            .part("kernel", "6.12.117")
            .part("recipe", "y")
            .finish();
        // Moving bytes between parts must change the key.
        let d = KeyBuilder::default()
            .part("kernel", "6.12.117r")
            .part("ecipe", "x")
            .finish();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn corrupt_or_partial_entries_are_not_used() {
        let root = tempfile::tempdir().unwrap();
        let e = Entry::new(root.path(), "guests", "g", "k1");
        assert!(e.verify().is_none(), "nothing built yet");
        e.build(|d| {
            fs::write(d.join("a"), b"hello")?;
            Ok((vec!["a".into()], BTreeMap::new()))
        })
        .unwrap();
        assert!(e.verify().is_some());
        // Corrupt the file: the entry is no longer valid.
        fs::write(e.dir.join("a"), b"hellO").unwrap();
        assert!(e.verify().is_none());
        // A failed build leaves no entry and no partial directory behind.
        let f = Entry::new(root.path(), "guests", "g", "k2");
        assert!(f.build(|_| anyhow::bail!("boom")).is_err());
        assert!(f.verify().is_none());
        let leftovers: Vec<_> = fs::read_dir(root.path().join("guests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A manifest for another key does not count either.
        let g = Entry {
            key: "other".into(),
            ..Entry::at(&e.dir).unwrap()
        };
        assert!(g.verify().is_none());
    }

    /// A kernel-like entry: an image, a config and modules in a tree.
    fn kernel_entry(root: &Path, builds: &std::sync::atomic::AtomicUsize) -> Entry {
        let e = Entry::new(root, "kernels", "debian-7.3", "k1");
        if e.verify().is_none() {
            e.build(|d| {
                builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let m = d.join("lib/modules/7.3/kernel/drivers/dax");
                fs::create_dir_all(&m)?;
                fs::write(d.join("vmlinuz"), b"image")?;
                fs::write(m.join("dax_pmem.ko"), vec![1u8; 4096])?;
                fs::write(m.join("device_dax.ko"), vec![2u8; 4096])?;
                std::os::unix::fs::symlink("/nowhere", d.join("lib/modules/7.3/build"))?;
                Ok((vec!["vmlinuz".into()], BTreeMap::new()))
            })
            .unwrap();
        }
        e
    }

    #[test]
    fn a_damaged_file_the_builder_did_not_name_is_seen_and_the_entry_rebuilt() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let root = tempfile::tempdir().unwrap();
        let builds = AtomicUsize::new(0);
        let modules = "lib/modules/7.3/kernel/drivers/dax";
        type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
        let damage: [Damage; 4] = [
            ("truncated module", &|d| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(d.join(modules).join("dax_pmem.ko"))
                    .unwrap();
                f.set_len(100).unwrap();
            }),
            ("deleted file", &|d| {
                fs::remove_file(d.join(modules).join("device_dax.ko")).unwrap()
            }),
            ("file of another size", &|d| {
                fs::write(d.join(modules).join("device_dax.ko"), vec![2u8; 5000]).unwrap()
            }),
            ("symlink changed", &|d| {
                let l = d.join("lib/modules/7.3/build");
                fs::remove_file(&l).unwrap();
                std::os::unix::fs::symlink("/elsewhere", &l).unwrap();
            }),
        ];
        for (n, (what, hurt)) in damage.iter().enumerate() {
            let e = kernel_entry(root.path(), &builds);
            assert!(e.verify().is_some(), "{what}: intact before");
            hurt(&e.dir);
            assert!(e.verify().is_none(), "{what}: damage not seen");
            let e = kernel_entry(root.path(), &builds);
            assert_eq!(builds.load(Ordering::SeqCst), n + 2, "{what}: not rebuilt");
            assert_eq!(
                fs::metadata(e.dir.join(modules).join("dax_pmem.ko"))
                    .unwrap()
                    .len(),
                4096,
                "{what}"
            );
            assert!(e.verify().is_some(), "{what}: rebuilt entry intact");
        }
    }

    #[test]
    fn content_changed_in_place_is_seen_by_the_full_check() {
        let root = tempfile::tempdir().unwrap();
        let e = kernel_entry(root.path(), &Default::default());
        fs::write(
            e.dir.join("lib/modules/7.3/kernel/drivers/dax/dax_pmem.ko"),
            vec![9u8; 4096],
        )
        .unwrap();
        assert!(e.verify().is_some(), "same size: every use does not hash");
        assert!(e.verify_full().is_none());
        // What `images list --verify` does with it: found among the entries, damaged, and
        // built again at its next use.
        let found = entries(root.path());
        assert_eq!(found.len(), 1);
        assert!(
            matches!(found[0].inspect(Depth::Hashes), Verdict::Damaged(w) if w.contains("dax_pmem.ko changed"))
        );
        found[0].invalidate().unwrap();
        let builds = std::sync::atomic::AtomicUsize::new(0);
        kernel_entry(root.path(), &builds);
        assert_eq!(builds.into_inner(), 1);
    }

    #[test]
    fn an_entry_of_an_older_daxdiff_is_used_and_its_contents_recorded_once() {
        let root = tempfile::tempdir().unwrap();
        let e = Entry::new(root.path(), "sources", "linux-source-6.12", "k1");
        fs::create_dir_all(e.dir.join("linux/mm")).unwrap();
        fs::write(e.dir.join("linux/Makefile"), b"VERSION = 6").unwrap();
        fs::write(e.dir.join("linux/mm/memory.c"), b"int x;").unwrap();
        // What the older code wrote: only the named files, no contents.
        let old = format!(
            r#"{{"key":"k1","files":{{"linux/Makefile":"{}"}},"facts":{{"tree":"linux"}}}}"#,
            sha256_file(&e.dir.join("linux/Makefile")).unwrap()
        );
        fs::write(e.dir.join(MANIFEST), old).unwrap();
        let m = e.verify().expect("an older entry keeps working");
        assert_eq!(m.facts["tree"], "linux");
        assert!(m.contents.is_some());
        let listed = fs::read_to_string(e.dir.join(CONTENTS)).unwrap();
        assert!(listed.contains("linux/mm/memory.c"), "{listed}");
        // From now on a file outside the named ones is checked too.
        fs::remove_file(e.dir.join("linux/mm/memory.c")).unwrap();
        assert!(e.verify().is_none());
    }

    #[test]
    fn two_builds_of_one_entry_build_it_once_and_both_see_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let root = tempfile::tempdir().unwrap();
        let builds = std::sync::Arc::new(AtomicUsize::new(0));
        let both: Vec<_> = (0..2)
            .map(|_| {
                let (root, builds) = (root.path().to_path_buf(), builds.clone());
                std::thread::spawn(move || {
                    let e = Entry::new(&root, "guests", "g", "k");
                    e.build(|d| {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        fs::write(d.join("initramfs.cpio"), b"cpio")?;
                        Ok((vec!["initramfs.cpio".into()], BTreeMap::new()))
                    })
                    .map(|m| m.files["initramfs.cpio"].clone())
                    .unwrap()
                })
            })
            .collect();
        let sums: Vec<String> = both.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(sums[0], sums[1]);
        assert!(Entry::new(root.path(), "guests", "g", "k")
            .verify()
            .is_some());
    }

    #[test]
    fn a_build_directory_left_by_a_killed_build_goes_with_the_next_build_of_its_entry() {
        let root = tempfile::tempdir().unwrap();
        let e = Entry::new(root.path(), "guests", "g", "k");
        let other = Entry::new(root.path(), "guests", "h", "k");
        let dead = root
            .path()
            .join("guests")
            .join(format!("{}dead1", e.partial_prefix()));
        let alive = root
            .path()
            .join("guests")
            .join(format!("{}busy1", other.partial_prefix()));
        for d in [&dead, &alive] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("half.cpio"), b"half").unwrap();
        }
        // Another process is building `other` right now.
        fs::create_dir_all(other.dir.parent().unwrap()).unwrap();
        let _building = other.lock().unwrap();
        e.build(|d| {
            fs::write(d.join("a"), b"x")?;
            Ok((vec![], BTreeMap::new()))
        })
        .unwrap();
        assert!(!dead.exists(), "the killed build's directory is left");
        assert!(
            alive.exists(),
            "a live build of another entry lost its directory"
        );
    }
}
