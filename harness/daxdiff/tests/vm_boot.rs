//! Boots real Debian kernels under QEMU and checks, over SSH, what a user relies on: pmem and
//! dax devices exist, ext4 and xfs are mounted with DAX really on, devdax is present, and no
//! QEMU process outlives the controller. These need QEMU and network access to the Debian
//! mirror; `ci/test.sh` runs them (`cargo test -p daxdiff --test vm_boot -- --ignored`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daxdiff::setup::{prepare, Env};
use daxdiff::vm::MachineProfile;

fn env() -> Env {
    Env {
        cache: daxdiff::cache::default_dir(),
        catalogue: None,
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn check_dax_guest(kernel: &str) {
    let p = prepare(&env(), kernel).expect("kernel and guest image");
    let mut vm = p
        .boot(MachineProfile::default(), None)
        .unwrap_or_else(|e| panic!("{kernel} did not boot: {e:#}"));
    let pid = vm.pid().unwrap();
    eprintln!("{kernel}: ready in {:.1}s", vm.times.ready.as_secs_f64());

    // The kernel we asked for is the kernel that runs.
    let uname = vm.run("uname -r", Duration::from_secs(30)).unwrap();
    assert_eq!(uname.stdout_str().trim(), p.kernel.release);

    // pmem block devices and the devdax character device exist.
    let devs = vm
        .run("ls /dev", Duration::from_secs(30))
        .unwrap()
        .stdout_str();
    let pmem = devs
        .split_whitespace()
        .filter(|d| d.starts_with("pmem"))
        .count();
    let dax = devs
        .split_whitespace()
        .filter(|d| d.starts_with("dax"))
        .count();
    assert!(
        pmem >= 2,
        "{kernel}: expected two pmem devices, /dev has: {devs}"
    );
    assert!(
        dax >= 1,
        "{kernel}: expected a devdax device, /dev has: {devs}"
    );

    // ext4 and xfs are mounted with DAX, and STATX_ATTR_DAX is set on a new file in each.
    let mounts = vm
        .run("cat /proc/mounts", Duration::from_secs(30))
        .unwrap()
        .stdout_str();
    let line = |mp: &str| {
        mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(mp))
            .map(str::to_string)
    };
    let ext4 =
        line("/mnt/ext4").unwrap_or_else(|| panic!("{kernel}: /mnt/ext4 not mounted:\n{mounts}"));
    let xfs =
        line("/mnt/xfs").unwrap_or_else(|| panic!("{kernel}: /mnt/xfs not mounted:\n{mounts}"));
    assert!(ext4.contains(" ext4 ") && ext4.contains("dax"), "{ext4}");
    assert!(xfs.contains(" xfs ") && xfs.contains("dax"), "{xfs}");
    let status = vm
        .run("daxdiff-exec status", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        status.status,
        0,
        "{kernel}: status failed: {}{}",
        status.stdout_str(),
        status.stderr_str()
    );
    let topo: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status prints JSON");
    let fs = topo["fs"].as_array().expect("fs list");
    for role in ["ext4", "xfs"] {
        let f = fs
            .iter()
            .find(|f| f["role"] == role)
            .unwrap_or_else(|| panic!("{kernel}: no {role} in {topo}"));
        assert_eq!(
            f["dax"], true,
            "{kernel}: STATX_ATTR_DAX off on {role}: {f}"
        );
    }
    let chardev = topo["devdax"][0]["chardev"]
        .as_str()
        .expect("a devdax device")
        .to_string();
    let test_c = vm
        .run(&format!("test -c {chardev}"), Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        test_c.status, 0,
        "{kernel}: {chardev} is not a character device"
    );

    // A deadline bounds the whole command, also one that keeps printing (each line would
    // reset a per-read timeout), and the guest still answers afterwards.
    let started = Instant::now();
    let late = vm
        .run(
            "for i in $(seq 12); do echo $i; sleep 1; done",
            Duration::from_secs(3),
        )
        .unwrap_err();
    assert!(
        format!("{late:#}").contains("did not finish within 3s"),
        "{late:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "cut at the deadline, not when the command ended"
    );
    // A command that writes more to stderr than the channel's window (2 MiB) before its
    // stdout: both streams arrive whole, well before the deadline.
    let chatty = vm
        .run(
            "head -c 4194304 /dev/zero >&2; echo done",
            Duration::from_secs(120),
        )
        .expect("a command with 4 MiB of stderr finishes");
    assert_eq!(chatty.stderr.len(), 4 << 20);
    assert_eq!(chatty.stdout_str().trim(), "done");
    let again = vm.run("echo still here", Duration::from_secs(30));
    assert!(
        again.is_ok_and(|o| o.stdout_str().contains("still here")),
        "{kernel}: the guest no longer answers after a cut command"
    );

    vm.shutdown().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !pid_alive(pid),
        "{kernel}: QEMU {pid} still running after shutdown"
    );
}

#[test]
#[ignore = "boots a real kernel under QEMU; run by ci/test.sh"]
fn debian_6_12_boots_with_dax_on_ext4_xfs_and_devdax() {
    check_dax_guest("debian-6.12");
}

#[test]
#[ignore = "boots a real kernel under QEMU; run by ci/test.sh"]
fn debian_7_3_boots_with_dax_on_ext4_xfs_and_devdax() {
    check_dax_guest("debian-7.3");
}

#[test]
#[ignore = "boots a real kernel under QEMU; run by ci/test.sh"]
fn a_kernel_that_cannot_start_init_is_reported_with_the_console_tail() {
    let p = prepare(&env(), "debian-6.12").unwrap();
    let profile = MachineProfile {
        cmdline: vec!["rdinit=/no-such-init".into()],
        ..MachineProfile::default()
    };
    let started = Instant::now();
    let err = match p.boot(profile, None) {
        Ok(_) => panic!("a guest without init booted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("Kernel panic"), "{err}");
    assert!(err.contains("console tail"), "{err}");
    // Found from the console, not by waiting out the boot timeout.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

fn daxdiff_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_daxdiff"))
}

/// Starts `daxdiff vm boot`, waits for it to print the QEMU pid and be ready.
fn start_vm_boot() -> (std::process::Child, u32) {
    let mut child = Command::new(daxdiff_bin())
        .args(["vm", "boot", "--kernel", "debian-6.12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut qemu = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("qemu pid: ") {
            qemu = Some(p.trim().parse::<u32>().unwrap());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    let qemu = qemu.expect("vm boot prints the QEMU pid");
    assert!(pid_alive(qemu));
    (child, qemu)
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
#[ignore = "boots a real kernel under QEMU; run by ci/test.sh"]
fn no_qemu_left_after_ctrl_c_or_a_killed_controller() {
    // Ctrl-C (SIGINT) to the controller.
    let (mut child, qemu) = start_vm_boot();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(wait_gone(qemu), "QEMU {qemu} left behind after Ctrl-C");

    // SIGKILL: no handler runs; the kernel's parent-death signal must take QEMU down.
    let (mut child, qemu) = start_vm_boot();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(qemu),
        "QEMU {qemu} left behind after the controller was killed"
    );
}

#[test]
fn unknown_kernel_and_missing_qemu_are_explained() {
    let out = Command::new(daxdiff_bin())
        .args(["vm", "run", "--kernel", "debian-4.19", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown kernel `debian-4.19`") && err.contains("debian-6.12"),
        "{err}"
    );

    let err = daxdiff::vm::profile::find_qemu_in(None, "").unwrap_err();
    assert!(
        err.contains("apt-get install") && err.contains("qemu-system-x86"),
        "{err}"
    );
}
