//! The reference-count probe on debian-6.12 (old scheme) and debian-7.3 (new scheme), one
//! boot each: idle counts as each scheme defines them, the references a held mapping and an
//! io_uring pin take, and counts back at their baseline after the programs' teardown. Boots
//! real kernels: `ci/test.sh` runs it with `--ignored`.

use std::path::Path;
use std::time::Duration;

use daxdiff::catalogue::Scheme;
use daxdiff::exec::{load_program, Runner};
use daxdiff::refcounts::{changes, probe_status, read, settle};
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;
use daxdiff_prog::wire::{RangeRefcounts, RefcountReading, Status};

const SETTLE: Duration = Duration::from_secs(10);
/// devdax bring-up uses 2 MiB alignment: one compound folio per 512 pages.
const DEVDAX_FOLIO_PAGES: u64 = 512;

/// Maps the devdax device and pins it with an io_uring buffer registration, maps 2 MiB of an
/// ext4 file and faults it in for writing, then holds everything for about 8 seconds.
fn hold_program() -> String {
    let mut p = String::from(
        "r0 = openat$devdax(AT_FDCWD, &\"dax0.0\", O_RDWR, 0x0)\n\
         r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
         r2 = daxdiff_uring_setup(0x8)\n\
         r3 = io_uring_register$REGISTER_BUFFERS(r2, IORING_REGISTER_BUFFERS, [{&r1+0x0, 0x200000}], 0x1)\n\
         r4 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r4, 0x200000)\n\
         r5 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r4, 0x0)\n\
         madvise(&r5+0x0, 0x200000, MADV_POPULATE_WRITE)\n",
    );
    for _ in 0..80 {
        p.push_str("daxdiff_sleep(0x64)\n");
    }
    p
}

fn role<'a>(kernel: &str, r: &'a RefcountReading, role: &str) -> &'a RangeRefcounts {
    r.ranges
        .iter()
        .find(|x| x.role.as_deref() == Some(role))
        .unwrap_or_else(|| panic!("{kernel}: no {role} range in {r:#?}"))
}

/// What a kernel developer expects of an idle guest under each scheme.
fn check_idle(kernel: &str, scheme: Scheme, r: &RefcountReading) {
    assert_eq!(r.ranges.len(), 3, "{kernel}: ext4, xfs, devdax: {r:#?}");
    for x in &r.ranges {
        assert_eq!(
            x.histogram.negative, 0,
            "{kernel}: underflow at boot: {x:?}"
        );
        // memremap_pages() takes one pgmap reference per folio of the range, on top of the
        // pgmap's initial one, and nothing else holds one while idle.
        assert_eq!(
            x.pgmap_ref,
            1 + (x.pages - x.tails) as i64,
            "{kernel}: {x:?}"
        );
    }
    for fs in ["ext4", "xfs"] {
        let x = role(kernel, r, fs);
        assert_eq!(x.kind, "fsdax", "{kernel}: {x:?}");
        assert_eq!(
            (x.tails, x.compound),
            (0, 0),
            "{kernel}: idle fsdax folios are order 0"
        );
        let idle = match scheme {
            // Old scheme: fsdax pages are 1-based, 1 meaning free.
            Scheme::Old => x.histogram.one,
            // New scheme (6.15+): they idle at 0 and each mapping takes a reference.
            Scheme::New => x.histogram.zero,
        };
        assert_eq!(
            idle, x.pages,
            "{kernel} ({scheme:?}): idle {fs} pages: {x:?}"
        );
    }
    let d = role(kernel, r, "devdax");
    assert_eq!(d.kind, "devdax");
    assert_eq!(d.compound * DEVDAX_FOLIO_PAGES, d.pages, "{kernel}: {d:?}");
    // Both schemes keep a base reference on device-dax folios.
    assert_eq!(
        d.histogram.one, d.compound,
        "{kernel}: idle devdax folios: {d:?}"
    );
}

/// The references the hold program's mapping and pin take, as each scheme defines them.
fn check_held(kernel: &str, scheme: Scheme, base: &RefcountReading, held: &RefcountReading) {
    let (b, h) = (role(kernel, base, "devdax"), role(kernel, held, "devdax"));
    // Exactly one folio is above its base reference: the mapped and pinned one. io_uring
    // keeps one pin per folio; 7.x also counts the mapping (vmf_insert_folio_pmd).
    let expected = match scheme {
        Scheme::Old => 2,
        Scheme::New => 3,
    };
    assert_eq!(h.histogram.one, b.histogram.one - 1, "{kernel}: {h:?}");
    assert_eq!(h.max, expected, "{kernel}: the pinned devdax folio: {h:?}");
    // Pins and mappings take page references, not pgmap references, on both schemes.
    assert_eq!(h.pgmap_ref, b.pgmap_ref, "{kernel}: {h:?}");

    let (b, h) = (role(kernel, base, "ext4"), role(kernel, held, "ext4"));
    match scheme {
        Scheme::Old => assert_eq!(
            (h.histogram, h.tails),
            (b.histogram, b.tails),
            "{kernel}: an old-scheme fsdax mapping takes no page reference"
        ),
        Scheme::New => {
            // 512 pages left 0: as 512 mapped pages at 1, or as one PMD folio at 1 with 511
            // tails, depending on the extent ext4 allocated.
            assert_eq!(b.histogram.zero - h.histogram.zero, 512, "{kernel}: {h:?}");
            assert_eq!(
                h.histogram.one + (h.tails - b.tails),
                512,
                "{kernel}: each mapped folio holds one reference: {h:?}"
            );
            assert_eq!(h.max, 1, "{kernel}: {h:?}");
        }
    }
    assert_eq!(h.pgmap_ref, b.pgmap_ref, "{kernel}: {h:?}");
}

fn back_to_baseline(kernel: &str, what: &str, vm: &mut daxdiff::vm::Vm, base: &RefcountReading) {
    let (after, took) = settle(vm, base, SETTLE).unwrap();
    let c = changes(base, &after);
    assert!(
        took.is_some() && c.is_empty(),
        "{kernel}: counts after {what} did not return to baseline within {SETTLE:?}: {}",
        c.iter()
            .map(|c| format!("{}: {}", c.label, c.summary()))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

fn check_kernel(kernel: &str) {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let p = prepare(&env, kernel).unwrap();
    let scheme = p.kernel.scheme;
    let mut vm = p
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{kernel}: {e:#}"));
    assert_eq!(
        probe_status(&vm).as_deref(),
        Some("probe-loaded"),
        "{kernel}: the guest image must carry a probe that loads"
    );
    let base = read(&mut vm).unwrap();
    eprintln!(
        "== {kernel} at boot\n{}",
        daxdiff::refcounts::format_reading(&base)
    );
    check_idle(kernel, scheme, &base);

    // A reading while the hold program keeps its mapping and pin.
    vm.ssh()
        .unwrap()
        .upload(hold_program().as_bytes(), "/tmp/hold.prog", 0o644)
        .unwrap();
    let out = vm
        .run(
            "daxdiff-exec loop --count 1 --timeout-ms 30000 /tmp/hold.prog >/tmp/hold.out 2>&1 & \
             sleep 3; daxdiff-exec refcounts; wait; cat /tmp/hold.out >&2",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(out.status, 0, "{kernel}: {}", out.stderr_str());
    assert!(
        out.stderr_str().contains("\"completed\":1"),
        "{kernel}: the hold program must complete: {}",
        out.stderr_str()
    );
    let held: RefcountReading = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "== {kernel} while held\n{}",
        daxdiff::refcounts::format_reading(&held)
    );
    check_held(kernel, scheme, &base, &held);
    back_to_baseline(kernel, "the hold program", &mut vm, &base);

    // Seed programs that pin through the controller: each returns to where it started.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let mut runner = Runner::start(&vm).unwrap();
    for name in ["uring_fixed_devdax", "odirect_into_dax_mapping"] {
        let prog = load_program(&corpus.join(format!("{name}.prog"))).unwrap();
        let before = read(&mut vm).unwrap();
        let r = runner.run(&vm, &prog, Duration::from_secs(30)).unwrap();
        assert_eq!(r.status, Status::Completed, "{kernel}: {name}: {r:?}");
        back_to_baseline(kernel, name, &mut vm, &before);
        assert!(
            changes(&base, &before).is_empty(),
            "{kernel}: drift before {name}"
        );
    }
    drop(runner);
    vm.shutdown().unwrap();
}

#[test]
#[ignore = "boots real kernels under QEMU; run by ci/test.sh"]
fn probe_counts_on_debian_6_12_and_7_3() {
    for kernel in ["debian-6.12", "debian-7.3"] {
        check_kernel(kernel);
    }
}
