//! A KASAN+KCOV kernel built by `daxdiff kernel build` (default name `6.12-kasan`, or
//! `$DAXDIFF_KASAN_KERNEL`): it boots with DAX on for ext4, xfs and device-dax, has KCOV,
//! and a KASAN report provoked by the kernel's own KASAN KUnit test module is parsed into a
//! titled report and symbolized to file:line. Run by `ci/test.sh` after building the kernel
//! in its heavy runs (`DAXDIFF_HEAVY=1`): a kernel build is too long for every CI run.

use std::time::Duration;

use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;

fn env() -> Env {
    Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    }
}

fn find_ko(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() && !e.file_type().ok()?.is_symlink() {
            if let Some(f) = find_ko(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

#[test]
#[ignore = "needs a kernel built with `daxdiff kernel build` (ci/test.sh heavy runs)"]
fn kasan_kernel_boots_with_dax_and_kcov_and_its_reports_symbolize() {
    let name = std::env::var("DAXDIFF_KASAN_KERNEL").unwrap_or_else(|_| "6.12-kasan".into());
    let p = prepare(&env(), &name).unwrap_or_else(|e| {
        panic!("{name} is not available ({e:#}); build it: daxdiff kernel build --source linux-source-6.12 --name {name}")
    });
    assert_eq!(p.kernel.config_value("CONFIG_KASAN").as_deref(), Some("y"));
    let mut vm = p
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{name} did not boot: {e:#}"));
    eprintln!("{name}: ready in {:.1}s", vm.times.ready.as_secs_f64());
    let t = Duration::from_secs(60);

    // DAX really on: both file systems mounted with dax=always, the devdax device present.
    let mounts = vm.run("cat /proc/mounts", t).unwrap().stdout_str();
    for fs in ["ext4", "xfs"] {
        assert!(
            mounts
                .lines()
                .any(|l| l.contains(&format!(" {fs} ")) && l.contains("dax")),
            "no {fs} DAX mount:\n{mounts}"
        );
    }
    let dax = vm.run("ls /dev/dax*", t).unwrap();
    assert_eq!(dax.status, 0, "no device-dax device");
    // KCOV for coverage feedback.
    let kcov = vm.run("test -e /sys/kernel/debug/kcov", t).unwrap();
    assert_eq!(kcov.status, 0, "/sys/kernel/debug/kcov missing");

    // One KASAN KUnit case: an out-of-bounds kmalloc access the kernel must report.
    let ko = find_ko(&p.kernel.modules_dir().expect("modules"), "kasan_test.ko")
        .expect("kasan_test.ko (CONFIG_KASAN_KUNIT_TEST=m)");
    vm.ssh()
        .unwrap()
        .upload(&std::fs::read(&ko).unwrap(), "/tmp/kasan_test.ko", 0o644)
        .unwrap();
    let out = vm
        .run(
            // printf: a trailing newline would be part of the glob.
            "printf kasan.kmalloc_oob_right > /sys/module/kunit/parameters/filter_glob && insmod /tmp/kasan_test.ko",
            Duration::from_secs(300),
        )
        .unwrap();
    eprintln!("insmod: {} {}", out.stdout_str(), out.stderr_str());
    std::thread::sleep(Duration::from_secs(3));
    let console = std::fs::read_to_string(vm.run_dir.join("console.log")).unwrap();
    vm.shutdown().unwrap();

    let reports = daxdiff_observe::parse(&console);
    let r = reports
        .iter()
        .find(|r| r.title.contains("KASAN") && r.title.contains("kmalloc_oob_right"))
        .unwrap_or_else(|| {
            panic!(
                "no KASAN report for kmalloc_oob_right; reports: {:?}",
                reports.iter().map(|r| &r.title).collect::<Vec<_>>()
            )
        });
    let mut sym = daxdiff::symbolize::Symbolizer::for_kernel(&env().cache, &p.kernel).unwrap();
    let text = sym.symbolize(&r.text);
    eprintln!("{text}");
    // The report's own stacks (access and allocation) are all symbolized; the test module's
    // frames resolve through kasan_test.ko's DWARF, the rest through vmlinux.
    let located: Vec<daxdiff_observe::SourceLocation> = text
        .lines()
        .filter_map(daxdiff_observe::Frame::parse)
        .filter(|f| f.name() == "kmalloc_oob_right")
        .filter_map(|f| f.location)
        .collect();
    assert!(
        located.iter().any(
            |l| l.file.ends_with("mm/kasan/kasan_test_c.c") || l.file.ends_with("kasan_test.c")
        ),
        "no kmalloc_oob_right frame symbolized into the test's source: {located:?}"
    );
    let again = daxdiff_observe::parse(&text);
    let frames = &again.first().expect("the symbolized report parses").frames;
    assert!(
        frames.iter().any(|f| f
            .location
            .as_ref()
            .is_some_and(|l| l.file.starts_with("mm/") || l.file.starts_with("lib/"))),
        "vmlinux frames symbolized too"
    );
}
