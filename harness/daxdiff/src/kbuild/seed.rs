//! Starting a git repository's output directory from another build's objects.
//!
//! Bisecting inside a patch series rebuilds the same tree over and over: the series' base was
//! built already (the unpatched kernel), and most revisions differ from it in a few files.
//! kbuild decides what to rebuild from file times and from the command that made each object,
//! which names the source tree by its absolute path. So a copy of the base build's output
//! works for another tree when (1) every path of the old tree in its text files names the new
//! one, and (2) each file of the new tree that is byte-identical to the base tree carries the
//! base file's time. Then the first revision rebuilds what the series changed up to it, not
//! the whole kernel (a KASAN kernel is close to an hour on two cores).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What seeding did, for the user.
#[derive(Debug, Default, PartialEq)]
pub struct Seeded {
    /// Files of the tree given the base file's time (identical content).
    pub same: usize,
    /// Files that differ from the base tree or that it lacks (they keep their time: rebuilt).
    pub differ: usize,
    /// Text files of the copied output that named the base tree.
    pub rewritten: usize,
}

/// The kbuild output directory that produced `bzimage_sha256` (searched in the cache's work
/// directories), and the source tree it was built from.
pub fn find_output(cache_root: &Path, bzimage_sha256: &str) -> Result<(PathBuf, PathBuf)> {
    let work = cache_root.join("kbuild/work");
    let mut looked = 0;
    for e in fs::read_dir(&work).with_context(|| format!("read {}", work.display()))? {
        let out = e?.path().join("out");
        let image = out.join("arch/x86/boot/bzImage");
        if !image.is_file() {
            continue;
        }
        looked += 1;
        if crate::cache::sha256_file(&image)? == bzimage_sha256 {
            let tree = fs::read_link(out.join("source"))
                .with_context(|| format!("{} has no `source` link", out.display()))?;
            return Ok((out, tree));
        }
    }
    bail!(
        "no build output in {} made that kernel ({looked} looked at): its work directory was \
         removed or rebuilt since; build it again with `daxdiff kernel build`",
        work.display()
    )
}

/// Makes `out` (which must not exist) a copy of `base_out` for `tree`, and gives the files of
/// `tree` that equal `base_tree`'s their times.
pub fn seed(base_out: &Path, base_tree: &Path, tree: &Path, out: &Path) -> Result<Seeded> {
    if out.exists() {
        bail!("{} exists already; seeding starts a new one", out.display());
    }
    let mut seeded = stamp(base_tree, tree)?;
    // The index must learn the new times, or the next `git checkout -f` takes every file for
    // modified and rewrites it (new times again: a full rebuild).
    let st = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(["update-index", "-q", "--refresh"])
        .status()
        .context("run git update-index")?;
    if !st.success() {
        bail!("git update-index --refresh in {} failed", tree.display());
    }
    let partial = out.with_extension("seeding");
    let _ = fs::remove_dir_all(&partial);
    let st = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(base_out)
        .arg(&partial)
        .status()
        .context("run cp")?;
    if !st.success() {
        bail!("copying {} failed", base_out.display());
    }
    // The tools (objtool, ...) record their output directory by absolute path too.
    seeded.rewritten = rewrite_paths(&partial, &[(base_tree, tree), (base_out, out)])?;
    let link = partial.join("source");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(tree, &link)?;
    fs::rename(&partial, out).with_context(|| format!("move into {}", out.display()))?;
    Ok(seeded)
}

/// Gives each file git tracks in `tree` the time of the identical file in `base_tree`.
fn stamp(base_tree: &Path, tree: &Path) -> Result<Seeded> {
    let o = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(["ls-files", "-z"])
        .output()
        .context("run git ls-files")?;
    if !o.status.success() {
        bail!("git ls-files in {} failed", tree.display());
    }
    let mut s = Seeded::default();
    for name in o.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).context("a non-UTF-8 file name")?);
        let (ours, theirs) = (tree.join(rel), base_tree.join(rel));
        match (fs::symlink_metadata(&ours), fs::symlink_metadata(&theirs)) {
            (Ok(a), Ok(b)) if a.is_file() && b.is_file() && same_bytes(&ours, &theirs, &a, &b)? => {
                fs::File::options()
                    .write(true)
                    .open(&ours)?
                    .set_modified(b.modified()?)?;
                s.same += 1;
            }
            _ => s.differ += 1,
        }
    }
    Ok(s)
}

fn same_bytes(a: &Path, b: &Path, ma: &fs::Metadata, mb: &fs::Metadata) -> Result<bool> {
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        if n != read_full(&mut fb, &mut bb)? || ba[..n] != bb[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Replaces each `from` path by its `to` in every text file under `dir` (the dependency and
/// command records, generated makefiles); objects and archives are left as they are (their
/// debug information keeps the old path, which only the symbolizer reads, and it strips it).
fn rewrite_paths(dir: &Path, pairs: &[(&Path, &Path)]) -> Result<usize> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(f, t)| {
            (
                f.to_string_lossy().into_owned(),
                t.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let ty = e.file_type()?;
            if ty.is_dir() {
                stack.push(e.path());
                continue;
            }
            if !ty.is_file() {
                continue;
            }
            let p = e.path();
            let bytes = fs::read(&p)?;
            if is_binary(&bytes) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if !pairs.iter().any(|(from, _)| text.contains(from.as_str())) {
                continue;
            }
            let meta = e.metadata()?;
            fs::write(&p, replace_all(text, &pairs))?;
            // The record keeps its time: make compares it with what it records.
            fs::File::options()
                .write(true)
                .open(&p)?
                .set_modified(meta.modified()?)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Each `from` replaced by its `to` in one pass, the longest `from` first where several start
/// at one place (one path may be a prefix of the other; a replacement is never replaced).
fn replace_all(text: &str, pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (from, to) in &sorted {
            if let Some(after) = rest.strip_prefix(from.as_str()) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn is_binary(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF") || b.starts_with(b"!<arch>") || b[..b.len().min(8000)].contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let st = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    }

    #[test]
    fn identical_files_get_the_base_time_and_records_name_the_new_tree() {
        let t = tempfile::tempdir().unwrap();
        let (base, tree, base_out, out) = (
            t.path().join("base"),
            t.path().join("tree"),
            t.path().join("base-out"),
            t.path().join("out"),
        );
        fs::create_dir_all(base.join("mm")).unwrap();
        fs::write(base.join("mm/memory.c"), "int a;\n").unwrap();
        fs::write(base.join("mm/gup.c"), "int b;\n").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        for f in ["mm/memory.c", "mm/gup.c"] {
            fs::File::options()
                .write(true)
                .open(base.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        fs::create_dir_all(tree.join("mm")).unwrap();
        fs::write(tree.join("mm/memory.c"), "int a;\n").unwrap();
        fs::write(tree.join("mm/gup.c"), "int b; /* patched */\n").unwrap();
        git(&tree, &["init", "-q"]);
        git(&tree, &["add", "-A"]);
        fs::create_dir_all(base_out.join("mm")).unwrap();
        let record = format!(
            "cmd_mm/memory.o := gcc -I{0}/include -c {0}/mm/memory.c\n",
            base.display()
        );
        fs::write(base_out.join("mm/.memory.o.cmd"), &record).unwrap();
        fs::create_dir_all(base_out.join("tools")).unwrap();
        let tools = format!("{}/tools/check.o: check.c\n", base_out.display());
        fs::write(base_out.join("tools/.check.o.d"), &tools).unwrap();
        fs::write(base_out.join("mm/memory.o"), b"\x7fELF\0binary").unwrap();
        std::os::unix::fs::symlink(&base, base_out.join("source")).unwrap();

        let s = seed(&base_out, &base, &tree, &out).unwrap();
        assert_eq!((s.same, s.differ, s.rewritten), (1, 1, 2));
        assert_eq!(
            fs::read_to_string(out.join("tools/.check.o.d")).unwrap(),
            format!("{}/tools/check.o: check.c\n", out.display())
        );
        let m = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(m(&tree.join("mm/memory.c")), old);
        assert_ne!(m(&tree.join("mm/gup.c")), old);
        let rewritten = fs::read_to_string(out.join("mm/.memory.o.cmd")).unwrap();
        assert!(rewritten.contains(&format!("-I{}/include", tree.display())));
        assert!(!rewritten.contains(&base.display().to_string()));
        assert_eq!(fs::read_link(out.join("source")).unwrap(), tree);
        // The index knows the new times: a checkout will not rewrite the unchanged files.
        let fresh = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["diff-files", "--quiet"])
            .status()
            .unwrap();
        assert!(fresh.success(), "the index still holds the old times");
        assert_eq!(
            fs::read(out.join("mm/memory.o")).unwrap(),
            b"\x7fELF\0binary"
        );
        // A second seeding into the same place is refused, not merged.
        assert!(seed(&base_out, &base, &tree, &out).is_err());
    }
}
