//! One owner at a time, across processes: a second `daxdiff fuzz` on a workdir is refused
//! naming the first one's pid, and apt commands on one private root never overlap.
//! Plain host processes only (no guest): `cargo test -p daxdiff --release --test locking`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use daxdiff::lock::Lock;

#[test]
fn a_second_fuzz_campaign_on_a_workdir_is_refused_naming_the_first() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("work");
    fs::create_dir_all(&work).unwrap();
    // This test process plays the running campaign.
    let _first = Lock::try_take(&work.join(".lock"), "workdir").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daxdiff"))
        .args(["fuzz", "--no-seeds", "--workdir"])
        .arg(&work)
        .env("DAXDIFF_CACHE", t.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("workdir {} is in use", work.display()))
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(
        !work.join("stats.json").exists(),
        "the refused run wrote into the workdir"
    );
    // `show` only reads: it needs no lock.
    fs::write(
        work.join("stats.json"),
        r#"{"kernel_a":"a","kernel_b":"b","execs":100,"reruns":0,"corpus":0,"divergences":0,
            "crashes":0,"unstable":0,"suppressed":0,"vm_restarts_a":0,"vm_restarts_b":0,
            "elapsed_secs":1.0,"sessions":1}"#,
    )
    .unwrap();
    let show = Command::new(env!("CARGO_BIN_EXE_daxdiff"))
        .arg("show")
        .arg(&work)
        .env("DAXDIFF_CACHE", t.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("100"),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
}

#[test]
fn apt_commands_on_one_private_root_do_not_overlap() {
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = t.path().join("log");
    let fake = bin.join("apt-get");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho start >> {0}\nsleep 0.5\necho end >> {0}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    // The only test of this binary that runs apt: the fake one comes first on its PATH.
    std::env::set_var(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    let root = t.path().join("apt");
    let both: Vec<_> = (0..2)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                daxdiff::images::apt::Apt::open(&root, daxdiff::images::apt::Suites::Kernels)
                    .unwrap()
                    .update(true)
                    .unwrap()
            })
        })
        .collect();
    for t in both {
        t.join().unwrap();
    }
    assert_eq!(
        fs::read_to_string(&log)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["start", "end", "start", "end"]
    );
}
