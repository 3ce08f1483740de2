//! The C reproducer's `setup.sh` on a real guest (debian-7.3): on a machine already set up it
//! reuses everything and touches nothing; with unmounted but existing namespaces and no free
//! space it refuses without `DAXDIFF_FORCE=1`; on NVDIMMs with every namespace destroyed it
//! creates the namespaces, file systems and DAX mounts, and `repro.sh` then gives the
//! reproducer the same results as on the guest's own bring-up.
//! Boots one guest: `cargo test -p daxdiff --release --test setup_script -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use daxdiff::repro::creproducer;
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::{MachineProfile, Vm};
use daxdiff_prog::{csource, Target};

const PROG: &str = "map_sync.prog";
const T: Duration = Duration::from_secs(300);

/// Runs `cmd` in the guest; returns (exit status, stdout + stderr).
fn sh(vm: &mut Vm, cmd: &str) -> (i32, String) {
    let o = vm.run(cmd, T).unwrap_or_else(|e| panic!("{cmd}: {e:#}"));
    let text = format!("{}{}", o.stdout_str(), o.stderr_str());
    eprintln!("$ {cmd}\n{text}");
    (o.status, text)
}

/// Each call's name and how it ended (ok, or its errno): addresses and fds differ by set-up.
fn results(stdout: &str) -> Vec<(usize, String, Option<i32>)> {
    csource::parse_output(stdout)
        .into_iter()
        .map(|c| (c.index, c.name, c.errno))
        .collect()
}

#[test]
#[ignore = "boots a debian-7.3 guest (about 2 minutes under TCG)"]
fn setup_sh_recreates_what_bring_up_made_and_the_reproducer_agrees() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    let kernel = prepare(&env, "debian-7.3").unwrap_or_else(|e| panic!("{e:#}"));
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let text = std::fs::read_to_string(corpus.join(PROG)).unwrap();
    let prog = daxdiff_prog::parse(Target::builtin(), &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = creproducer::build(dir.path(), &prog, &["setup.sh test".into()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let setup = std::fs::read_to_string(dir.path().join(creproducer::SETUP)).unwrap();
    assert!(setup.contains(": \"${DAXDIFF_ROLES:=ext4 xfs devdax}\""));

    let mut vm = kernel
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    for (path, bytes) in [
        ("/tmp/repro", std::fs::read(&bin).unwrap()),
        ("/tmp/repro.sh", csource::RUN_SCRIPT.as_bytes().to_vec()),
        ("/tmp/setup.sh", setup.into_bytes()),
    ] {
        let o = vm
            .run_with_input(
                &format!("cat > {path} && chmod 755 {path}"),
                Some(&bytes),
                T,
            )
            .unwrap();
        assert_eq!(o.status, 0, "copy {path}");
    }
    let run_repro = "cd /tmp && sh repro.sh ./repro";
    let namespaces = "ndctl list -N | grep -c '\"dev\"'";

    // 1. Bring-up's set-up: everything is reused, no command is run.
    let (rc, out) = sh(&mut vm, "sh /tmp/setup.sh");
    assert_eq!(rc, 0, "{out}");
    for role in ["ext4: reusing", "xfs: reusing", "devdax: reusing"] {
        assert!(out.contains(role), "{out}");
    }
    assert!(
        !out.contains("+ "),
        "ran commands on a machine already set up:\n{out}"
    );
    let (rc, before) = sh(&mut vm, run_repro);
    assert_eq!(rc, 0, "{before}");
    assert!(before.contains("ext4 /mnt/ext4/daxdiff-repro"), "{before}");
    let want = results(&before);
    assert_eq!(want.len(), prog.calls.len(), "{before}");

    // 2. File systems unmounted, namespaces still there, no free space: it refuses and
    //    destroys nothing.
    let (_, n_before) = sh(&mut vm, namespaces);
    sh(&mut vm, "umount /mnt/ext4 && umount /mnt/xfs");
    let (rc, out) = sh(&mut vm, "sh /tmp/setup.sh");
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("DAXDIFF_FORCE=1"), "{out}");
    assert!(!out.contains("create-namespace"), "{out}");
    let (_, n_after) = sh(&mut vm, namespaces);
    assert_eq!(n_before, n_after);

    // 3. Every namespace bring-up made destroyed: setup.sh makes them again.
    let (rc, out) = sh(
        &mut vm,
        "ndctl disable-namespace all && ndctl destroy-namespace -f all && ls /dev/dax* /dev/pmem* 2>&1; true",
    );
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = sh(&mut vm, "sh /tmp/setup.sh");
    assert_eq!(rc, 0, "{out}");
    assert_eq!(out.matches("+ ndctl create-namespace").count(), 3, "{out}");
    assert!(out.contains("+ mkfs.xfs -f -q -m reflink=0"), "{out}");
    assert!(out.contains("+ mount -t ext4 -o dax "), "{out}");
    assert!(out.contains("+ mount -t xfs -o dax=always "), "{out}");
    assert!(
        out.contains("ext4: /dev/pmem") && out.contains("on /mnt/daxdiff-ext4 (DAX)"),
        "{out}"
    );
    assert!(out.contains("devdax: /dev/dax"), "{out}");

    // 4. The reproducer against setup.sh's set-up: the same results.
    let (rc, after) = sh(&mut vm, run_repro);
    assert_eq!(rc, 0, "{after}");
    assert!(
        after.contains("ext4 /mnt/daxdiff-ext4/daxdiff-repro"),
        "{after}"
    );
    assert_eq!(results(&after), want, "before:\n{before}\nafter:\n{after}");
    let _ = vm.shutdown();
}
