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

fn run_corpus(kernel: &str) -> BTreeMap<String, Response> {
    let env = Env { cache: daxdiff::cache::default_dir(), catalogue: None };
    let corpus = load_corpus(&corpus_dir()).expect("seed corpus parses");
    let p = prepare(&env, kernel).unwrap();
    let vm = p.boot(MachineProfile::default(), None).unwrap_or_else(|e| panic!("{kernel}: {e:#}"));
    let mut runner = Runner::start(&vm).unwrap();
    let mut out = BTreeMap::new();
    for (name, prog) in &corpus {
        let r = runner.run(&vm, prog, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{kernel}: {name}: executor stopped answering: {e:#}"));
        eprintln!("== {name} on {kernel}\n{}", format_response(prog, &r));
        out.insert(name.clone(), r);
    }
    drop(runner);
    // The guest survived the whole corpus and still has DAX on.
    let mut vm = vm;
    let status = vm.run("daxdiff-exec status", Duration::from_secs(60)).unwrap();
    assert_eq!(status.status, 0, "{kernel}: DAX state after the corpus: {}", status.stdout_str());
    vm.shutdown().unwrap();
    out
}

fn call<'a>(r: &'a Response, index: usize) -> &'a daxdiff_prog::wire::CallResult {
    r.calls.iter().find(|c| c.index == index).unwrap_or_else(|| panic!("call {index} did not run: {r:?}"))
}

fn check_must_hold(kernel: &str, results: &BTreeMap<String, Response>) {
    for (name, r) in results {
        assert_ne!(r.status, Status::Error, "{kernel}: {name}: the executor could not run it: {:?}", r.detail);
    }
    // A long-term pin (io_uring buffer registration) of an fsdax mapping is refused...
    let fsdax = &results["uring_register_fsdax"];
    assert_eq!(call(fsdax, 4).errno_name.as_deref(), Some("EOPNOTSUPP"), "{kernel}: {fsdax:?}");
    // ...while an anonymous buffer registers fine.
    assert_eq!(call(fsdax, 5).ret, 0, "{kernel}");
    // From 6.5 on gup decides, and devdax mappings may be registered and used.
    let devdax = &results["uring_fixed_devdax"];
    assert_eq!(call(devdax, 5).ret, 0, "{kernel}: REGISTER_BUFFERS on devdax: {devdax:?}");
    assert_eq!(call(devdax, 6).ret, 0x10000, "{kernel}: READ_FIXED into devdax");
    // Short-term pins of fsdax pages work: O_DIRECT from and into a DAX mapping, vmsplice.
    let odirect = &results["odirect_into_dax_mapping"];
    assert_eq!(call(odirect, 5).ret, 0x200000, "{kernel}: O_DIRECT write from a DAX mapping");
    assert_eq!(call(odirect, 6).ret, 0x1000, "{kernel}: O_DIRECT read into a DAX mapping");
    let splice = &results["vmsplice_dax_mapping"];
    assert_eq!(call(splice, 4).ret, 0x10000, "{kernel}: vmsplice of a DAX mapping");
}

#[test]
#[ignore = "boots real kernels under QEMU; run by ci/test.sh"]
fn seed_corpus_on_debian_6_12_and_7_3() {
    for kernel in ["debian-6.12", "debian-7.3"] {
        let results = run_corpus(kernel);
        check_must_hold(kernel, &results);
    }
}
