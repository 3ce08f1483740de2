//! `daxdiff kernel build` on Debian's real linux-source-6.12, without compiling a kernel
//! (too long for CI): the configuration merge with the shipped fragments, and the errors a
//! user meets — an unknown source, a fragment option that cannot be met, a patch that does
//! not apply, a name the catalogue already uses — each naming the thing and leaving nothing
//! in the cache. A full build is one of `ci/test.sh`'s heavy runs (`DAXDIFF_HEAVY=1`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn daxdiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_daxdiff"))
}

fn kernel_build(cache: &Path, args: &[&str]) -> Output {
    Command::new(daxdiff())
        .args(["--cache"])
        .arg(cache)
        .args(["kernel", "build"])
        .args(args)
        .output()
        .expect("run daxdiff")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shared cache holds the apt lists and the unpacked source; built kernels go to the
/// per-test registry only when a build succeeds, which these tests never let happen.
fn cache() -> PathBuf {
    daxdiff::cache::default_dir()
}

fn built_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("kernels"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("built-") || n.starts_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "downloads linux-source-6.12 from the Debian mirror"]
fn config_merge_meets_every_fragment_option() {
    let o = kernel_build(
        &cache(),
        &[
            "--source",
            "linux-source-6.12",
            "--name",
            "ci-config-check",
            "--config-only",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config_path = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let config = std::fs::read_to_string(&config_path).expect("the printed .config exists");
    for opt in [
        "CONFIG_FS_DAX=y",
        "CONFIG_DEV_DAX_PMEM=y",
        "CONFIG_ACPI_NFIT=y",
        "CONFIG_XFS_FS=y",
        "CONFIG_EXT4_FS=y",
        "CONFIG_KASAN=y",
        "CONFIG_KCOV=y",
        "CONFIG_DEBUG_VM=y",
        "CONFIG_KASAN_KUNIT_TEST=m",
        "CONFIG_DEBUG_INFO_DWARF5=y",
    ] {
        assert!(
            config.lines().any(|l| l == opt),
            "{opt} missing from {config_path}"
        );
    }
    // A lean build: none of defconfig's bulk.
    assert!(!config.lines().any(|l| l == "CONFIG_DRM=y"));
}

#[test]
#[ignore = "downloads linux-source-6.12 from the Debian mirror"]
fn unmet_fragment_options_stop_the_build_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("impossible.config");
    // Software tag-based KASAN exists on arm64 only.
    std::fs::write(&frag, "CONFIG_KASAN=y\nCONFIG_KASAN_SW_TAGS=y\n").unwrap();
    let o = kernel_build(
        &cache(),
        &[
            "--source",
            "linux-source-6.12",
            "--name",
            "ci-unmet",
            "--fragment",
            "base",
            "--fragment",
            frag.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("CONFIG_KASAN_SW_TAGS=y (from impossible.config)"),
        "{e}"
    );
    assert!(e.contains("--allow-unmet"), "{e}");
}

#[test]
#[ignore = "downloads linux-source-6.12 from the Debian mirror"]
fn a_patch_that_does_not_apply_names_its_subject_and_hunk_and_builds_nothing() {
    let before = built_entries(&cache());
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("series.mbox");
    std::fs::write(
        &mbox,
        "From 1 Mon Sep 17 00:00:00 2001\nFrom: A Dev <a@example.org>\nSubject: [PATCH 1/1] fsdax: change a line that is not there\n\
         Date: Thu, 15 Sep 2022 20:35:00 -0700\n\nBody.\n---\ndiff --git a/fs/dax.c b/fs/dax.c\n--- a/fs/dax.c\n+++ b/fs/dax.c\n\
         @@ -1,3 +1,3 @@\n no such line one\n-no such line two\n+replacement\n no such line three\n",
    )
    .unwrap();
    let o = kernel_build(
        &cache(),
        &[
            "--source",
            "linux-source-6.12",
            "--name",
            "ci-bad-series",
            "--patches",
            mbox.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("patch 01 \"fsdax: change a line that is not there\" does not apply"),
        "{e}"
    );
    assert!(e.contains("fs/dax.c: Hunk #1 FAILED"), "{e}");
    assert_eq!(
        built_entries(&cache()),
        before,
        "nothing was added to the cache"
    );
    let work = cache().join("kbuild/work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("src").exists() && !e.path().join("out").exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a copy of the tree was left in {}",
        work.display()
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_is_fetched() {
    let cache = tempfile::tempdir().unwrap();
    let o = kernel_build(
        cache.path(),
        &["--source", "linux-source-6.12", "--name", "debian-6.12"],
    );
    assert!(
        stderr(&o).contains("already has a kernel named `debian-6.12`"),
        "{}",
        stderr(&o)
    );
    let o = kernel_build(cache.path(), &["--source", "git:/nowhere", "--name", "x"]);
    assert!(stderr(&o).contains("needs a revision"), "{}", stderr(&o));
    let o = kernel_build(
        cache.path(),
        &[
            "--source",
            "linux-source-6.12",
            "--name",
            "x",
            "--fragment",
            "no-such-fragment",
        ],
    );
    assert!(
        stderr(&o).contains("neither a shipped fragment"),
        "{}",
        stderr(&o)
    );
    let o = kernel_build(
        cache.path(),
        &[
            "--source",
            "linux-source-6.12",
            "--name",
            "x",
            "--patches",
            "/no/such/series.mbox",
        ],
    );
    assert!(
        stderr(&o).contains("/no/such/series.mbox"),
        "{}",
        stderr(&o)
    );
    // Nothing was downloaded for any of these.
    assert!(!cache.path().join("sources").exists());
}

#[test]
#[ignore = "downloads from the Debian mirror"]
fn an_unknown_source_package_names_what_is_served() {
    let o = kernel_build(
        &cache(),
        &[
            "--source",
            "linux-source-9.99",
            "--name",
            "x",
            "--config-only",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("serves no linux-source-9.99"),
        "{}",
        stderr(&o)
    );
}
