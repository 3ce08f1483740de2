//! Programs run for real on the host, on tmpfs directories standing in for the DAX mounts:
//! everything but DAX itself (that is checked in the guest by the integration tests).

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use daxdiff_prog::wire::{CallResult, Request, Response, Status};
use daxdiff_prog::{parse, Target};

use super::env::{ProgDirs, RunEnv};
use super::interp::{Interp, VecSink};
use super::memory::checksum;
use super::{serve, Executor};

struct Dirs {
    root: PathBuf,
    env: RunEnv,
}

impl Dirs {
    fn new(tag: &str) -> Dirs {
        let root = PathBuf::from(format!(
            "/dev/shm/daxdiff-exec-{tag}-{}",
            std::process::id()
        ));
        let (e, x) = (root.join("ext4"), root.join("xfs"));
        std::fs::create_dir_all(&e).unwrap();
        std::fs::create_dir_all(&x).unwrap();
        let env = RunEnv::plain_dirs(&e, &x);
        Dirs { root, env }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `text` in this process (no fork) and returns results by call index.
fn run_inline(tag: &str, text: &str) -> Vec<CallResult> {
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let d = Dirs::new(tag);
    let prog = parse(Target::builtin(), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let dirs = ProgDirs::new(&d.env, 1);
    for dir in dirs.all() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let sink = VecSink::default();
    Interp::new(Target::builtin(), &prog, &d.env, &dirs, &sink).run();
    let mut r = sink.calls.into_inner().unwrap();
    assert_eq!(r.len(), prog.calls.len(), "every call reports once");
    r.sort_by_key(|c| c.index);
    r
}

fn ok(r: &CallResult) -> i64 {
    assert_eq!(r.errno, None, "{} failed: {:?}", r.name, r.errno_name);
    r.ret
}

/// The bytes the interpreter puts in a scratch buffer of call `idx`.
fn pattern(len: usize, idx: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(idx))
        .collect()
}

#[test]
fn file_io_reports_values_errnos_and_read_checksums() {
    let r = run_inline(
        "fileio",
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r0, &buf[0x1000], 0x1000, 0x0)\n\
         pread64(r0, &buf[0x800], 0x800, 0x0)\n\
         r1 = openat$xfs(AT_FDCWD, &\"file1\", O_RDONLY, 0x1b6)\n\
         close(r1)\n\
         close(r0)\n\
         close(r0)\n",
    );
    assert!(ok(&r[0]) >= 0);
    assert_eq!(ok(&r[1]), 0x1000);
    assert_eq!(ok(&r[2]), 0x800);
    // pread saw the first half of what pwrite (call 1) wrote.
    assert_eq!(r[2].checksum, Some(checksum(&pattern(0x1000, 1)[..0x800])));
    assert_eq!(r[3].errno_name.as_deref(), Some("ENOENT"));
    // A failed producer's resource is the invalid fd.
    assert_eq!(r[4].errno_name.as_deref(), Some("EBADF"));
    assert_eq!(ok(&r[5]), 0);
    assert_eq!(r[6].errno_name.as_deref(), Some("EBADF"));
    assert!(r.iter().all(|c| c.thread == 0));
}

#[test]
fn mappings_are_used_as_buffers_and_populated_ones_checksummed() {
    let r = run_inline(
        "map",
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r0, 0x200000)\n\
         pwrite64(r0, &buf[0x1000], 0x1000, 0x0)\n\
         r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, r0, 0x0)\n\
         r2 = openat$ext4(AT_FDCWD, &\"file1\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r2, &r1+0x0, 0x1000, 0x0)\n\
         pread64(r2, &buf[0x1000], 0x1000, 0x0)\n\
         munmap(&r1+0x0, 0x200000)\n\
         pwrite64(r2, &r1+0x0, 0x1000, 0x0)\n",
    );
    let want = checksum(&pattern(0x1000, 2));
    assert!(ok(&r[3]) > 0);
    assert_eq!(
        r[3].checksum,
        Some(want),
        "checksum of the populated mapping's first page"
    );
    assert_eq!(ok(&r[5]), 0x1000);
    // file1 got file0's bytes through the mapping.
    assert_eq!(r[6].checksum, Some(want));
    assert_eq!(ok(&r[7]), 0);
    // Use after munmap: the kernel says EFAULT and the executor lives on.
    assert_eq!(r[8].errno_name.as_deref(), Some("EFAULT"));
}

#[test]
fn second_thread_runs_concurrently_and_barrier_waits_for_it() {
    let r = run_inline(
        "threads",
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         daxdiff_sleep(0x32) [t1]\n\
         pwrite64(r0, &buf[0x1000], 0x1000, 0x0) [t1]\n\
         daxdiff_barrier()\n\
         pread64(r0, &buf[0x1000], 0x1000, 0x0)\n",
    );
    assert_eq!(r[1].thread, 1);
    assert_eq!(r[2].thread, 1);
    assert!(
        r[3].duration_us >= 20_000,
        "barrier waited for the 50 ms sleep: {}",
        r[3].duration_us
    );
    assert_eq!(ok(&r[4]), 0x1000);
    assert_eq!(r[4].checksum, Some(checksum(&pattern(0x1000, 2))));
}

#[test]
fn a_resource_from_the_second_thread_is_waited_for() {
    let r = run_inline(
        "xthread",
        "daxdiff_sleep(0x1e) [t1]\n\
         r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6) [t1]\n\
         write(r0, &buf[0x10], 0x10)\n",
    );
    assert!(ok(&r[1]) >= 0);
    assert_eq!(ok(&r[2]), 0x10);
}

#[test]
fn pipes_vmsplice_and_process_vm_access() {
    let r = run_inline(
        "pins",
        "r0 = daxdiff_pipe(0x0)\n\
         vmsplice(r0, [{&buf[0x1000], 0x1000}], 0x1, 0x0)\n\
         read$pipe(r0, &buf[0x1000], 0x1000)\n\
         r1 = getpid()\n\
         process_vm_readv(r1, [{&buf[0x1000], 0x1000}], 0x1, [{&buf[0x1000], 0x1000}], 0x1, 0x0)\n\
         close$pipe_w(r0)\n\
         read$pipe(r0, &buf[0x10], 0x10)\n",
    );
    assert_eq!(ok(&r[0]), 0);
    assert_eq!(ok(&r[1]), 0x1000);
    assert_eq!(ok(&r[2]), 0x1000);
    assert_eq!(
        r[2].checksum,
        Some(checksum(&pattern(0x1000, 1))),
        "read the vmspliced bytes"
    );
    assert_eq!(ok(&r[4]), 0x1000);
    // The remote iovec is this call's second scratch buffer, filled with the same pattern.
    assert_eq!(r[4].checksum, Some(checksum(&pattern(0x1000, 4))));
    assert_eq!(ok(&r[6]), 0, "EOF once the write end is closed");
}

#[test]
fn fork_touch_children_are_reaped_with_their_status() {
    let r = run_inline(
        "fork",
        "r0 = mmap$anon(0x0, 0x2000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\n\
         r1 = daxdiff_fork_touch(&r0+0x0, 0x2000, DAXDIFF_TOUCH_WRITE)\n\
         daxdiff_wait(r1)\n\
         munmap(&r0+0x0, 0x2000)\n\
         r5 = mmap$anon(0x0, 0x1000, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\n\
         r2 = daxdiff_fork_touch(&r5+0x0, 0x1000, DAXDIFF_TOUCH_WRITE)\n\
         daxdiff_wait(r2)\n\
         r3 = mmap$anon(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\n\
         r4 = daxdiff_fork_touch(&r3+0x0, 0x1000, DAXDIFF_TOUCH_WRITE_HOLD)\n\
         daxdiff_wait(r4)\n",
    );
    assert_eq!(ok(&r[1]), 0);
    assert_eq!(ok(&r[2]), 0, "exited with status 0");
    assert_eq!(ok(&r[3]), 0, "munmap");
    // Writing a read-only mapping killed the child with SIGSEGV. (Not a touch of the range
    // just unmapped: tests share this process, and another one may map that range meanwhile.)
    assert_eq!(ok(&r[6]) & 0x7f, i64::from(libc::SIGSEGV));
    // A holder is ended by the wait.
    assert_eq!(ok(&r[9]) & 0x7f, i64::from(libc::SIGKILL));
}

/// Runs the test `name` of this binary again in a process of its own, where no other test
/// maps memory while it runs; true in that process (which then runs the body).
fn in_a_process_of_its_own(name: &str) -> bool {
    if std::env::var_os("DAXDIFF_TEST_ALONE").is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env("DAXDIFF_TEST_ALONE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{name} in a process of its own:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

#[test]
fn an_unmap_longer_than_the_programs_memory_stops_where_that_memory_ends() {
    // The pages it unmaps must stay unmapped until it looks: another test's allocation
    // could take them in a shared process.
    if !in_a_process_of_its_own(
        "run::tests::an_unmap_longer_than_the_programs_memory_stops_where_that_memory_ends",
    ) {
        return;
    }
    let r = run_inline(
        "confine",
        "r0 = mmap$anon(0x0, 0x10000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\n\
         munmap(&r0+0x1000, 0x1000)\n\
         munmap(&r0+0x0, 0x10000)\n\
         r1 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r1, &r0+0x2000, 0x1000, 0x0)\n\
         pwrite64(r1, &r0+0x0, 0x1000, 0x0)\n",
    );
    assert_eq!(ok(&r[2]), 0, "munmap");
    // The hole at +0x1000 is not the program's memory any more: the unmap stopped there, and
    // the rest of r0 is still mapped.
    assert_eq!(ok(&r[4]), 0x1000, "the part past the hole is still mapped");
    assert_eq!(
        r[5].errno,
        Some(libc::EFAULT),
        "the first page was unmapped"
    );
}

#[test]
fn io_uring_reads_and_writes_files() {
    let r = run_inline(
        "uring",
        "r0 = daxdiff_uring_setup(0x8)\n\
         r1 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         daxdiff_uring_rw$buf(r0, IORING_OP_WRITE, r1, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_uring_rw$buf(r0, IORING_OP_READ, r1, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_uring_rw$iov(r0, IORING_OP_READV, r1, [{&buf[0x800], 0x800}, {&buf[0x800], 0x800}], 0x2, 0x0)\n\
         daxdiff_uring_rw$buf(r0, IORING_OP_READ, 0x3e7, &buf[0x10], 0x10, 0x0)\n",
    );
    if r[0].errno.is_some() {
        eprintln!(
            "io_uring unavailable on this host ({:?}): skipping",
            r[0].errno_name
        );
        return;
    }
    assert_eq!(ok(&r[2]), 0x1000);
    assert_eq!(ok(&r[3]), 0x1000);
    let written = pattern(0x1000, 2);
    assert_eq!(r[3].checksum, Some(checksum(&written)));
    assert_eq!(ok(&r[4]), 0x1000);
    assert_eq!(r[4].checksum, Some(checksum(&written)));
    assert_eq!(r[5].errno_name.as_deref(), Some("EBADF"));
}

#[test]
fn io_uring_registers_and_uses_fixed_buffers() {
    let r = run_inline(
        "fixed",
        "r0 = daxdiff_uring_setup(0x8)\n\
         r1 = mmap$anon(0x0, 0x2000, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, 0xffffffffffffffff, 0x0)\n\
         r2 = io_uring_register$REGISTER_BUFFERS(r0, IORING_REGISTER_BUFFERS, [{&r1+0x0, 0x2000}], 0x1)\n\
         r3 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r3, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_uring_rw_fixed(r0, r2, IORING_OP_READ_FIXED, r3, 0x0, &r1+0x0, 0x1000, 0x0)\n\
         daxdiff_uring_update_buffers(r0, r2, 0x0, [{&r1+0x1000, 0x1000}], 0x1)\n\
         io_uring_register$UNREGISTER_BUFFERS(r0, IORING_UNREGISTER_BUFFERS, 0x0, 0x0)\n\
         daxdiff_uring_rw_fixed(r0, r2, IORING_OP_READ_FIXED, r3, 0x0, &r1+0x0, 0x1000, 0x0)\n",
    );
    if r[0].errno.is_some() {
        eprintln!(
            "io_uring unavailable on this host ({:?}): skipping",
            r[0].errno_name
        );
        return;
    }
    assert_eq!(ok(&r[2]), 0);
    assert_eq!(ok(&r[5]), 0x1000);
    assert_eq!(r[5].checksum, Some(checksum(&pattern(0x1000, 4))));
    assert_eq!(ok(&r[6]), 1, "one buffer updated");
    assert_eq!(ok(&r[7]), 0);
    assert_eq!(
        r[8].errno_name.as_deref(),
        Some("EFAULT"),
        "no buffers registered any more"
    );
}

fn request(id: u64, program: &str, timeout_ms: u64) -> Request {
    Request::new(id, program.to_string(), timeout_ms)
}

#[test]
fn executor_runs_programs_in_children_and_cleans_up() {
    let d = Dirs::new("exec");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    let resp = exec.handle(&request(
        5,
        "r0 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\nwrite(r0, &buf[0x100], 0x100)\n",
        5000,
    ));
    assert_eq!(resp.id, 5);
    assert_eq!(resp.status, Status::Completed, "{:?}", resp.detail);
    assert_eq!(resp.calls.len(), 2);
    assert_eq!(resp.calls[1].ret, 0x100);
    // The program's directory is gone afterwards.
    assert_eq!(std::fs::read_dir(d.root.join("xfs")).unwrap().count(), 0);
    let bad = exec.handle(&request(
        6,
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_BOGUS, 0x0)\n",
        1000,
    ));
    assert_eq!(bad.status, Status::Error);
    assert!(bad
        .detail
        .unwrap()
        .starts_with("program does not parse: 1:"));
}

#[test]
fn a_hung_program_times_out_with_its_kernel_stack() {
    let d = Dirs::new("hang");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    // Reading an empty pipe whose write end is open blocks forever.
    let start = std::time::Instant::now();
    let resp = exec.handle(&request(
        7,
        "r0 = daxdiff_pipe(0x0)\nread$pipe(r0, &buf[0x10], 0x10)\n",
        300,
    ));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(resp.status, Status::Timeout);
    assert_eq!(
        resp.calls.len(),
        1,
        "the pipe call finished before the hang"
    );
    let stack = resp.stack.unwrap();
    assert!(stack.contains("state S"), "{stack}");
    assert!(
        stack.contains("pipe_read") || stack.contains("stack unreadable"),
        "{stack}"
    );
    // The executor goes on.
    let next = exec.handle(&request(8, "daxdiff_sleep(0x1)\n", 1000));
    assert_eq!(next.status, Status::Completed);
}

#[test]
fn serve_answers_every_line_in_order() {
    let d = Dirs::new("serve");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    let input = format!(
        "{}\n\nnot json\n{}\n",
        serde_json::to_string(&request(1, "daxdiff_sleep(0x1)\n", 1000)).unwrap(),
        serde_json::to_string(&request(2, "r0 = getpid()\n", 1000)).unwrap()
    );
    let mut out = Vec::new();
    serve(&mut exec, BufReader::new(input.as_bytes()), &mut out).unwrap();
    let lines: Vec<Response> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[0].id, lines[0].status), (1, Status::Completed));
    assert_eq!(lines[1].status, Status::Error);
    assert_eq!((lines[2].id, lines[2].status), (2, Status::Completed));
    assert!(lines[2].calls[0].ret > 1);
}

#[test]
fn written_shared_mappings_are_checked_against_the_file_and_the_exit_is_a_step() {
    use daxdiff_prog::wire::{DataCheck, StepResult};
    let d = Dirs::new("integrity");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    let resp = exec.handle(&request(
        1,
        "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r0, 0x2000)\n\
         r1 = mmap(0x0, 0x2000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
         pwrite64(r0, &buf[0x1000], 0x1000, 0x1000)\n\
         r2 = mmap(0x0, 0x1000, PROT_READ|PROT_WRITE, MAP_PRIVATE, r0, 0x0)\n",
        5000,
    ));
    assert_eq!(resp.status, Status::Completed, "{:?}", resp.detail);
    // Only the shared mapping: a private one is a copy, not the file.
    assert_eq!(resp.integrity.len(), 1, "{:?}", resp.integrity);
    let c = &resp.integrity[0];
    assert_eq!((c.call, c.target.as_str(), c.bytes), (2, "ext4", 0x2000));
    assert_eq!(c.at_end, Some(DataCheck::Same));
    assert_eq!(c.after_teardown, Some(DataCheck::Same));
    assert_eq!(resp.teardown.len(), 1);
    assert_eq!(resp.teardown[0].step, "exit");
    assert_eq!(resp.teardown[0].result, StepResult::Ok);
    // No probe, no KCOV on the host: absent, not zero.
    assert_eq!(resp.refcounts, None);
    // A read-only program on a mapping checks nothing.
    let ro = exec.handle(&request(
        2,
        "r0 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r0, 0x1000)\n\
         r1 = mmap(0x0, 0x1000, PROT_READ, MAP_SHARED, r0, 0x0)\n",
        5000,
    ));
    assert!(ro.integrity.is_empty(), "{:?}", ro.integrity);
}

#[test]
fn a_request_from_another_protocol_is_refused_with_the_fix() {
    let d = Dirs::new("proto");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    let mut req = request(1, "daxdiff_sleep(0x1)\n", 1000);
    req.protocol = 1;
    let resp = exec.handle(&req);
    assert_eq!(resp.status, Status::Error);
    assert!(resp.detail.unwrap().contains("ci/build.sh"));
}

#[test]
fn a_mapping_is_checked_before_the_program_unmaps_it() {
    use daxdiff_prog::wire::DataCheck;
    let d = Dirs::new("unmap");
    let _turn = super::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut exec = Executor::new(d.env.clone());
    let resp = exec.handle(&request(
        1,
        "r0 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         ftruncate(r0, 0x2000)\n\
         r1 = mmap(0x0, 0x2000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)\n\
         r2 = daxdiff_fork_touch(&r1+0x0, 0x2000, DAXDIFF_TOUCH_WRITE)\n\
         daxdiff_wait(r2)\n\
         munmap(&r1+0x0, 0x2000)\n\
         close(r0)\n",
        5000,
    ));
    assert_eq!(resp.status, Status::Completed, "{:?}", resp.detail);
    assert_eq!(resp.integrity.len(), 1, "{:?}", resp.integrity);
    assert_eq!(resp.integrity[0].call, 2);
    assert_eq!(resp.integrity[0].at_end, Some(DataCheck::Same));
    assert_eq!(resp.integrity[0].after_teardown, Some(DataCheck::Same));
}

#[test]
fn io_uring_submissions_stay_in_flight_until_waited_for() {
    let r = run_inline(
        "uring-submit",
        "r0 = daxdiff_uring_setup(0x8)\n\
         r1 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r1, &buf[0x2000], 0x2000, 0x0)\n\
         daxdiff_uring_submit$buf(r0, IORING_OP_READ, r1, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_uring_submit$iov(r0, IORING_OP_READV, r1, [{&buf[0x800], 0x800}], 0x1, 0x1000)\n\
         daxdiff_uring_rw$buf(r0, IORING_OP_READ, r1, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_uring_wait(r0)\n\
         daxdiff_uring_wait(r0)\n\
         daxdiff_uring_submit$buf(r0, IORING_OP_READ, 0x3e7, &buf[0x10], 0x10, 0x0)\n\
         daxdiff_uring_wait(r0)\n\
         daxdiff_uring_wait(0xffffffffffffffff)\n",
    );
    if r[0].errno.is_some() {
        eprintln!(
            "io_uring unavailable on this host ({:?}): skipping",
            r[0].errno_name
        );
        return;
    }
    // A submission says only that the kernel took it: no byte count, no checksum.
    for i in [3, 4] {
        assert_eq!((r[i].ret, r[i].checksum), (0, None), "{:?}", r[i]);
    }
    assert_eq!(ok(&r[5]), 0x1000);
    assert_eq!(ok(&r[6]), 2, "both submissions waited for");
    assert_eq!(ok(&r[7]), 0, "nothing left");
    // A request the kernel takes and fails (a bad fd) is still one to wait for.
    assert_eq!(ok(&r[8]), 0);
    assert_eq!(ok(&r[9]), 1);
    assert_eq!(r[10].errno_name.as_deref(), Some("EBADF"));
}

#[test]
fn aio_submissions_stay_in_flight_until_waited_for() {
    let r = run_inline(
        "aio-submit",
        "r0 = daxdiff_aio_setup(0x4)\n\
         r1 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\n\
         pwrite64(r1, &buf[0x2000], 0x2000, 0x0)\n\
         daxdiff_aio_submit$buf(r0, IOCB_CMD_PREAD, r1, &buf[0x1000], 0x1000, 0x0)\n\
         daxdiff_aio_submit$iov(r0, IOCB_CMD_PREADV, r1, [{&buf[0x800], 0x800}], 0x1, 0x1000)\n\
         daxdiff_aio_wait(r0)\n\
         daxdiff_aio_wait(r0)\n\
         io_destroy(r0)\n\
         daxdiff_aio_wait(0x0)\n",
    );
    if r[0].errno.is_some() {
        eprintln!(
            "AIO unavailable on this host ({:?}): skipping",
            r[0].errno_name
        );
        return;
    }
    // The context id is the resource's value, never the result.
    assert_eq!((r[0].ret, r[0].checksum), (0, None));
    for i in [3, 4] {
        assert_eq!((r[i].ret, r[i].checksum), (0, None), "{:?}", r[i]);
    }
    assert_eq!(ok(&r[5]), 2, "both submissions waited for");
    assert_eq!(ok(&r[6]), 0, "nothing left");
    assert_eq!(ok(&r[7]), 0);
    assert_eq!(r[8].errno_name.as_deref(), Some("EINVAL"));
}
