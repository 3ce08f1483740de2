//! Runs the seed corpus on debian-6.12 and debian-7.3 through the controller and the guest
//! executor, and checks the per-call results that must hold on both kernels (the pinning
//! rules of the background notes). Boots real kernels: `ci/test.sh` runs it with `--ignored`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use daxdiff::exec::{format_response, load_corpus, Runner};
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;
use daxdiff_prog::wire::{Response, Status};

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora")
}

/// What a seed program did on one kernel: the executor's answer, or the kernel report that
/// took the guest down while it ran.
enum Ran {
    Answered(Response),
    KernelDied(String),
}

fn run_corpus(kernel: &str) -> BTreeMap<String, Ran> {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let corpus = load_corpus(&corpus_dir()).expect("seed corpus parses");
    let p = prepare(&env, kernel).unwrap();
    let boot = || {
        p.boot(MachineProfile::default(), None)
            .unwrap_or_else(|e| panic!("{kernel}: {e:#}"))
    };
    let mut vm = boot();
    let mut runner = Runner::start(&vm).unwrap();
    let mut out = BTreeMap::new();
    // A report can start while the previous program's teardown finishes (an io_uring ring is
    // released asynchronously): look from the previous program's start.
    let mut prev_from = 0;
    for (name, prog) in &corpus {
        let from = vm.console.len();
        let window = prev_from;
        prev_from = from;
        match runner.run(&vm, prog, Duration::from_secs(30)) {
            Ok(r) => {
                eprintln!("== {name} on {kernel}\n{}", format_response(prog, &r));
                out.insert(name.clone(), Ran::Answered(r));
            }
            Err(e) => {
                // The executor never gives up on a program: if it stopped answering, the
                // kernel must have said why on the console.
                std::thread::sleep(Duration::from_secs(2));
                let console: String = vm
                    .console
                    .since(window)
                    .iter()
                    .map(|l| l.text.clone() + "\n")
                    .collect();
                let reports = daxdiff_observe::parse(&console);
                assert!(
                    !reports.is_empty(),
                    "{kernel}: {name}: executor stopped answering without a kernel report: {e:#}"
                );
                let title = reports[0].title.clone();
                eprintln!("== {name} on {kernel}: kernel report: {title}");
                out.insert(name.clone(), Ran::KernelDied(title));
                drop(runner);
                vm = boot();
                runner = Runner::start(&vm).unwrap();
                prev_from = 0;
            }
        }
    }
    drop(runner);
    // Teardown of the last programs can still oops asynchronously; say so, the must-hold
    // checks below are about call results.
    std::thread::sleep(Duration::from_secs(2));
    let rest: String = vm
        .console
        .since(prev_from)
        .iter()
        .map(|l| l.text.clone() + "\n")
        .collect();
    for r in daxdiff_observe::parse(&rest) {
        eprintln!(
            "== after the corpus on {kernel}: kernel report: {}",
            r.title
        );
    }
    vm.shutdown().unwrap();
    out
}

fn answered<'a>(kernel: &str, results: &'a BTreeMap<String, Ran>, name: &str) -> &'a Response {
    match &results[name] {
        Ran::Answered(r) => r,
        Ran::KernelDied(t) => panic!("{kernel}: {name} took the kernel down: {t}"),
    }
}

fn call(r: &Response, index: usize) -> &daxdiff_prog::wire::CallResult {
    r.calls
        .iter()
        .find(|c| c.index == index)
        .unwrap_or_else(|| panic!("call {index} did not run: {r:?}"))
}

fn check_must_hold(kernel: &str, results: &BTreeMap<String, Ran>) {
    for (name, r) in results {
        if let Ran::Answered(r) = r {
            assert_ne!(
                r.status,
                Status::Error,
                "{kernel}: {name}: the executor could not run it: {:?}",
                r.detail
            );
        }
    }
    // A long-term pin (io_uring buffer registration) of an fsdax mapping is refused...
    let fsdax = answered(kernel, results, "uring_register_fsdax");
    assert_eq!(
        call(fsdax, 4).errno_name.as_deref(),
        Some("EOPNOTSUPP"),
        "{kernel}: {fsdax:?}"
    );
    // ...while an anonymous buffer registers fine.
    assert_eq!(call(fsdax, 5).ret, 0, "{kernel}");
    // From 6.5 on gup decides, and devdax mappings may be registered and used.
    let devdax = answered(kernel, results, "uring_fixed_devdax");
    assert_eq!(
        call(devdax, 5).ret,
        0,
        "{kernel}: REGISTER_BUFFERS on devdax: {devdax:?}"
    );
    assert_eq!(
        call(devdax, 6).ret,
        0x10000,
        "{kernel}: READ_FIXED into devdax"
    );
    // Short-term pins of fsdax pages work: O_DIRECT between the non-DAX ext4 and a DAX
    // mapping, vmsplice.
    let odirect = answered(kernel, results, "odirect_into_dax_mapping");
    assert_eq!(
        call(odirect, 6).ret,
        0x200000,
        "{kernel}: O_DIRECT write from a DAX mapping"
    );
    assert_eq!(
        call(odirect, 7).ret,
        0x1000,
        "{kernel}: O_DIRECT read into a DAX mapping"
    );
    let splice = answered(kernel, results, "vmsplice_dax_mapping");
    assert_eq!(
        call(splice, 4).ret,
        0x10000,
        "{kernel}: vmsplice of a DAX mapping"
    );
}

#[test]
#[ignore = "boots real kernels under QEMU; run by ci/test.sh"]
fn seed_corpus_on_debian_6_12_and_7_3() {
    for kernel in ["debian-6.12", "debian-7.3"] {
        let results = run_corpus(kernel);
        check_must_hold(kernel, &results);
    }
}
