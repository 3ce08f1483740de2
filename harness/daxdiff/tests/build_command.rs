//! `bisect --build-cmd`: the user's command and everything it starts go with daxdiff, even
//! when daxdiff is killed outright. Plain host processes only (no guest):
//! `cargo test -p daxdiff --release --test build_command`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daxdiff::bisect::build::CommandKernels;
use daxdiff::bisect::StepKernels;

/// Set in the controller process this test starts (it stands for a running daxdiff).
const CONTROLLER: &str = "DAXDIFF_TEST_BUILD_CONTROLLER";

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A build command that starts a long sleep in the background and waits for it.
fn kernels(dir: &Path) -> (CommandKernels, String) {
    let k = CommandKernels {
        repo: dir.join("repo"),
        command: format!(
            "sleep 600 & echo $! > {0}/grandchild.tmp; mv {0}/grandchild.tmp {0}/grandchild; wait",
            dir.display()
        ),
        dir: dir.join("bisect"),
        status: Box::new(|_| {}),
    };
    let rev = git(&dir.join("repo"), &["rev-parse", "HEAD"]);
    (k, rev)
}

#[test]
fn a_killed_daxdiff_leaves_no_build_running() {
    if let Some(dir) = std::env::var_os(CONTROLLER) {
        let (mut k, rev) = kernels(Path::new(&dir));
        let _ = k.kernel_at(&rev);
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("Makefile"), "all:\n").unwrap();
    git(&repo, &["add", "Makefile"]);
    git(
        &repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "base",
        ],
    );
    let mut controller = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_daxdiff_leaves_no_build_running",
            "--nocapture",
        ])
        .env(CONTROLLER, t.path())
        .spawn()
        .unwrap();
    let pidfile = t.path().join("grandchild");
    wait_for("the build command did not start", || pidfile.exists());
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    controller.kill().unwrap();
    controller.wait().unwrap();
    let t0 = Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(pid);
    if survived {
        // SAFETY: kill(2) on the sleep this test made, so it does not outlive the test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        !survived,
        "the build command's sleep outlived the killed controller"
    );
}
