//! Import, export and their round trips on syzkaller-format programs written for these tests.

use super::*;
use crate::{parse, FileTarget, Program, Target};

fn t() -> &'static Target {
    Target::builtin()
}

fn imp(text: &str) -> Imported {
    import(t(), text, &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn refusals(text: &str) -> Vec<Refusal> {
    match import(t(), text, &ImportOptions::default()) {
        Err(SyzError::Refused(r)) => r,
        other => panic!("must be refused: {other:?}"),
    }
}

/// A DAX file mapped at a fixed address, advised, read into and unmapped.
const MMAP_MADVISE: &str = "\
# map a DAX file, populate it, read into the mapping
r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x42, 0x1ff)
ftruncate(r0, 0x200000)
mmap(&(0x7f0000200000/0x200000)=nil, 0x200000, 0x3, 0x11, r0, 0x0)
madvise(&(0x7f0000200000/0x200000)=nil, 0x200000, 0x17)
pread64(r0, &(0x7f0000201000)=\"\"/4096, 0x1000, 0x0)
pwrite64(r0, &(0x7f0000000100)=\"deadbeef\", 0x4, 0x1000)
mprotect(&(0x7f0000200000/0x1000)=nil, 0x1000, 0x1)
munmap(&(0x7f0000200000/0x200000)=nil, 0x200000)
close(r0)
";

const MMAP_MADVISE_DAXDIFF: &str = "\
# map a DAX file, populate it, read into the mapping
r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)
ftruncate(r0, 0x200000)
r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)
madvise(&r1+0x0, 0x200000, MADV_POPULATE_WRITE)
pread64(r0, &r1+0x1000, 0x1000, 0x0)
pwrite64(r0, &buf[0x4], 0x4, 0x1000)
mprotect(&r1+0x0, 0x1000, PROT_READ)
munmap(&r1+0x0, 0x200000)
close(r0)
";

/// A DAX mapping spliced into a pipe (page references held by the pipe), asynchronously.
const VMSPLICE: &str = "\
r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file1\\x00', 0x42, 0x0)
ftruncate(r0, 0x10000)
mmap(&(0x7f0000400000/0x10000)=nil, 0x10000, 0x3, 0x8011, r0, 0x0)
pipe2(&(0x7f0000000040)={<r1=>0xffffffffffffffff, <r2=>0xffffffffffffffff}, 0x800)
vmsplice(r2, &(0x7f0000000080)=[{&(0x7f0000400000), 0x10000}, {&(0x7f0000001000)=\"\"/4096, 0x1000}], 0x2, 0x8) (async)
read(r1, &(0x7f0000002000)=\"\"/4096, 0x1000) # drain
close(r1)
close(r2)
";

const VMSPLICE_DAXDIFF: &str = "\
r0 = openat$ext4(AT_FDCWD, &\"file1\", O_RDWR|O_CREAT, 0x1b6)
ftruncate(r0, 0x10000)
r1 = mmap(0x0, 0x10000, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, r0, 0x0)
r2 = daxdiff_pipe(O_NONBLOCK)
vmsplice(r2, [{&r1+0x0, 0x10000}, {&buf[0x1000], 0x1000}], 0x2, SPLICE_F_GIFT) [t1]
# drain
read$pipe(r2, &buf[0x1000], 0x1000)
close$pipe_r(r2)
close$pipe_w(r2)
";

/// A devdax mapping registered as io_uring fixed buffers, with the ring mapping syzkaller
/// makes itself and `AUTO` lengths.
const URING: &str = "\
r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='/dev/dax0.0\\x00', 0x2, 0x0)
mmap(&(0x7f0000200000/0x200000)=nil, 0x200000, 0x3, 0x11, r0, 0x0)
r1 = io_uring_setup(0x8, &(0x7f0000000040)={0x0, 0x0, 0x0, 0x0, 0x0, 0x0, <r2=>0x0})
mmap$IORING_OFF_SQ_RING(&(0x7f0000600000/0x1000)=nil, 0x1000, 0x3, 0x11, r1, 0x0)
io_uring_register$IORING_REGISTER_BUFFERS(r1, 0x0, &(0x7f0000000100)=[{&(0x7f0000200000)=\"\"/2097152, 0x200000}, {&(0x7f0000003000)=\"\"/4096, AUTO}], AUTO)
io_uring_register$IORING_UNREGISTER_BUFFERS(r1, 0x1, 0x0, 0x0)
close(r1)
munmap(&(0x7f0000200000/0x200000)=nil, 0x200000)
close(r0)
";

const URING_DAXDIFF: &str = "\
r0 = openat$devdax(AT_FDCWD, &\"dax0.0\", O_RDWR, 0x0)
r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)
r2 = daxdiff_uring_setup(0x8)
r3 = io_uring_register$REGISTER_BUFFERS(r2, IORING_REGISTER_BUFFERS, [{&r1+0x0, 0x200000}, {&buf[0x1000], 0x1000}], 0x2)
io_uring_register$UNREGISTER_BUFFERS(r2, IORING_UNREGISTER_BUFFERS, 0x0, 0x0)
close(r2)
munmap(&r1+0x0, 0x200000)
close(r0)
";

#[test]
fn mmap_and_madvise_of_a_dax_file_import_as_canonical_daxdiff_text() {
    let im = imp(MMAP_MADVISE);
    assert_eq!(im.program.to_text(), MMAP_MADVISE_DAXDIFF);
    // The canonical text is what daxdiff's own parser reads back, unchanged.
    assert_eq!(parse(t(), MMAP_MADVISE_DAXDIFF).unwrap(), im.program);
    // pwrite64's "deadbeef" is not written by daxdiff: the user is told.
    assert!(
        im.notes
            .iter()
            .any(|n| n.line == 7 && n.why.contains("contents")),
        "{:?}",
        im.notes
    );
}

#[test]
fn vmsplice_pipes_and_async_import() {
    let im = imp(VMSPLICE);
    assert_eq!(im.program.to_text(), VMSPLICE_DAXDIFF);
    assert!(im.skipped.is_empty());
}

#[test]
fn io_uring_setup_and_fixed_buffers_import() {
    let im = imp(URING);
    assert_eq!(im.program.to_text(), URING_DAXDIFF);
    assert!(
        im.notes
            .iter()
            .any(|n| n.line == 4 && n.why.contains("daxdiff_uring_setup maps")),
        "{:?}",
        im.notes
    );
}

#[test]
fn target_option_and_hint_comments_pick_the_mount() {
    let text = "r0 = open(&(0x7f0000000000)='./file0\\x00', 0x2, 0x0)\n\
                # daxdiff target: nodax\n\
                r1 = openat(0xffffffffffffff9c, &(0x7f0000000010)='./file1\\x00', 0x4002, 0x0)\n";
    let opts = ImportOptions {
        target: FileTarget::Xfs,
        skip_unknown: false,
    };
    let im = import(t(), text, &opts).unwrap();
    assert_eq!(
        im.program.to_text(),
        "r0 = open$xfs(&\"file0\", O_RDWR, 0x1b6)\n\
         r1 = openat$nodax(AT_FDCWD, &\"file1\", O_RDWR|O_DIRECT, 0x1b6)\n"
    );
}

#[test]
fn unknown_calls_are_refused_naming_line_call_and_reason() {
    let r = refusals(&format!(
        "{}r1 = socket$inet(0x2, 0x1, 0x0)\nclose(r1)\n",
        MMAP_MADVISE
    ));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].line, r[0].call.as_str()), (11, "socket$inet"));
    assert!(r[0].why.contains("does not describe socket"), "{}", r[0]);
    assert_eq!((r[1].line, r[1].call.as_str()), (12, "close"));
    assert!(r[1].why.contains("comes from line 11"), "{}", r[1]);
    let msg = SyzError::Refused(r).to_string();
    assert!(
        msg.contains("line 11: socket$inet: daxdiff does not describe socket"),
        "{msg}"
    );
    assert!(msg.contains("--skip-unknown"), "{msg}");
}

#[test]
fn inexpressible_arguments_are_refused() {
    let cases = [
        (
            "madvise(&(0x7f0000000000/0x1000)=nil, 0x1000, 0x4)\n",
            "madvise",
            "not inside a mapping",
        ),
        (
            "r0 = openat(0x3, &(0x7f0000000000)='./file0\\x00', 0x2, 0x0)\n",
            "openat",
            "AT_FDCWD",
        ),
        (
            "r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='/etc/passwd\\x00', 0x2, 0x0)\n",
            "openat",
            "outside daxdiff's DAX mounts",
        ),
        (
            "r0 = io_uring_setup(0x8, &(0x7f0000000000)={0x0, 0x0, 0x2})\n",
            "io_uring_setup",
            "setup flags 0x2",
        ),
        ("getpid() (fail_nth: 2)\n", "getpid", "fault injection"),
        (
            "io_uring_register$IORING_REGISTER_FILES(0x3, 0x2, 0x0, 0x0)\n",
            "io_uring_register$IORING_REGISTER_FILES",
            "opcode 0x2",
        ),
        (
            "syz_open_dev$tty(0x0, 0x0, 0x0)\n",
            "syz_open_dev$tty",
            "pseudo-call",
        ),
    ];
    for (text, call, why) in cases {
        let r = refusals(text);
        assert_eq!((r[0].line, r[0].call.as_str()), (1, call), "{text}");
        assert!(r[0].why.contains(why), "{text}: {}", r[0]);
    }
    // Validation problems are named by argument.
    let r = refusals(
        "r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./f\\x00', 0x2, 0x0)\n\
         pipe(&(0x7f0000000000)={<r1=>0xffffffffffffffff, <r2=>0xffffffffffffffff})\n\
         vmsplice(r1, &(0x7f0000000080)=[], 0x0, 0x0)\n",
    );
    assert_eq!(r[0].line, 3);
    assert!(r[0].why.contains("r1 is the pipe's read end"), "{}", r[0]);
}

#[test]
fn skip_unknown_drops_the_call_and_what_depends_on_it() {
    let text = "r0 = socket(0x2, 0x1, 0x0)\nclose(r0)\ngetpid() (rerun: 3)\n# end\n";
    let opts = ImportOptions {
        skip_unknown: true,
        ..ImportOptions::default()
    };
    let im = import(t(), text, &opts).unwrap();
    assert_eq!(im.program.to_text(), "r0 = getpid()\n# end\n");
    let lines: Vec<usize> = im.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, vec![1, 2]);
    assert!(im.notes.iter().any(|n| n.why.contains("rerun")));
}

fn export_text(p: &Program) -> String {
    export(t(), p, &ExportOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n{p}"))
        .program
        .to_text()
}

#[test]
fn import_export_import_round_trips() {
    for syz in [MMAP_MADVISE, VMSPLICE, URING] {
        let first = imp(syz).program;
        let exported = export_text(&first);
        let again = imp(&exported).program;
        assert_eq!(again.to_text(), first.to_text(), "via\n{exported}");
    }
}

#[test]
fn export_lays_out_the_data_area_and_names_syzkaller_calls() {
    let p = parse(t(), VMSPLICE_DAXDIFF).unwrap();
    let text = export_text(&p);
    let want = "\
r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file1\\x00', 0x42, 0x1b6)
ftruncate(r0, 0x10000)
mmap(&(0x7f0000010000/0x10000)=nil, 0x10000, 0x3, 0x8011, r0, 0x0)
pipe2(&(0x7f0000020000)={<r1=>0xffffffffffffffff, <r2=>0xffffffffffffffff}, 0x800)
vmsplice(r2, &(0x7f0000022000)=[{&(0x7f0000010000), 0x10000}, {&(0x7f0000021000)=\"\"/4096, 0x1000}], 0x2, 0x8) (async)
# drain
read(r1, &(0x7f0000023000)=\"\"/4096, 0x1000)
close(r1)
close(r2)
";
    assert_eq!(text, want);
}

#[test]
fn pseudo_calls_are_refused_on_export_or_kept_as_comments() {
    let p = parse(
        t(),
        "# evict\ndaxdiff_evict(DAXDIFF_EVICT_DROP_CACHES)\nr0 = daxdiff_aio_setup(0x4)\nio_destroy(r0)\nr1 = getpid()\n",
    )
    .unwrap();
    let Err(SyzError::Refused(r)) = export(t(), &p, &ExportOptions::default()) else {
        panic!("pseudo-calls must be refused");
    };
    let named: Vec<(usize, &str)> = r.iter().map(|x| (x.line, x.call.as_str())).collect();
    assert_eq!(
        named,
        vec![
            (2, "daxdiff_evict"),
            (3, "daxdiff_aio_setup"),
            (4, "io_destroy")
        ]
    );
    assert!(r[2].why.contains("comes from line 3"), "{}", r[2]);
    let ex = export(t(), &p, &ExportOptions { skip_unknown: true }).unwrap();
    assert_eq!(
        ex.program.to_text(),
        "# evict\n# daxdiff only: daxdiff_evict(DAXDIFF_EVICT_DROP_CACHES)\n\
         # daxdiff only: r0 = daxdiff_aio_setup(0x4)\n# daxdiff only: io_destroy(r0)\nr0 = getpid()\n"
    );
}

#[test]
fn corpus_programs_export_and_come_back() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let mut whole = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "prog") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut p = parse(t(), &std::fs::read_to_string(&path).unwrap()).unwrap();
        p.renumber();
        let ex = export(t(), &p, &ExportOptions { skip_unknown: true }).unwrap();
        // Only pseudo-calls, what they made, and mappings larger than syzkaller's data area
        // stay behind.
        for s in &ex.skipped {
            assert!(
                s.call.starts_with("daxdiff_")
                    || s.why.contains("data area")
                    || s.why.contains("not exported"),
                "{name}: {s}"
            );
        }
        let text = ex.program.to_text();
        let back = imp(&text).program;
        if ex.skipped.is_empty() {
            assert_eq!(back.to_text(), p.to_text(), "{name} via\n{text}");
            whole.push(name);
        } else {
            assert_eq!(back.calls.len(), p.calls.len() - ex.skipped.len(), "{name}");
        }
    }
    whole.sort();
    assert_eq!(
        whole,
        ["uring_register_fsdax.prog", "vmsplice_dax_mapping.prog"]
    );
}
