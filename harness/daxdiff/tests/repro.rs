//! Triage of a real finding on the default pair (debian-6.12 vs debian-7.3): a short
//! campaign on the seed known to diverge records it, then `repro::triage` minimizes the
//! program, measures its reliability, verifies the C reproducer on fresh guests of both
//! kernels and writes the report.
//! Boots real guests: `cargo test -p daxdiff --release --test repro -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use daxdiff::diff::Suppressions;
use daxdiff::fuzz::{fuzz, Budget, FuzzConfig};
use daxdiff::repro::state::Stage;
use daxdiff::repro::{triage, ReproConfig};
use daxdiff::setup::Env;
use daxdiff::workdir::{FindingKind, Workdir};

const KNOWN: &str = "evict_while_pinned_ext4.prog";
const KNOWN_SIGNATURE: &str = "report only on A: WARNING in dax_disassociate_entry";

#[test]
#[ignore = "boots debian-6.12 and debian-7.3 guests many times (about 25 minutes under TCG)"]
fn the_known_divergence_minimizes_reproduces_in_c_and_gets_a_report() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let seeds = tempfile::tempdir().unwrap();
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    std::fs::copy(corpus.join(KNOWN), seeds.path().join(KNOWN)).unwrap();
    let work = tempfile::tempdir().unwrap();
    fuzz(
        &env,
        &FuzzConfig {
            kernel_a: "debian-6.12".into(),
            kernel_b: "debian-7.3".into(),
            workdir: work.path().to_path_buf(),
            budget: Budget {
                time: Some(Duration::from_secs(300)),
                execs: Some(1),
            },
            seed: 7,
            jobs: 1,
            runs: 2,
            teardown_every: 1,
            snapshots: true,
            suppressions: Suppressions::default(),
            seeds: Some(seeds.path().to_path_buf()),
            timeout: Duration::from_secs(5),
            progress: false,
        },
    )
    .unwrap_or_else(|e| panic!("fuzz: {e:#}"));
    let w = Workdir::existing(work.path()).unwrap();
    let (name, _) = w
        .findings(FindingKind::Divergence)
        .unwrap()
        .into_iter()
        .find(|(_, f)| f.signature == KNOWN_SIGNATURE)
        .expect("the campaign records the known divergence");
    let dir = w.finding_dir(FindingKind::Divergence, &name);

    let out = triage(
        &env,
        &ReproConfig {
            dir: dir.clone(),
            min_runs: 1,
            min_budget: Some(Duration::from_secs(480)),
            min_args: true,
            runs: 2,
            reliable_at: 3,
            timeout: Duration::from_secs(5),
            suppressions: Suppressions::default(),
            minimize: true,
            c_reproducer: true,
            boot_per_run: false,
            progress: false,
            sender: daxdiff::mail::Mailbox::parse("daxdiff test <test@example.org>").unwrap(),
        },
    )
    .unwrap_or_else(|e| panic!("triage: {e:#}"));
    let t = &out.triage;
    assert_eq!(t.stage, Stage::Reported, "{t:?}");
    assert_eq!(t.calls_before, Some(13));
    let after = t.calls_after.unwrap();
    assert!(after < 13, "nothing was removed: {t:?}");
    // Arguments: the mapping and the file need not be 2 MiB for this WARNING; whatever
    // the budget allowed is recorded and shows in the report.
    assert!(
        !t.args_simplified.is_empty() || t.minimize_budget_spent,
        "{t:?}"
    );
    let min = std::fs::read_to_string(dir.join("prog.min.txt")).unwrap();
    assert_eq!(min.lines().count(), after);
    for needed in ["mmap", "vmsplice", "unlink$ext4"] {
        assert!(
            min.contains(needed),
            "minimized program lacks {needed}:\n{min}"
        );
    }
    let r = t.reliability.as_ref().unwrap();
    assert_eq!((r.a.k, r.a.n), (2, 2), "{r:?}");
    assert_eq!(r.pair.k, 2, "{r:?}");
    // Fewer runs than the threshold: every one of them must show it.
    assert!(r.reliable(), "{r:?}");
    assert!(
        t.differences.iter().any(|d| d == KNOWN_SIGNATURE),
        "{:?}",
        t.differences
    );
    let c_a = t.c_a.as_ref().unwrap();
    assert!(c_a.shows_signal, "C reproducer on A: {c_a:?}");
    assert!(
        c_a.reports
            .iter()
            .any(|x| x == "WARNING in dax_disassociate_entry"),
        "{c_a:?}"
    );
    assert!(t.c_b.as_ref().unwrap().shows_signal, "{:?}", t.c_b);
    for f in [
        "repro.c",
        "repro.sh",
        "setup.sh",
        "repro",
        "qemu.txt",
        "triage.json",
        "report.txt",
    ] {
        assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
    }
    let message = daxdiff::mail::Received::parse(std::fs::read_to_string(&out.report).unwrap())
        .expect("report.txt is a message");
    let subject = message.subject.clone().unwrap_or_default();
    assert!(
        subject.starts_with("[REPORT] fs/dax: WARNING in dax_disassociate_entry on 6.12"),
        "{subject}"
    );
    let report = &message.body;
    assert!(report.contains("dax_disassociate_entry+0x"), "{report}");
    assert!(report.contains("vmsplice("), "{report}");
    assert!(report.contains("-device nvdimm,id=nvdimm0,"), "{report}");
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(
        home.is_empty() || !report.contains(&home),
        "report names this machine's paths:\n{report}"
    );
    for a in &t.args_simplified {
        assert!(report.contains(a.as_str()), "{a} not in\n{report}");
    }
}
