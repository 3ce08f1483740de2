//! The per-program oracles on a real guest (debian-7.3, one boot): teardown liveness steps,
//! reference counts back at their baseline, data written through DAX mappings found in the
//! file and on the device after the teardown, and the device-dax reset between programs.
//! Boots a real kernel: `cargo test -p daxdiff --release -- --ignored --test-threads=1`.

use std::time::Duration;

use daxdiff::exec::{format_response, Runner};
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;
use daxdiff_prog::wire::{DataCheck, Response, Status, StepResult};

const KERNEL: &str = "debian-7.3";

/// Writes every page of 2 MiB of the devdax device through a mapping (fork_touch flips the
/// first byte of each page), then maps it again populated: the second mapping's checksum
/// shows what the device held.
const DEVDAX_WRITE: &str = "r0 = openat$devdax(AT_FDCWD, &\"dax0.0\", O_RDWR, 0x0)\n\
    r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
    r2 = daxdiff_fork_touch(&r1+0x0, 0x200000, DAXDIFF_TOUCH_WRITE)\n\
    daxdiff_wait(r2)\n\
    r3 = mmap(0x0, 0x200000, PROT_READ, MAP_SHARED|MAP_POPULATE, r0, 0x0)\n";

/// Writes an ext4 file with pwrite while holding a shared writable DAX mapping of it.
const EXT4_WRITE: &str = "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
    ftruncate(r0, 0x200000)\n\
    r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
    pwrite64(r0, &buf[0x10000], 0x10000, 0x1000)\n\
    r2 = daxdiff_fork_touch(&r1+0x0, 0x10000, DAXDIFF_TOUCH_WRITE)\n\
    daxdiff_wait(r2)\n";

fn run(runner: &mut Runner, vm: &daxdiff::vm::Vm, text: &str) -> Response {
    let prog = daxdiff_prog::parse(daxdiff_prog::Target::builtin(), text).unwrap();
    let r = runner
        .run_with(vm, text, Duration::from_secs(30), true)
        .unwrap_or_else(|e| panic!("{KERNEL}: {e:#}"));
    eprintln!("{}", format_response(&prog, &r));
    assert_eq!(r.status, Status::Completed, "{:?}", r.detail);
    r
}

fn all_steps_ok(r: &Response) {
    let steps: Vec<&str> = r.teardown.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "exit",
            "umount ext4",
            "mount ext4",
            "umount xfs",
            "mount xfs",
            "disable devdax",
            "enable devdax"
        ]
    );
    for s in &r.teardown {
        assert_eq!(s.result, StepResult::Ok, "{s:?}");
    }
}

#[test]
#[ignore = "boots a debian-7.3 guest (about a minute under TCG)"]
fn teardown_refcounts_integrity_and_devdax_reset_on_a_real_guest() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let p = prepare(&env, KERNEL).unwrap();
    let vm = p
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{KERNEL}: {e:#}"));
    let mut runner = Runner::start(&vm).unwrap();
    assert_eq!(
        daxdiff::refcounts::probe_status(&vm).as_deref(),
        Some("probe-loaded"),
        "the guest image carries the probe for {KERNEL}"
    );

    let first = run(&mut runner, &vm, DEVDAX_WRITE);
    all_steps_ok(&first);
    assert_eq!(
        first.refcounts,
        Some(vec![]),
        "counts back at the baseline after the teardown"
    );
    let check = first
        .integrity
        .iter()
        .find(|c| c.call == 1)
        .unwrap_or_else(|| {
            panic!(
                "the written devdax mapping is checked: {:?}",
                first.integrity
            )
        });
    assert_eq!(check.target, "devdax");
    assert_eq!(check.at_end, None, "device-dax has no read()");
    assert_eq!(
        check.after_teardown,
        Some(DataCheck::Same),
        "what was written survives disable and enable"
    );
    // The device was zeroed where the program wrote: the same program sees the same bytes.
    let second = run(&mut runner, &vm, DEVDAX_WRITE);
    let sum = |r: &Response| {
        r.calls
            .iter()
            .find(|c| c.index == 4)
            .and_then(|c| c.checksum)
    };
    assert!(sum(&first).is_some());
    assert_eq!(
        sum(&first),
        sum(&second),
        "device-dax reset between programs"
    );

    let ext4 = run(&mut runner, &vm, EXT4_WRITE);
    all_steps_ok(&ext4);
    assert_eq!(ext4.refcounts, Some(vec![]));
    assert_eq!(ext4.integrity.len(), 1, "{:?}", ext4.integrity);
    let c = &ext4.integrity[0];
    assert_eq!((c.call, c.target.as_str()), (2, "ext4"));
    assert_eq!(c.at_end, Some(DataCheck::Same));
    assert_eq!(
        c.after_teardown,
        Some(DataCheck::Same),
        "the data survives a remount"
    );
    assert_eq!(ext4.coverage, None, "Debian's kernels have no KCOV");
    drop(runner);
    vm.shutdown().unwrap();
}
