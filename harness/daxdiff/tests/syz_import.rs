//! `daxdiff prog import` of a syzkaller-format program (written for this test): its output
//! is daxdiff text, and it runs with `daxdiff run` on a real kernel with the results a user
//! checks. The run boots debian-6.12 under QEMU: `ci/test.sh` runs it with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use daxdiff_prog::{parse, Target};

/// A DAX file mapped at a fixed address, populated with madvise, pinned by vmsplice.
const VMSPLICE_PIN: &str = "\
# a DAX mapping populated and handed to a pipe (vmsplice takes references on its pages)
r0 = openat(0xffffffffffffff9c, &(0x7f0000000000)='./file0\\x00', 0x42, 0x0)
ftruncate(r0, 0x200000)
mmap(&(0x7f0000200000/0x200000)=nil, 0x200000, 0x3, 0x11, r0, 0x0)
madvise(&(0x7f0000200000/0x200000)=nil, 0x200000, 0x17)
pipe2(&(0x7f0000000040)={<r1=>0xffffffffffffffff, <r2=>0xffffffffffffffff}, 0x800)
vmsplice(r2, &(0x7f0000000080)=[{&(0x7f0000200000), 0x10000}], 0x1, 0x0)
munmap(&(0x7f0000200000/0x200000)=nil, 0x200000)
close(r1)
close(r2)
close(r0)
";

fn daxdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_daxdiff"))
        .args(args)
        .output()
        .unwrap()
}

fn import(dir: &Path, syz: &str, extra: &[&str]) -> (Output, PathBuf) {
    let input = dir.join("repro.syz");
    let out = dir.join("repro.prog");
    std::fs::write(&input, syz).unwrap();
    let mut args = vec!["prog", "import", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    (daxdiff(&args), out)
}

#[test]
fn import_writes_a_program_daxdiff_parses() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = import(dir.path(), VMSPLICE_PIN, &["--target", "xfs"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out).unwrap();
    let prog = parse(Target::builtin(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(prog.calls[0].name, "openat$xfs");
    assert!(
        text.contains("madvise(&r1+0x0, 0x200000, MADV_POPULATE_WRITE)"),
        "{text}"
    );
    assert!(
        text.contains("vmsplice(r2, [{&r1+0x0, 0x10000}], 0x1, 0x0)"),
        "{text}"
    );

    // Exported again, the program is syzkaller text that imports to the same program.
    let e = daxdiff(&[
        "prog",
        "export",
        dir.path().join("repro.prog").to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let syz = String::from_utf8(e.stdout).unwrap();
    assert!(syz.contains("# daxdiff target: xfs"), "{syz}");
    let (again, out) = import(dir.path(), &syz, &[]);
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(out).unwrap(), text);
}

#[test]
fn a_call_daxdiff_does_not_describe_is_refused_by_line_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let syz = format!("{VMSPLICE_PIN}r3 = socket$inet(0x2, 0x1, 0x0)\n");
    let (o, _) = import(dir.path(), &syz, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 12: socket$inet: daxdiff does not describe socket"),
        "{err}"
    );
    let (o, out) = import(dir.path(), &syz, &["--skip-unknown"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: dropped: line 12: socket$inet"),
        "{err}"
    );
    let text = std::fs::read_to_string(out).unwrap();
    assert!(!text.contains("socket"), "{text}");
}

/// `result` of call `index` in `daxdiff run`'s per-call lines (`  #5  vmsplice  = 0x10000 (…)`).
fn result(run: &str, index: usize, name: &str) -> String {
    let tag = format!("#{index:<2} {name} ");
    let line = run
        .lines()
        .find(|l| l.trim_start().starts_with(&tag))
        .unwrap_or_else(|| panic!("no line for call {index} ({name}) in:\n{run}"));
    let (_, rest) = line.split_once(" = ").unwrap();
    rest.split(" (").next().unwrap().trim().to_string()
}

#[test]
#[ignore = "boots debian-6.12 under QEMU; run by ci/test.sh"]
fn an_imported_syzkaller_program_runs_on_debian_6_12() {
    let dir = tempfile::tempdir().unwrap();
    let (o, prog) = import(dir.path(), VMSPLICE_PIN, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("imported:\n{}", std::fs::read_to_string(&prog).unwrap());
    let run = daxdiff(&["run", "--kernel", "debian-6.12", prog.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "daxdiff run failed");
    assert!(stdout.contains("status: completed"), "{stdout}");
    assert_eq!(result(&stdout, 1, "ftruncate"), "0");
    // The mapping is an address (printed in hex), not an error.
    let map = result(&stdout, 2, "mmap");
    assert!(map.starts_with("0x"), "mmap: {map}");
    assert_eq!(result(&stdout, 3, "madvise"), "0");
    // vmsplice took every byte of the DAX range into the pipe.
    assert_eq!(result(&stdout, 5, "vmsplice"), "0x10000");
    assert_eq!(result(&stdout, 6, "munmap"), "0");
}
