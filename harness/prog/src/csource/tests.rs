use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::parse;

fn corpus() -> Vec<(String, Program)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let mut out: Vec<(String, Program)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "prog"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let prog = parse(Target::builtin(), &text).unwrap();
            (p.file_stem().unwrap().to_string_lossy().into_owned(), prog)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "the seed corpus is missing");
    out
}

fn gcc(src: &Path, out: &Path) -> std::process::Output {
    Command::new("gcc")
        .args(["-static", "-Wall", "-Werror", "-O1", "-pthread", "-o"])
        .arg(out)
        .arg(src)
        .output()
        .expect("gcc is installed (the C reproducers are built with it)")
}

fn build(dir: &Path, name: &str, prog: &Program) -> PathBuf {
    let c = emit(Target::builtin(), prog, &[format!("test {name}")]).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, &c).unwrap();
    let bin = dir.join(name);
    let out = gcc(&src, &bin);
    assert!(
        out.status.success(),
        "{name}.c does not compile:\n{}\n{c}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn every_seed_program_compiles_with_static_gcc_and_warnings_as_errors() {
    let dir = tempfile_dir("compile");
    for (name, prog) in corpus() {
        build(&dir, &name, &prog);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("daxdiff-csource-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a reproducer on the host against plain directories and returns its results.
fn run_on_host(prog_text: &str, tag: &str) -> Vec<CallResult> {
    let prog = parse(Target::builtin(), prog_text).unwrap();
    let dir = tempfile_dir(tag);
    let bin = build(&dir, "repro", &prog);
    let (ext4, xfs) = (dir.join("ext4"), dir.join("xfs"));
    std::fs::create_dir_all(&ext4).unwrap();
    std::fs::create_dir_all(&xfs).unwrap();
    let out = Command::new(&bin)
        .env("DAXDIFF_EXT4_DIR", &ext4)
        .env("DAXDIFF_XFS_DIR", &xfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = parse_output(&String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
    results
}

fn ret_of(r: &[CallResult], idx: usize) -> (i64, Option<&str>) {
    let c = r
        .iter()
        .find(|c| c.index == idx)
        .unwrap_or_else(|| panic!("call {idx} did not report: {r:?}"));
    (c.ret, c.errno_name.as_deref())
}

#[test]
fn a_reproducer_does_what_the_calls_say_and_reports_each_result() {
    // Files on a plain directory, a pipe, vmsplice from a mapping, resources that failed.
    let r = run_on_host(
        r#"r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
ftruncate(r0, 0x2000)
r1 = mmap(0x0, 0x2000, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, r0, 0x0)
pwrite64(r0, &buf[0x1000], 0x1000, 0x1000)
r2 = daxdiff_pipe(O_NONBLOCK)
vmsplice(r2, [{&r1+0x1000, 0x1000}], 0x1, 0x0)
read$pipe(r2, &buf[0x1000], 0x1000)
r3 = openat$ext4(AT_FDCWD, &"file1", O_RDONLY, 0x1b6)
close(r3)
daxdiff_evict(0x7)
munmap(&r1+0x0, 0x2000)
close(r0)
"#,
        "semantics",
    );
    assert_eq!(r.len(), 12, "{r:?}");
    assert_eq!(ret_of(&r, 1), (0, None));
    assert!(ret_of(&r, 2).0 > 4096, "mmap returns an address: {r:?}");
    assert_eq!(ret_of(&r, 3), (0x1000, None));
    assert_eq!(ret_of(&r, 5), (0x1000, None));
    assert_eq!(ret_of(&r, 6), (0x1000, None));
    // file1 does not exist; closing the failed resource gets the invalid fd -1.
    assert_eq!(ret_of(&r, 7), (-1, Some("ENOENT")));
    assert_eq!(ret_of(&r, 8), (-1, Some("EBADF")));
    assert_eq!(ret_of(&r, 9), (-1, Some("EINVAL")));
    assert_eq!(ret_of(&r, 11), (0, None));
}

#[test]
fn second_thread_calls_wait_for_their_producers_and_barriers_wait_for_them() {
    let r = run_on_host(
        r#"r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6) [t1]
daxdiff_sleep(0x5) [t1]
ftruncate(r0, 0x1000)
daxdiff_barrier()
r1 = mmap$anon(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)
r2 = daxdiff_fork_touch(&r1+0x0, 0x1000, DAXDIFF_TOUCH_WRITE_HOLD)
daxdiff_wait(r2)
"#,
        "threads",
    );
    assert_eq!(r.len(), 7, "{r:?}");
    assert_eq!(
        ret_of(&r, 2),
        (0, None),
        "ftruncate waited for the open on t1"
    );
    let order: Vec<usize> = r.iter().map(|c| c.index).collect();
    assert!(
        order.iter().position(|&i| i == 1) < order.iter().position(|&i| i == 3),
        "the barrier waited for the sleep: {order:?}"
    );
    // The holder never exits by itself: waiting kills it (status: SIGKILL).
    assert_eq!(ret_of(&r, 5), (0, None));
    assert_eq!(ret_of(&r, 6), (9, None));
}

#[test]
fn uring_calls_go_through_a_raw_ring() {
    let r = run_on_host(
        r#"r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
pwrite64(r0, &buf[0x1000], 0x1000, 0x0)
r1 = daxdiff_uring_setup(0x8)
daxdiff_uring_rw$buf(r1, IORING_OP_READ, r0, &buf[0x1000], 0x1000, 0x0)
r2 = mmap$anon(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)
r3 = io_uring_register$REGISTER_BUFFERS(r1, IORING_REGISTER_BUFFERS, [{&r2+0x0, 0x1000}], 0x1)
daxdiff_uring_rw_fixed(r1, r3, IORING_OP_READ_FIXED, r0, 0x0, &r2+0x0, 0x1000, 0x0)
daxdiff_uring_rw_fixed(r1, r3, IORING_OP_READ_FIXED, r0, 0x1, &r2+0x0, 0x1000, 0x0)
daxdiff_uring_rw$buf(0xffffffffffffffff, IORING_OP_READ, r0, &buf[0x1000], 0x1000, 0x0)
"#,
        "uring",
    );
    if ret_of(&r, 2).1.is_some() {
        eprintln!("io_uring unavailable on this host: {r:?}");
        return;
    }
    assert_eq!(ret_of(&r, 3), (0x1000, None));
    assert_eq!(ret_of(&r, 5), (0, None));
    assert_eq!(ret_of(&r, 6), (0x1000, None));
    // Buffer 1 was never registered: the CQE says EFAULT, as in the executor's own test.
    assert_eq!(ret_of(&r, 7), (-1, Some("EFAULT")));
    assert_eq!(ret_of(&r, 8), (-1, Some("EBADF")), "no ring: EBADF");
}

#[test]
fn uring_submissions_stay_in_flight_until_waited_for() {
    let r = run_on_host(
        r#"r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
pwrite64(r0, &buf[0x2000], 0x2000, 0x0)
r1 = daxdiff_uring_setup(0x8)
daxdiff_uring_submit$buf(r1, IORING_OP_READ, r0, &buf[0x1000], 0x1000, 0x0)
daxdiff_uring_submit$iov(r1, IORING_OP_READV, r0, [{&buf[0x1000], 0x1000}], 0x1, 0x1000)
daxdiff_uring_rw$buf(r1, IORING_OP_READ, r0, &buf[0x1000], 0x1000, 0x0)
daxdiff_uring_wait(r1)
daxdiff_uring_wait(r1)
daxdiff_uring_wait(0xffffffffffffffff)
"#,
        "uring-submit",
    );
    if ret_of(&r, 2).1.is_some() {
        eprintln!("io_uring unavailable on this host: {r:?}");
        return;
    }
    assert_eq!(ret_of(&r, 3), (0, None));
    assert_eq!(ret_of(&r, 4), (0, None));
    // A waited-for request in between does not take the others' completions.
    assert_eq!(ret_of(&r, 5), (0x1000, None));
    assert_eq!(ret_of(&r, 6), (2, None), "both submissions waited for");
    assert_eq!(ret_of(&r, 7), (0, None), "nothing left");
    assert_eq!(ret_of(&r, 8), (-1, Some("EBADF")), "no ring: EBADF");
}

#[test]
fn aio_submissions_stay_in_flight_until_waited_for() {
    let r = run_on_host(
        r#"r0 = daxdiff_aio_setup(0x4)
r1 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT, 0x1b6)
pwrite64(r1, &buf[0x2000], 0x2000, 0x0)
daxdiff_aio_submit$buf(r0, IOCB_CMD_PREAD, r1, &buf[0x1000], 0x1000, 0x0)
daxdiff_aio_submit$iov(r0, IOCB_CMD_PREADV, r1, [{&buf[0x800], 0x800}], 0x1, 0x1000)
daxdiff_aio_wait(r0)
daxdiff_aio_wait(r0)
io_destroy(r0)
daxdiff_aio_wait(0x0)
"#,
        "aio-submit",
    );
    if ret_of(&r, 0).1.is_some() {
        eprintln!("AIO unavailable on this host: {r:?}");
        return;
    }
    assert_eq!(ret_of(&r, 0), (0, None));
    assert_eq!(ret_of(&r, 3), (0, None));
    assert_eq!(ret_of(&r, 4), (0, None));
    assert_eq!(ret_of(&r, 5), (2, None), "both submissions waited for");
    assert_eq!(ret_of(&r, 6), (0, None), "nothing left");
    assert_eq!(ret_of(&r, 7), (0, None));
    assert_eq!(ret_of(&r, 8), (-1, Some("EINVAL")));
}

#[test]
fn output_lines_parse_back_into_call_results() {
    let r = parse_output(
        "repro.sh: ext4 /mnt/ext4/daxdiff-repro\n#0 openat$ext4 = 3\n#3 io_uring_register$REGISTER_BUFFERS = -1 errno 95 (EOPNOTSUPP)\nnoise\n",
    );
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].index, r[0].ret, r[0].errno), (0, 3, None));
    assert_eq!(r[1].name, "io_uring_register$REGISTER_BUFFERS");
    assert_eq!(r[1].errno_name.as_deref(), Some("EOPNOTSUPP"));
}

#[test]
fn the_header_names_the_finding_and_keeps_the_program_text() {
    let (_, prog) = corpus().into_iter().next().unwrap();
    let c = emit(Target::builtin(), &prog, &["divergence: x vs y".into()]).unwrap();
    assert!(c.contains("// divergence: x vs y"));
    assert!(c.contains(&format!("//   {}", prog.calls[0].to_text())));
    assert!(c.contains("int main(void)"));
}

#[test]
fn the_setup_script_sets_up_only_what_the_program_uses() {
    let t = Target::builtin();
    let ext4 = crate::parse(
        t,
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\ndaxdiff_evict(DAXDIFF_EVICT_REMOUNT_XFS)\n",
    )
    .unwrap();
    assert_eq!(super::roles(t, &ext4), ["ext4", "xfs"]);
    let s = super::setup_script(t, &ext4);
    assert!(s.contains(": \"${DAXDIFF_ROLES:=ext4 xfs}\""), "{s}");
    let devdax = crate::parse(t, "daxdiff_devdax_disable()\n").unwrap();
    assert_eq!(super::roles(t, &devdax), ["devdax"]);
    let none = crate::parse(t, "daxdiff_sleep(0x1)\n").unwrap();
    assert!(super::setup_script(t, &none).contains(": \"${DAXDIFF_ROLES:=ext4 xfs devdax}\""));
    assert!(!s.contains("@ROLES@"));
}
