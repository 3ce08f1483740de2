//! A short `daxdiff fuzz` on the default pair (debian-6.12 vs debian-7.3) with one seed
//! whose outcome differs between the two: the workdir gets its layout, the difference is
//! found as a stable divergence, and a second session resumes the counters.
//! Boots real guests: `cargo test -p daxdiff --release -- --ignored --test-threads=1`.

use std::path::PathBuf;
use std::time::Duration;

use daxdiff::diff::Suppressions;
use daxdiff::fuzz::{fuzz, Budget, FuzzConfig};
use daxdiff::setup::Env;
use daxdiff::workdir::{FindingKind, Workdir};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora")
}

/// Evicting an ext4 inode while a pipe still holds its DAX pages (vmsplice): 6.12's old
/// scheme warns in `dax_disassociate_entry` (fs/dax.c:390) on every run, 7.3's reworked
/// refcounting does not; instead 7.3's guest stops answering (eviction waits for pages the
/// killed program's pipe still holds), which costs a guest restart per run: hence two runs
/// per kernel and a short program timeout here (seen running the seeds on both kernels).
const KNOWN: &str = "evict_while_pinned_ext4.prog";
const KNOWN_SIGNATURE: &str = "report only on A: WARNING in dax_disassociate_entry";

#[test]
#[ignore = "boots debian-6.12 and debian-7.3 guests (about 8 minutes under TCG)"]
fn short_run_on_the_default_pair_finds_the_known_divergence_and_resumes() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let seeds = tempfile::tempdir().unwrap();
    std::fs::copy(corpus_dir().join(KNOWN), seeds.path().join(KNOWN)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = FuzzConfig {
        kernel_a: "debian-6.12".into(),
        kernel_b: "debian-7.3".into(),
        workdir: work.path().to_path_buf(),
        budget: Budget {
            time: Some(Duration::from_secs(300)),
            execs: Some(2),
        },
        seed: 7,
        jobs: 1,
        runs: 2,
        suppressions: Suppressions::default(),
        seeds: Some(seeds.path().to_path_buf()),
        timeout: Duration::from_secs(5),
        teardown_every: 1,
        snapshots: true,
        progress: false,
    };
    let summary = fuzz(&env, &cfg).unwrap_or_else(|e| panic!("fuzz: {e:#}"));
    for d in ["corpus", "divergences", "crashes", "unstable", "stats.json"] {
        assert!(work.path().join(d).exists(), "workdir lacks {d}");
    }
    assert!(summary.stats.execs >= 1, "{:?}", summary.stats);
    let known = summary
        .divergences
        .iter()
        .find(|f| f.signature == KNOWN_SIGNATURE)
        .unwrap_or_else(|| {
            panic!(
                "the known divergence was not found; divergences: {:?}, unstable: {:?}",
                summary.divergences, summary.unstable
            )
        });
    assert_eq!(known.runs, 2);
    assert_eq!(known.differences[0], KNOWN_SIGNATURE);
    let w = Workdir::existing(work.path()).unwrap();
    let (name, _) = w
        .findings(FindingKind::Divergence)
        .unwrap()
        .into_iter()
        .find(|(_, f)| f.signature == KNOWN_SIGNATURE)
        .unwrap();
    let dir = w.finding_dir(FindingKind::Divergence, &name);
    for f in [
        "prog.txt",
        "finding.json",
        "outcome-a.json",
        "outcome-b.json",
        "console-a.log",
        "console-b.log",
    ] {
        assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
    }
    let prog = std::fs::read_to_string(dir.join("prog.txt")).unwrap();
    assert!(prog.contains("vmsplice"), "{prog}");
    let console_a = std::fs::read_to_string(dir.join("console-a.log")).unwrap();
    assert!(console_a.contains("dax_disassociate_entry"), "{console_a}");
    assert!(
        !summary.crashes.is_empty(),
        "the warning is also a crash entry"
    );

    // A second session on the same workdir continues the counters and keeps the finding.
    // Its two boots, the replayed corpus and the teardown after each program take most of
    // two minutes under TCG: the exec count ends it, the time only bounds it.
    let again = fuzz(
        &env,
        &FuzzConfig {
            budget: Budget {
                time: Some(Duration::from_secs(300)),
                execs: Some(2),
            },
            seeds: None,
            ..cfg
        },
    )
    .unwrap_or_else(|e| panic!("resume: {e:#}"));
    assert_eq!(again.stats.sessions, 2);
    assert!(
        again.stats.execs >= summary.stats.execs + 2,
        "{:?} after {:?}",
        again.stats,
        summary.stats
    );
    assert!(again
        .divergences
        .iter()
        .any(|f| f.signature == KNOWN_SIGNATURE));
}
