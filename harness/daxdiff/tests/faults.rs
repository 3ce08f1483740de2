//! Faults a farm meets, injected into real guests and a real controller: an executor that
//! dies in the middle of its answer, a guest that freezes right after bring-up, a campaign
//! stopped by SIGTERM and killed by SIGKILL. Each must end in bounded time with a clear
//! error, leave no QEMU, key or NVDIMM copy behind, and lose nothing a resumed run needs.
//! Boots real guests: `cargo test -p daxdiff --release --test faults -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daxdiff::exec::{CutResponse, Runner};
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;

fn env() -> Env {
    Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    }
}

const TRUE: &str = "r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT, 0x1b6)\nclose(r0)\n";

#[test]
#[ignore = "boots debian-6.12 under QEMU; run by ci/test.sh"]
fn an_executor_that_dies_is_an_error_in_seconds_and_a_frozen_guest_in_bounded_time() {
    let p = prepare(&env(), "debian-6.12").expect("kernel and guest image");
    let mut vm = p.boot(MachineProfile::default(), None).expect("boot");

    // The real executor runs a program: the protocol works before we break it.
    let mut runner = Runner::start(&vm).expect("start the executor");
    let r = runner
        .run_text(&vm, TRUE, Duration::from_secs(20))
        .expect("a program runs");
    assert_eq!(r.calls.len(), 2, "{r:?}");
    drop(runner);

    // The executor killed in the middle of a response line: it sends half a line and dies.
    let out = vm
        .run(
            "mv /usr/bin/daxdiff-exec /usr/bin/daxdiff-exec.real && \
             printf '#!/bin/sh\\nread req\\nprintf %s \"{\\\\\"id\\\\\":1,\\\\\"calls\\\\\":[\"\\nkill -9 $$\\n' > /usr/bin/daxdiff-exec && \
             chmod 755 /usr/bin/daxdiff-exec && cat /usr/bin/daxdiff-exec",
            Duration::from_secs(20),
        )
        .expect("replace the executor");
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    let mut runner = Runner::start(&vm).expect("start the dying executor");
    let started = Instant::now();
    let e = runner
        .run_text(&vm, TRUE, Duration::from_secs(20))
        .expect_err("half a response is an error");
    assert!(
        e.downcast_ref::<CutResponse>().is_some(),
        "not a cut response: {e:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    drop(runner);

    // The executor killed (SIGKILL from outside) before it answers: no answer at all.
    vm.run(
        "mv /usr/bin/daxdiff-exec.real /usr/bin/daxdiff-exec",
        Duration::from_secs(20),
    )
    .unwrap();
    let mut runner = Runner::start(&vm).expect("start the real executor again");
    let out = vm
        .run(
            "sleep 1; kill -9 $(pidof daxdiff-exec); sleep 1",
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    let started = Instant::now();
    let e = runner
        .run_text(&vm, TRUE, Duration::from_secs(20))
        .expect_err("a killed executor is an error");
    let msg = format!("{e:#}");
    assert!(msg.contains("executor exited"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(runner);

    // The guest frozen right after bring-up (QMP stop): starting the executor must give up
    // within its bound instead of waiting for ever.
    vm.pause().expect("QMP stop");
    let started = Instant::now();
    let e = Runner::start(&vm)
        .err()
        .expect("a frozen guest cannot start the executor");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "took {took:?}: {e:#}");
    assert!(format!("{e:#}").contains("daxdiff-exec run"), "{e:#}");
    eprintln!("frozen guest: Runner::start gave up after {took:?}: {e:#}");
    vm.resume().unwrap();
    vm.shutdown().unwrap();
}

fn daxdiff_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_daxdiff"))
}

/// Processes whose command line mentions `needle` (QEMUs started under our TMPDIR).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() {
            v.push(pid);
        }
    }
    v
}

fn run_dirs(tmp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("daxdiff-vm-"))
        })
        .collect();
    v.sort();
    v
}

/// The guests' own run directories (each side's saved snapshot aside).
fn guest_dirs(tmp: &Path) -> Vec<PathBuf> {
    run_dirs(tmp)
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(SNAPSHOT))
        })
        .collect()
}

const SNAPSHOT: &str = daxdiff::vm::snapshot::PREFIX;

/// `daxdiff fuzz` on a self pair into `work`, its guests under `tmp`, for `execs` pairs.
fn campaign(work: &Path, tmp: &Path, execs: u64) -> Command {
    let mut c = Command::new(daxdiff_bin());
    c.args([
        "fuzz",
        "--a",
        "debian-6.12",
        "--b",
        "debian-6.12",
        "--no-seeds",
    ])
    .args([
        "--seed",
        "5",
        "--budget",
        "20m",
        "--execs",
        &execs.to_string(),
    ])
    .arg("--workdir")
    .arg(work)
    .env("TMPDIR", tmp);
    c
}

/// Starts a campaign whose guests live under `tmp`, and waits until both guests are up
/// and it has run programs for a while.
fn start_campaign(work: &Path, tmp: &Path, execs: u64) -> std::process::Child {
    let child = campaign(work, tmp, execs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let up = run_dirs(tmp)
            .iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("console.log"))
                    .unwrap_or_default()
                    .contains("daxdiff-init: bringup-done")
            })
            .count();
        if up >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign's guests did not come up"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Programs are running now.
    std::thread::sleep(Duration::from_secs(20));
    child
}

fn wait_none_mentioning(needle: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Findings on disk, by kind (what `daxdiff show` lists).
fn findings(work: &Path) -> Vec<usize> {
    ["divergences", "crashes", "unstable"]
        .iter()
        .map(|d| std::fs::read_dir(work.join(d)).map_or(0, |r| r.count()))
        .collect()
}

/// Files of a guest's run directory that must not outlive it.
fn secrets_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("id_ed25519") || n.starts_with("nvdimm"))
                .collect()
        })
        .unwrap_or_default()
}

fn execs(work: &Path) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("stats.json")).unwrap()).unwrap();
    stats["execs"].as_u64().unwrap()
}

#[test]
#[ignore = "boots two debian-6.12 guests under QEMU, three times; run by ci/test.sh"]
fn a_campaign_stopped_or_killed_leaves_no_guest_key_or_nvdimm_copy_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let needle = tmp.path().to_string_lossy().to_string();

    // SIGTERM: the handler kills both QEMUs and removes their run directories.
    let mut child = start_campaign(work.path(), tmp.path(), 1000);
    assert_eq!(guest_dirs(tmp.path()).len(), 2);
    // Each side saved its first guest, to restore replacements from.
    assert_eq!(run_dirs(tmp.path()).len(), 4, "{:?}", run_dirs(tmp.path()));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        wait_none_mentioning(&needle),
        Vec::<u32>::new(),
        "QEMU left after SIGTERM"
    );
    assert_eq!(
        run_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "run directories left after SIGTERM"
    );

    // A second campaign on the same workdir while one runs is refused, naming the holder.
    let mut child = start_campaign(work.path(), tmp.path(), 1000);
    let second = campaign(work.path(), tmp.path(), 1).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another daxdiff process") && err.contains(&child.id().to_string()),
        "{err}"
    );

    // SIGKILL: no handler runs. QEMU dies with its parent; the run directories stay until
    // the next daxdiff sweeps them.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        wait_none_mentioning(&needle),
        Vec::<u32>::new(),
        "QEMU left after SIGKILL"
    );
    let left = run_dirs(tmp.path());
    assert_eq!(
        (guest_dirs(tmp.path()).len(), left.len()),
        (2, 4),
        "a killed controller leaves its two run directories and two snapshots: {left:?}"
    );
    for d in &left {
        eprintln!("after SIGKILL: {} holds {:?}", d.display(), secrets_in(d));
    }
    let before = execs(work.path());
    let found_before = findings(work.path());
    eprintln!(
        "after SIGKILL: execs {before}, findings (divergences, crashes, unstable) {found_before:?}"
    );

    // Resumed: the stale directories are swept at the first boot, the counters go on, and
    // a run that ends normally leaves nothing.
    // A session's budget: three more program pairs.
    let out = campaign(work.path(), tmp.path(), 3).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
    for d in &left {
        assert!(
            err.contains(&format!("removed {}", d.display())),
            "the sweep did not say it removed {}: {err}",
            d.display()
        );
    }
    assert_eq!(
        run_dirs(tmp.path()),
        Vec::<PathBuf>::new(),
        "run directories left after a normal end"
    );
    assert!(execs(work.path()) >= before + 3, "resumed from {before}");
    let found_after = findings(work.path());
    eprintln!(
        "resumed: execs {}, findings {found_after:?}, run directories left {}",
        execs(work.path()),
        run_dirs(tmp.path()).len()
    );
    for (b, a) in found_before.iter().zip(&found_after) {
        assert!(
            a >= b,
            "a finding was lost: {found_before:?} -> {found_after:?}"
        );
    }
    assert_eq!(wait_none_mentioning(&needle), Vec::<u32>::new());
}
