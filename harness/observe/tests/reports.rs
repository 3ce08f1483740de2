//! Report parsing on real kernel reports (tests/reports/, origins in tests/reports/ORIGINS.txt):
//! the title a user would file each under, a signature that survives run-to-run noise, and
//! report boundaries in logs that mix reports with ordinary console output.

use daxdiff_observe::{normalize, parse, Report, ReportKind, Signature};
use regex::{Captures, Regex};
use std::collections::BTreeMap;
use std::path::PathBuf;

struct Expected {
    file: &'static str,
    kind: ReportKind,
    title: &'static str,
    location: Option<&'static str>,
    truncated: bool,
    /// The function the primary stack must start with (the faulting PC, or the first frame).
    first_frame: Option<&'static str>,
}

fn fixture(file: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "reports", file]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn only_report(text: &str, file: &str) -> Report {
    let mut reports = parse(text);
    assert_eq!(
        reports.len(),
        1,
        "{file}: expected one report, got {:?}",
        reports.iter().map(|r| &r.title).collect::<Vec<_>>()
    );
    reports.remove(0)
}

/// The same console as another run would print it: every timestamp, address, offset, pid,
/// CPU number, line number and task-name number changed, digit counts kept (so the lines
/// keep their shape).
fn perturb(text: &str) -> String {
    fn shift(digits: &str) -> String {
        digits
            .chars()
            .map(|c| match c {
                '0'..='9' => char::from(b'0' + (c as u8 - b'0' + 3) % 10),
                'a'..='f' => char::from(b'a' + (c as u8 - b'a' + 2) % 6),
                _ => c,
            })
            .collect()
    }
    let hex = Regex::new(r"0x[0-9a-f]+|\b[0-9a-f]{8,16}\b").unwrap();
    let dec = Regex::new(r"\b\d+\b").unwrap();
    let task_digits = Regex::new(r"(executor|iou-wrk-)(\d+)").unwrap();
    let text = hex.replace_all(text, |c: &Captures| match c[0].strip_prefix("0x") {
        Some(rest) => format!("0x{}", shift(rest)),
        None => shift(&c[0]),
    });
    let text = dec.replace_all(&text, |c: &Captures| shift(&c[0]));
    task_digits
        .replace_all(&text, |c: &Captures| format!("{}{}", &c[1], shift(&c[2])))
        .into_owned()
}

fn check(expected: &Expected) {
    let text = fixture(expected.file);
    let report = only_report(&text, expected.file);
    assert_eq!(report.title, expected.title, "{}", expected.file);
    assert_eq!(report.kind, expected.kind, "{}", expected.file);
    assert_eq!(
        report.location.as_ref().map(|l| l.to_string()).as_deref(),
        expected.location,
        "{}",
        expected.file
    );
    assert_eq!(
        report.truncated, expected.truncated,
        "{}: truncated",
        expected.file
    );
    assert_eq!(
        report.frames.first().map(|f| f.function.as_str()),
        expected.first_frame,
        "{}: first frame",
        expected.file
    );
    assert_eq!(report.signature, Signature::from_title(expected.title));
    assert!(!report.signature.dir_name().contains('/'));

    let other_run = perturb(&text);
    assert_ne!(
        other_run, text,
        "{}: perturbation changed nothing",
        expected.file
    );
    let again = only_report(&other_run, expected.file);
    if !report.title.contains(|c: char| c.is_ascii_digit()) {
        assert_eq!(
            again.title, report.title,
            "{}: title after perturbation",
            expected.file
        );
    }
    assert_eq!(
        again.signature, report.signature,
        "{}: signature after perturbation",
        expected.file
    );
    assert_eq!(
        (again.start_line, again.end_line),
        (report.start_line, report.end_line),
        "{}: boundaries after perturbation",
        expected.file
    );
    assert_eq!(
        normalize(&again.text),
        normalize(&report.text),
        "{}: normalized text after perturbation",
        expected.file
    );
}

macro_rules! fixtures {
    ($($test:ident: $file:literal => $kind:ident, $title:literal, at $location:expr,
       truncated $truncated:literal, first $first:expr;)*) => {
        const FIXTURES: &[Expected] = &[$(Expected {
            file: $file,
            kind: ReportKind::$kind,
            title: $title,
            location: $location,
            truncated: $truncated,
            first_frame: $first,
        }),*];
        $(#[test]
        fn $test() {
            let expected = FIXTURES.iter().find(|e| e.file == $file).expect("listed above");
            check(expected);
        })*
    };
}

fixtures! {
    warning_dax_disassociate_entry_debian_6_12: "warning-dax-disassociate-entry-debian-6.12.log"
        => Warning, "WARNING in dax_disassociate_entry", at Some("fs/dax.c:390"),
        truncated false, first Some("dax_disassociate_entry");
    page_fault_io_release_ubuf_debian_7_3: "page-fault-io-release-ubuf-debian-7.3.log"
        => PageFault, "BUG: unable to handle page fault in io_release_ubuf", at None,
        truncated false, first Some("io_release_ubuf");
    refcount_bug_release_nodes_debian_6_12: "refcount-bug-release-nodes-debian-6.12.log"
        => Refcount, "refcount bug in release_nodes", at Some("lib/refcount.c:28"),
        truncated false, first Some("refcount_warn_saturate");
    warning_dax_insert_entry_erofs: "warning-dax-insert-entry-erofs-6.17.log"
        => Warning, "WARNING in dax_insert_entry", at Some("fs/dax.c:460"),
        truncated true, first Some("dax_insert_entry");
    warning_dax_insert_entry_xfs: "warning-dax-insert-entry-xfs-6.0.log"
        => Warning, "WARNING in dax_insert_entry", at Some("fs/dax.c:380"),
        truncated true, first Some("dax_insert_entry");
    warning_dax_iomap_rw_syzbot: "warning-dax-iomap-rw-syzbot-6.17.log"
        => Warning, "WARNING in dax_iomap_rw", at Some("fs/dax.c:1756"),
        truncated true, first Some("dax_iomap_rw");
    percpu_ref_dax_pmem: "percpu-ref-dax-pmem-4.10.log"
        => PercpuRef, "percpu ref underflow in dax_pmem_percpu_release",
        at Some("lib/percpu-refcount.c:155"), truncated true, first Some("dump_stack");
    percpu_ref_obj_cgroup_s390_then_panic: "percpu-ref-obj-cgroup-s390-5.12.log"
        => PercpuRef, "percpu ref underflow in obj_cgroup_release",
        at Some("lib/percpu-refcount.c:196"), truncated false,
        first Some("percpu_ref_switch_to_atomic_rcu");
    percpu_ref_cgroup_bpf_cut_in_rip_line: "percpu-ref-cgroup-bpf-fedora-5.6-truncated.log"
        => PercpuRef, "percpu ref underflow in cgroup_bpf_release_fn",
        at Some("lib/percpu-refcount.c:160"), truncated true, first None;
    refcount_underflow_nfs: "refcount-underflow-nfs-direct-write.log"
        => Refcount, "refcount bug in nfs_direct_write_schedule_work",
        at Some("lib/refcount.c:28"), truncated true, first Some("refcount_warn_saturate");
    kasan_double_free_memunmap_pages: "kasan-double-free-memunmap-pages-ppc64-6.19.log"
        => Kasan, "KASAN: double-free in kasan_remove_zero_shadow", at None,
        truncated false, first Some("dump_stack_lvl");
    kasan_slab_uaf_tls_encrypt_done: "kasan-slab-uaf-tls-encrypt-done-syzbot-6.6.log"
        => Kasan, "KASAN: slab-use-after-free Read in tls_encrypt_done", at None,
        truncated false, first Some("__dump_stack");
    lockdep_pipe_lock: "lockdep-pipe-lock-syzbot-6.12.log"
        => Lockdep, "possible deadlock in pipe_lock", at None, truncated false,
        first Some("__dump_stack");
    lockdep_evict_trimmed: "lockdep-evict-kswapd-syzbot-5.11-trimmed.log"
        => Lockdep, "possible deadlock in evict", at None, truncated false,
        first Some("__dump_stack");
    hung_task_io_wq_put_and_exit: "hung-task-io-wq-put-and-exit-syzbot-5.17.log"
        => HungTask, "INFO: task hung in io_wq_put_and_exit", at None, truncated false,
        first Some("context_switch");
    hung_task_test_aead_then_panic: "hung-task-test-aead-arm64-panic.log"
        => HungTask, "INFO: task hung in test_aead_vec_cfg", at None, truncated false,
        first Some("__switch_to");
    hung_task_truncate_partial_folio: "hung-task-truncate-partial-folio-f2fs-arm64-6.12.log"
        => HungTask, "INFO: task hung in truncate_inode_partial_folio", at None,
        truncated false, first Some("__switch_to");
    rcu_stall_task_work_add: "rcu-stall-task-work-add-syzbot-6.16.log"
        => RcuStall, "INFO: rcu detected stall in task_work_add", at None, truncated false,
        first Some("context_switch");
    gpf_six_lock_ip_waiter: "gpf-six-lock-ip-waiter-syzbot-6.12.log"
        => GeneralProtectionFault, "general protection fault in six_lock_ip_waiter", at None,
        truncated false, first Some("__lock_acquire");
    page_fault_wakeup_kswapd: "page-fault-wakeup-kswapd-6.6.log"
        => PageFault, "BUG: unable to handle page fault in wakeup_kswapd", at None,
        truncated true, first Some("wakeup_kswapd");
    page_fault_poison_element_i386: "page-fault-poison-element-lkp-i386-6.18.log"
        => PageFault, "BUG: unable to handle page fault in poison_element", at None,
        truncated false, first Some("memset");
    page_fault_arch_remove_memory_cut: "page-fault-arch-remove-memory-ndctl-4.15-truncated.log"
        => PageFault, "BUG: unable to handle page fault in arch_remove_memory", at None,
        truncated true, first Some("arch_remove_memory");
    null_deref_pmem_pagemap_cleanup: "null-deref-pmem-pagemap-cleanup-ppc64.log"
        => NullPointerDereference, "BUG: kernel NULL pointer dereference in pmem_pagemap_cleanup",
        at None, truncated true, first Some("pmem_pagemap_cleanup");
    kernel_bug_set_pfnblock_flags_mask: "kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log"
        => Bug, "kernel BUG in set_pfnblock_flags_mask", at Some("mm/page_alloc.c:535"),
        truncated true, first Some("set_pfnblock_flags_mask");
    kernel_bug_set_pfnblock_flags_mask_cut: "kernel-bug-set-pfnblock-flags-mask-ndctl-5.2-truncated.log"
        => Bug, "kernel BUG in set_pfnblock_flags_mask", at Some("mm/page_alloc.c:489"),
        truncated true, first Some("set_pfnblock_flags_mask");
    kernel_bug_filemap_add_folio_then_panic: "kernel-bug-filemap-add-folio-hugetlb-7.1.log"
        => Bug, "kernel BUG in __filemap_add_folio", at Some("mm/filemap.c:862"),
        truncated false, first Some("__filemap_add_folio");
    bad_page_state_erofs: "bad-page-state-erofs-decompress-5.9.log"
        => BadPageState, "BUG: Bad page state in z_erofs_decompressqueue_work", at None,
        truncated false, first Some("dump_stack");
    panic_vfs_root_x86: "panic-vfs-root-x86-4.19-cip.log"
        => Panic, "kernel panic: VFS: Unable to mount root fs on unknown-block(2,0)", at None,
        truncated false, first Some("dump_stack");
    panic_vfs_root_firecracker: "panic-vfs-root-firecracker-7.1.log"
        => Panic, "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)", at None,
        truncated true, first None;
}

#[test]
fn every_fixture_file_is_listed_with_its_origin() {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "reports"]
        .iter()
        .collect();
    let origins = fixture("ORIGINS.txt");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".log") {
            continue;
        }
        assert!(
            origins.lines().any(|l| l.starts_with(&format!("{name}: "))),
            "{name} has no origin line in ORIGINS.txt"
        );
        assert!(
            name == "boot-debian-6.12-nvdimm-clean.log" || FIXTURES.iter().any(|e| e.file == name),
            "{name} has no expected title in this test"
        );
    }
}

#[test]
fn clean_debian_boot_with_nvdimms_has_no_report() {
    let boot = fixture("boot-debian-6.12-nvdimm-clean.log");
    assert!(
        boot.contains("RETBleed: WARNING:"),
        "the look-alike line is part of the test"
    );
    assert_eq!(parse(&boot), vec![]);
}

#[test]
fn the_same_bug_on_two_kernels_has_one_signature() {
    for (a, b) in [
        (
            "warning-dax-insert-entry-erofs-6.17.log",
            "warning-dax-insert-entry-xfs-6.0.log",
        ),
        (
            "kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log",
            "kernel-bug-set-pfnblock-flags-mask-ndctl-5.2-truncated.log",
        ),
        (
            "panic-vfs-root-x86-4.19-cip.log",
            "panic-vfs-root-firecracker-7.1.log",
        ),
    ] {
        let (ra, rb) = (only_report(&fixture(a), a), only_report(&fixture(b), b));
        assert_eq!(ra.signature, rb.signature, "{a} vs {b}");
        assert_eq!(ra.signature.dir_name(), rb.signature.dir_name());
        if ra.location.is_some() {
            assert_ne!(
                ra.location, rb.location,
                "the line moved between kernels: {a} vs {b}"
            );
        }
    }
}

#[test]
fn distinct_bugs_have_distinct_signatures_and_directories() {
    fn same_bug(file: &'static str) -> &'static str {
        match file {
            "warning-dax-insert-entry-xfs-6.0.log" => "warning-dax-insert-entry-erofs-6.17.log",
            "kernel-bug-set-pfnblock-flags-mask-ndctl-5.2-truncated.log" => {
                "kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log"
            }
            "panic-vfs-root-firecracker-7.1.log" => "panic-vfs-root-x86-4.19-cip.log",
            other => other,
        }
    }
    let mut by_signature: BTreeMap<Signature, &str> = BTreeMap::new();
    let mut dirs: BTreeMap<String, &str> = BTreeMap::new();
    for expected in FIXTURES {
        let bug = same_bug(expected.file);
        let report = only_report(&fixture(expected.file), expected.file);
        if let Some(previous) = by_signature.insert(report.signature.clone(), bug) {
            assert_eq!(
                previous, bug,
                "{} and {} share {}",
                previous, bug, report.signature
            );
        }
        if let Some(previous) = dirs.insert(report.signature.dir_name(), bug) {
            assert_eq!(previous, bug, "directory clash");
        }
    }
    assert_eq!(by_signature.len(), FIXTURES.len() - 3);
}

/// A console the way the harness sees it: a boot, then reports with the output of program
/// teardown (namespace and file system messages) between them.
fn mixed_console() -> (String, Vec<&'static str>, Vec<String>) {
    let boot = fixture("boot-debian-6.12-nvdimm-clean.log");
    let runtime: Vec<String> = boot.lines().skip(50).map(String::from).collect();
    let mut log = boot.clone();
    let mut titles = Vec::new();
    let parts = [
        (
            "warning-dax-insert-entry-erofs-6.17.log",
            "WARNING in dax_insert_entry",
        ),
        (
            "kasan-slab-uaf-tls-encrypt-done-syzbot-6.6.log",
            "KASAN: slab-use-after-free Read in tls_encrypt_done",
        ),
        (
            "hung-task-truncate-partial-folio-f2fs-arm64-6.12.log",
            "INFO: task hung in truncate_inode_partial_folio",
        ),
        (
            "percpu-ref-dax-pmem-4.10.log",
            "percpu ref underflow in dax_pmem_percpu_release",
        ),
        (
            "rcu-stall-task-work-add-syzbot-6.16.log",
            "INFO: rcu detected stall in task_work_add",
        ),
        (
            "kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log",
            "kernel BUG in set_pfnblock_flags_mask",
        ),
    ];
    for (i, (file, title)) in parts.iter().enumerate() {
        log.push_str(&fixture(file));
        titles.push(*title);
        for k in 0..4 {
            log.push_str(&runtime[(i * 4 + k) % runtime.len()]);
            log.push('\n');
        }
    }
    (log, titles, runtime)
}

#[test]
fn a_log_with_several_reports_yields_each_in_order() {
    let (log, titles, _) = mixed_console();
    let reports = parse(&log);
    assert_eq!(
        reports.iter().map(|r| r.title.as_str()).collect::<Vec<_>>(),
        titles
    );
    let lines: Vec<&str> = log.lines().collect();
    for pair in reports.windows(2) {
        assert!(pair[0].end_line < pair[1].start_line, "reports overlap");
    }
    for report in &reports {
        let first = daxdiff_observe::console::strip_prefixes(lines[report.start_line - 1]);
        assert_eq!(report.text.lines().next(), Some(first), "{}", report.title);
        let last = daxdiff_observe::console::strip_prefixes(lines[report.end_line - 1]);
        assert_eq!(report.text.lines().last(), Some(last), "{}", report.title);
    }
}

#[test]
fn interleaved_boot_lines_are_neither_reports_nor_report_text() {
    let (log, _, runtime) = mixed_console();
    for report in parse(&log) {
        for line in &runtime {
            let bare = daxdiff_observe::console::strip_prefixes(line);
            assert!(
                !report.text.contains(bare),
                "{} swallowed {bare:?}",
                report.title
            );
        }
    }
}

#[test]
fn a_line_from_another_cpu_inside_a_report_does_not_split_it() {
    let text = fixture("hung-task-truncate-partial-folio-f2fs-arm64-6.12.log");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(
        12,
        "EXT4-fs (pmem0): mounted filesystem r/w with ordered data mode. Quota mode: none.",
    );
    let report = only_report(&lines.join("\n"), "interleaved");
    assert_eq!(
        report.title,
        "INFO: task hung in truncate_inode_partial_folio"
    );
    assert_eq!(report.end_line, lines.len());
}

#[test]
fn kmsg_dump_gives_the_same_reports() {
    for expected in FIXTURES {
        let text = fixture(expected.file);
        let mut kmsg = String::new();
        for (seq, line) in text.lines().enumerate() {
            let line = daxdiff_observe::console::strip_prefixes(line);
            kmsg.push_str(&format!(
                "4,{seq},{},-,caller=T93;{line}\n",
                1_000_000 + seq * 17
            ));
            if seq % 5 == 0 {
                kmsg.push_str(" SUBSYSTEM=nd\n DEVICE=+nd:namespace0.0\n");
            }
        }
        let from_console = only_report(&text, expected.file);
        let from_kmsg = only_report(&kmsg, expected.file);
        assert_eq!(from_kmsg.title, from_console.title, "{}", expected.file);
        assert_eq!(from_kmsg.signature, from_console.signature);
        assert_eq!(from_kmsg.frames, from_console.frames, "{}", expected.file);
        assert_eq!(from_kmsg.text, from_console.text, "{}", expected.file);
    }
}

#[test]
fn host_timestamps_and_caller_ids_change_nothing_but_line_prefixes() {
    for expected in FIXTURES {
        let text = fixture(expected.file);
        let wrapped: String = text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let bare = daxdiff_observe::console::strip_prefixes(line);
                format!(
                    "2026-01-02T03:04:{:02}.{i:06}Z [ {:4}.{i:06}][  T4242] {bare}\n",
                    i % 60,
                    100 + i
                )
            })
            .collect();
        let plain = only_report(&text, expected.file);
        let got = only_report(&wrapped, expected.file);
        assert_eq!(got.title, plain.title, "{}", expected.file);
        assert_eq!(got.text, plain.text, "{}", expected.file);
        assert_eq!(
            (got.start_line, got.end_line),
            (plain.start_line, plain.end_line)
        );
    }
}

#[test]
fn a_console_cut_mid_report_still_gives_a_titled_report() {
    let cut = |file: &str, keep: usize| -> Report {
        let text: Vec<String> = fixture(file).lines().take(keep).map(String::from).collect();
        only_report(&text.join("\n"), file)
    };
    let warning = cut("warning-dax-insert-entry-erofs-6.17.log", 5);
    assert_eq!(warning.title, "WARNING in dax_insert_entry");
    assert!(warning.truncated);

    let kasan = cut("kasan-slab-uaf-tls-encrypt-done-syzbot-6.6.log", 4);
    assert_eq!(
        kasan.title,
        "KASAN: slab-use-after-free Read in do_raw_spin_unlock"
    );
    assert!(kasan.truncated);

    let hung = cut("hung-task-io-wq-put-and-exit-syzbot-5.17.log", 3);
    assert_eq!(hung.title, "INFO: task hung");
    assert!(hung.truncated);

    let hung_mid_stack = cut("hung-task-io-wq-put-and-exit-syzbot-5.17.log", 14);
    assert_eq!(
        hung_mid_stack.title,
        "INFO: task hung in io_wq_put_and_exit"
    );

    let bug = cut("kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log", 1);
    assert_eq!(bug.title, "kernel BUG at mm/page_alloc.c:535");
    assert_eq!(
        bug.signature,
        cut(
            "kernel-bug-set-pfnblock-flags-mask-ndctl-5.2-truncated.log",
            2
        )
        .signature,
        "cut right after the header, the same BUG still has one signature across kernels"
    );
}

#[test]
fn back_to_back_reports_keep_their_own_opening_lines() {
    let kasan = fixture("kasan-slab-uaf-tls-encrypt-done-syzbot-6.6.log");
    let twice = parse(&format!("{kasan}{kasan}"));
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0].signature, twice[1].signature);
    assert!(twice[0]
        .text
        .ends_with("=================================================================="));
    assert!(twice[1].text.starts_with(
        "==================================================================\nBUG: KASAN:"
    ));
    assert_eq!(twice[1].start_line, twice[0].end_line + 1);

    // A WARNING cut short, then a WARN with its message: the `cut here` line opens the second.
    let warning = fixture("warning-dax-insert-entry-erofs-6.17.log");
    let percpu = fixture("percpu-ref-obj-cgroup-s390-5.12.log");
    let reports = parse(&format!("{warning}{percpu}"));
    assert_eq!(
        reports.iter().map(|r| r.title.as_str()).collect::<Vec<_>>(),
        [
            "WARNING in dax_insert_entry",
            "percpu ref underflow in obj_cgroup_release"
        ]
    );
    assert!(reports[1]
        .text
        .starts_with("------------[ cut here ]------------\npercpu ref"));
    assert!(!reports[0].text.contains("cut here"));
}

#[test]
fn a_panic_following_a_report_belongs_to_it() {
    let report = only_report(&fixture("hung-task-test-aead-arm64-panic.log"), "aead");
    assert!(report
        .text
        .ends_with("Kernel panic - not syncing: hung_task: blocked tasks"));
    let gpf = only_report(&fixture("gpf-six-lock-ip-waiter-syzbot-6.12.log"), "gpf");
    let with_panic = format!(
        "{}\nKernel panic - not syncing: Fatal exception\nKernel Offset: disabled\n---[ end Kernel panic - not syncing: Fatal exception ]---\n",
        fixture("gpf-six-lock-ip-waiter-syzbot-6.12.log")
    );
    let panicked = only_report(&with_panic, "gpf+panic");
    assert_eq!(panicked.title, gpf.title);
    assert!(panicked
        .text
        .ends_with("---[ end Kernel panic - not syncing: Fatal exception ]---"));
    assert!(!panicked.truncated);
}

#[test]
fn frames_carry_offsets_modules_and_source_positions() {
    let pmem = only_report(&fixture("percpu-ref-dax-pmem-4.10.log"), "pmem");
    let exit = pmem
        .frames
        .iter()
        .find(|f| f.function == "dax_pmem_percpu_exit")
        .unwrap();
    assert_eq!(
        (exit.offset, exit.size, exit.module.as_deref()),
        (Some(0x50), Some(0x50), Some("dax_pmem"))
    );
    assert!(!exit.reliable);

    let syz = only_report(&fixture("warning-dax-iomap-rw-syzbot-6.17.log"), "syz");
    let read = syz
        .frames
        .iter()
        .find(|f| f.function == "__kernel_read")
        .unwrap();
    assert_eq!(
        read.location.as_ref().unwrap().to_string(),
        "fs/read_write.c:530"
    );
    let inlined = syz
        .frames
        .iter()
        .find(|f| f.function == "prepare_binprm")
        .unwrap();
    assert!(inlined.inline && inlined.offset.is_none());

    let bug = only_report(
        &fixture("kernel-bug-set-pfnblock-flags-mask-ndctl-5.4.log"),
        "bug",
    );
    let names: Vec<&str> = bug.frames.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(
        &names[..4],
        [
            "set_pfnblock_flags_mask",
            "memmap_init_zone_device",
            "memremap_pages",
            "devm_memremap_pages"
        ]
    );
    assert_eq!(bug.frames[4].module.as_deref(), Some("nd_pmem"));

    let hung = only_report(
        &fixture("hung-task-io-wq-put-and-exit-syzbot-5.17.log"),
        "hung",
    );
    assert!(
        !hung.frames.iter().any(|f| f.function == "watchdog"),
        "the NMI backtraces are not the blocked task's stack"
    );
}

#[test]
fn reports_round_trip_through_json() {
    for expected in FIXTURES {
        let report = only_report(&fixture(expected.file), expected.file);
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report, "{}", expected.file);
    }
    let report = only_report(&fixture("hung-task-test-aead-arm64-panic.log"), "aead");
    let value: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["kind"], "hung-task");
    assert_eq!(value["signature"], "INFO: task hung in test_aead_vec_cfg");
}
