//! ndctl's dax suite on a real Debian kernel, as a user runs it: ndctl's tests built from
//! Debian's source, the suite guest booted under QEMU once per test, results classified and
//! written as JSON and Markdown. A small subset keeps CI short: one test on the e820 pmem
//! (revoke-devmem, whose "pass without a namespace" must not count), one on the ACPI NVDIMM
//! (dm.sh), and one that must skip with its reason without booting (multi-dax.sh, nfit_test).
//! The full suite on both kernels is `daxdiff suite` (README). Needs QEMU, the Debian mirror
//! and ndctl's build dependencies (ci/setup.sh); `ci/test.sh` runs it with `--ignored`.

use std::time::Duration;

use daxdiff::setup::Env;
use daxdiff::suite::report::{JSON_FILE, MARKDOWN_FILE};
use daxdiff::suite::{self, spec, NdctlBuild, Outcome, SuiteConfig};

const KERNEL: &str = "debian-6.12";

fn env() -> Env {
    Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    }
}

#[test]
#[ignore = "builds ndctl and boots QEMU guests; run by ci/test.sh"]
fn ndctl_build_has_the_dax_suite_we_run() {
    let b = NdctlBuild::get(&env().cache).expect("ndctl builds from Debian's source");
    let ours: Vec<&str> = spec::DAX_SUITE.iter().map(|t| t.name).collect();
    assert_eq!(b.dax_tests, ours, "ndctl {}'s meson dax suite", b.version);
    for f in [
        "build/ndctl/ndctl",
        "build/daxctl/daxctl",
        "build/test/dax-dev",
        "build/test/device-dax",
        "build/test/revoke_devmem",
        "build/test/dax-pmd",
        "build/test/mmap",
        "src/test/dax-ext4.sh",
        "src/test/common",
    ] {
        assert!(b.tree.join(f).is_file(), "{f} in {}", b.tree.display());
    }
}

#[test]
#[ignore = "builds ndctl and boots QEMU guests; run by ci/test.sh"]
fn quick_tests_run_for_real_and_are_reported() {
    let out = tempfile::tempdir().unwrap();
    let cfg = SuiteConfig {
        kernels: vec![KERNEL.into()],
        tests: spec::select(&[
            "multi-dax.sh".into(),
            "revoke-devmem".into(),
            "dm.sh".into(),
        ])
        .unwrap(),
        out: out.path().to_path_buf(),
        timeout: Duration::from_secs(600),
        reruns: 1,
        jobs: 1,
    };
    let mut seen = Vec::new();
    let report = suite::run(&env(), &cfg, &mut |p| {
        if let suite::Progress::Done { result, .. } = p {
            seen.push(result.test.0.clone());
        }
    })
    .unwrap_or_else(|e| panic!("suite on {KERNEL}: {e:#}"));
    assert_eq!(
        seen,
        ["multi-dax.sh", "revoke-devmem", "dm.sh"],
        "progress per test"
    );
    let k = &report.kernels[0];
    let table = report.table();
    eprintln!("{table}");

    // Debian kernels have no nfit_test: a skip with the reason, and no guest booted for it.
    let multi = k.result("multi-dax.sh").unwrap();
    match &multi.verdict {
        Outcome::Skip { reason } => assert!(reason.contains("nfit_test"), "{reason}"),
        o => panic!("multi-dax.sh on {KERNEL}: {o:?}"),
    }
    assert!(multi.attempts.is_empty());

    // Both real tests pass for real: revoke-devmem saw its mapping revoked.
    for t in ["revoke-devmem", "dm.sh"] {
        let r = k.result(t).unwrap();
        assert_eq!(r.verdict, Outcome::Pass, "{t}: {r:?}");
        let a = r.attempts.last().unwrap();
        assert!(a.duration > Duration::ZERO && a.boot > Duration::from_secs(1));
        assert!(a.kernel_reports.is_empty(), "{t}: {:?}", a.kernel_reports);
        let log = std::fs::read_to_string(out.path().join(&a.log)).unwrap();
        let console = std::fs::read_to_string(out.path().join(&a.console)).unwrap();
        assert!(
            console.contains("daxdiff-init: bringup-done"),
            "{t}: fresh guest"
        );
        if t == "revoke-devmem" {
            assert!(log.contains("devmem revoked!"), "{log}");
        } else {
            assert!(log.contains("dmsetup create"), "{log}");
        }
    }
    assert_eq!(k.really_ran(), 2);
    assert!(k.wall > Duration::ZERO);

    // What the user reads: the table, report.md and report.json.
    let row = table.lines().find(|l| l.starts_with("dm.sh")).unwrap();
    assert!(row.contains("ACPI NVDIMM") && row.contains("pass"), "{row}");
    assert!(
        table.contains("really ran") && table.contains("2/3"),
        "{table}"
    );
    let md = std::fs::read_to_string(out.path().join(MARKDOWN_FILE)).unwrap();
    assert!(md.contains("| revoke-devmem | e820 pmem | pass |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(JSON_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["kernels"][0]["kernel"], KERNEL);
    assert_eq!(json["kernels"][0]["results"].as_array().unwrap().len(), 3);
    assert!(!report.has_regression());

    // The same command again resumes: every result is kept, no guest boots.
    let mut again = Vec::new();
    let resumed = suite::run(&env(), &cfg, &mut |p| match p {
        suite::Progress::Attempt { test, .. } => again.push(format!("boot {test}")),
        suite::Progress::Kept { results, .. } => again.push(format!("kept {results}")),
        suite::Progress::Done { .. } => {}
    })
    .unwrap();
    assert_eq!(again, ["kept 3"]);
    assert_eq!(resumed.kernels[0].results.len(), 3);
    // The wall time goes on from the one written (report.json keeps tenths of a second).
    let written = json["kernels"][0]["wall"].as_f64().unwrap();
    assert!(resumed.kernels[0].wall.as_secs_f64() >= written);
    assert!(!out.path().join("report.previous.json").exists());
}
