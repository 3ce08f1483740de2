//! A guest restored from a snapshot is as good as a booted one: on debian-6.12 and
//! debian-7.3 (`DAXDIFF_SNAPSHOT_KERNELS=` to choose), a booted guest is saved, a second guest
//! is restored from it, and the two must show the same bring-up report, DAX mounts,
//! namespaces and device-dax devices, reference-count baseline, and the same outcome for a
//! seed program run through the executor protocol; then a third guest is restored after the
//! second ran a program, and starts from the saved state, not the second's. Boots real
//! kernels: `cargo test --release -p daxdiff --test snapshot -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use daxdiff::diff::{compare, normalize, Verdict};
use daxdiff::exec::{load_program, Runner};
use daxdiff::setup::{prepare, Env};
use daxdiff::vm::{MachineProfile, Vm};

const T: Duration = Duration::from_secs(120);

fn kernels() -> Vec<String> {
    std::env::var("DAXDIFF_SNAPSHOT_KERNELS")
        .unwrap_or_else(|_| "debian-6.12,debian-7.3".into())
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a user would compare between two guests that should be in the same state.
fn state(vm: &mut Vm) -> Vec<(String, String)> {
    [
        ("bring-up report", "cat /run/daxdiff/bringup.json"),
        ("DAX mounts", "grep -E ' /mnt/' /proc/mounts"),
        ("namespaces", "ndctl list -N"),
        ("device-dax", "daxctl list"),
        (
            "files on the DAX mounts",
            "ls -lan --full-time /mnt/ext4 /mnt/xfs",
        ),
    ]
    .into_iter()
    .map(|(what, cmd)| {
        let o = vm.run(cmd, T).unwrap_or_else(|e| panic!("{cmd}: {e:#}"));
        assert_eq!(o.status, 0, "{cmd}: {}", o.stderr_str());
        (what.to_string(), o.stdout_str().to_string())
    })
    .collect()
}

fn run_seed(vm: &Vm, name: &str) -> daxdiff::diff::Outcome {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpora");
    let prog = load_program(&corpus.join(name)).unwrap();
    let mut runner = Runner::start(vm).unwrap_or_else(|e| panic!("{e:#}"));
    let from = vm.console.len();
    let resp = runner
        .run_with(vm, &prog.to_text(), Duration::from_secs(60), true)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let console: Vec<String> = vm.console.since(from).into_iter().map(|l| l.text).collect();
    normalize(&resp, &console)
}

#[test]
#[ignore = "boots a guest per kernel and restores two from it (about 2 minutes a kernel under TCG)"]
fn a_restored_guest_is_in_the_booted_guests_state_and_runs_programs_alike() {
    let env = Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    };
    for kernel in kernels() {
        let p = prepare(&env, &kernel).unwrap_or_else(|e| panic!("{e:#}"));
        let mut booted = p
            .boot(MachineProfile::default(), None)
            .unwrap_or_else(|e| panic!("{kernel}: {e:#}"));
        let snap = booted
            .save_snapshot()
            .unwrap_or_else(|e| panic!("{kernel}: save: {e:#}"));
        eprintln!(
            "{kernel}: booted in {:.1}s, saved in {:.2}s ({} MiB)",
            booted.times.ready.as_secs_f64(),
            snap.saved_in.as_secs_f64(),
            snap.state_bytes >> 20
        );
        let (mut restored, t) =
            Vm::restore(&snap).unwrap_or_else(|e| panic!("{kernel}: restore: {e:#}"));
        eprintln!(
            "{kernel}: restored in {:.2}s (copy {:.2}s, load {:.2}s, ssh {:.2}s)",
            t.ready.as_secs_f64(),
            t.copy.as_secs_f64(),
            t.load.as_secs_f64(),
            t.ssh.as_secs_f64()
        );
        assert_ne!(restored.files.ssh_port, booted.files.ssh_port);
        assert_ne!(restored.run_dir, booted.run_dir);

        let (a, b) = (state(&mut booted), state(&mut restored));
        for ((what, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(
                x, y,
                "{kernel}: {what} differs between the booted and the restored guest"
            );
        }
        if daxdiff::refcounts::probe_status(&booted).as_deref() == Some("probe-loaded") {
            let ra = daxdiff::refcounts::read(&mut booted).unwrap();
            let rb = daxdiff::refcounts::read(&mut restored).unwrap();
            assert!(
                daxdiff::refcounts::changes(&ra, &rb).is_empty(),
                "{kernel}: reference counts differ:\n{}\n{}",
                daxdiff::refcounts::format_reading(&ra),
                daxdiff::refcounts::format_reading(&rb)
            );
        } else {
            panic!(
                "{kernel}: no reference-count probe in the guest: the baseline cannot be compared"
            );
        }

        // The executor protocol, a program and its teardown: the same outcome on both.
        let seed = "vmsplice_dax_mapping.prog";
        let (oa, ob) = (run_seed(&booted, seed), run_seed(&restored, seed));
        assert_eq!(oa.status, daxdiff_prog::wire::Status::Completed, "{oa:?}");
        assert!(
            matches!(compare(&oa, &ob), Verdict::Same),
            "{kernel}: {seed} differs between the booted and the restored guest:\n{oa:?}\n{ob:?}"
        );

        // The second guest wrote files; a third restore starts from the saved state.
        restored
            .run("echo written > /mnt/ext4/after-the-save && sync", T)
            .unwrap();
        restored.shutdown().unwrap();
        let (mut third, _) = Vm::restore(&snap).unwrap_or_else(|e| panic!("{e:#}"));
        let o = third.run("test ! -e /mnt/ext4/after-the-save", T).unwrap();
        assert_eq!(
            o.status, 0,
            "{kernel}: a restored guest saw what an earlier one wrote"
        );
        third.shutdown().unwrap();
        booted.shutdown().unwrap();
        // The saved state's directory goes with the snapshot.
        let dir = snap.dir().to_path_buf();
        drop(snap);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
