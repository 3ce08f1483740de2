//! Runs one dax test on one kernel: a fresh guest per attempt (so no test inherits another's
//! namespaces), the test started the way meson starts it, its output, exit status and the
//! kernel reports it provoked kept; a failure is run once more to tell flaky from failing.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::guest::{kernel_has_module, SuiteGuest};
use super::ndctl::GUEST_DIR;
use super::outcome::{classify, secs, Outcome};
use super::spec::{Need, Program, TestName, TestSpec};
use crate::vm::{Ssh, Vm};

/// Where the test's combined output is also kept in the guest, for a test cut off by the
/// deadline.
const GUEST_LOG: &str = "/run/daxdiff/test.log";

/// Boots of one attempt before the run gives up on the kernel.
const BOOT_TRIES: usize = 3;

/// One run of a test in its own guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The test's own run time (boot excluded).
    #[serde(with = "secs")]
    pub duration: Duration,
    #[serde(with = "secs")]
    pub boot: Duration,
    pub status: Option<i32>,
    /// The test's output and the guest console, relative to the report directory.
    pub log: PathBuf,
    pub console: PathBuf,
    /// Titles of the kernel reports (WARNING, BUG, …) printed while the test ran.
    pub kernel_reports: Vec<String>,
    /// Boots of this attempt that failed before the test could start (each retried), why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_failures: Vec<String>,
}

/// A test's result on one kernel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    pub test: TestName,
    pub uses: String,
    /// The last attempt's outcome: a failure's second run decides.
    pub verdict: Outcome,
    /// One attempt failed and the other did not.
    pub flaky: bool,
    pub attempts: Vec<Attempt>,
}

impl TestResult {
    pub fn duration(&self) -> Option<Duration> {
        self.attempts.last().map(|a| a.duration)
    }

    pub fn kernel_reports(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .attempts
            .iter()
            .flat_map(|a| a.kernel_reports.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// What the runner is doing, for progress displays.
pub enum Progress<'a> {
    Attempt {
        kernel: &'a str,
        test: &'a str,
        attempt: usize,
    },
    Done {
        kernel: &'a str,
        result: &'a TestResult,
    },
    /// A resumed run keeps `results` results of this kernel from the report it found.
    Kept { kernel: &'a str, results: usize },
}

/// Runs tests on one prepared kernel, writing logs under `root/<kernel>/<test>/attempt-N`.
pub struct Runner<'a> {
    pub guest: &'a SuiteGuest,
    pub kernel: &'a str,
    /// The report directory (paths in results are relative to it).
    pub root: &'a Path,
    pub timeout: Duration,
    /// Extra runs of a failure (1: run a failing test twice).
    pub reruns: usize,
}

/// meson's test environment (`test/meson.build`), pointing at the build in the guest. The
/// scripts also call `ndctl` by name, hence PATH. The guest runs no udev, so libdevmapper
/// is told to make the `/dev/mapper` nodes itself (`DM_DISABLE_UDEV`, lvm(8)), as dm.sh
/// expects them.
pub fn guest_environment() -> String {
    let build = format!("{GUEST_DIR}/build");
    format!(
        "NDCTL={build}/ndctl/ndctl DAXCTL={build}/daxctl/daxctl CXL={build}/cxl/cxl \
         TEST_PATH={build}/test DATA_PATH={GUEST_DIR}/src/test \
         PATH={build}/ndctl:{build}/daxctl:{build}/cxl:$PATH DM_DISABLE_UDEV=1"
    )
}

/// The shell command that starts `spec` in the guest, in a fresh working directory (the
/// scripts mount and write files relative to it), output also kept in [`GUEST_LOG`].
pub fn guest_command(spec: &TestSpec) -> String {
    let program = match spec.program {
        Program::Script(s) => format!("{GUEST_DIR}/src/test/{s}"),
        Program::Binary(b) => format!("{GUEST_DIR}/build/test/{b}"),
    };
    format!(
        "work=$(mktemp -d /tmp/{name}.XXXXXX) && cd \"$work\" && export {env} && \
         bash -c 'set -o pipefail; {program} 2>&1 | tee {GUEST_LOG}'",
        name = spec.name,
        env = guest_environment(),
    )
}

impl Runner<'_> {
    /// The test's result: pre-skipped when the kernel lacks a module the test needs,
    /// otherwise one attempt, and one more for a failure.
    pub fn run(&self, spec: &TestSpec, progress: &mut dyn FnMut(Progress)) -> Result<TestResult> {
        let modules = self.guest.kernel.modules_dir();
        for need in spec.needs {
            let lacks = match need {
                Need::Module(m) => !kernel_has_module(modules.as_deref(), m),
                Need::Config(o) => self.guest.kernel.config_enabled(o) == Some(false),
            };
            if lacks {
                return Ok(TestResult {
                    test: spec.test_name(),
                    uses: spec.uses.into(),
                    verdict: Outcome::Skip {
                        reason: need.missing(self.kernel),
                    },
                    flaky: false,
                    attempts: vec![],
                });
            }
        }
        let mut attempts = Vec::new();
        for n in 1..=1 + self.reruns {
            progress(Progress::Attempt {
                kernel: self.kernel,
                test: spec.name,
                attempt: n,
            });
            let a = self.attempt(spec, n)?;
            let again = a.outcome.is_failure();
            attempts.push(a);
            if !again {
                break;
            }
        }
        let verdict = attempts.last().expect("one attempt").outcome.clone();
        // Flaky: one run failed and another did not (two different failures are not).
        let flaky = attempts.iter().any(|a| a.outcome.is_failure())
            && attempts.iter().any(|a| !a.outcome.is_failure());
        Ok(TestResult {
            test: spec.test_name(),
            uses: spec.uses.into(),
            verdict,
            flaky,
            attempts,
        })
    }

    fn attempt(&self, spec: &TestSpec, n: usize) -> Result<Attempt> {
        let rel = PathBuf::from(self.kernel)
            .join(spec.name)
            .join(format!("attempt-{n}"));
        let dir = self.root.join(&rel);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let log_rel = rel.join("test.log");
        let console_rel = rel.join("console.log");
        let mut attempt = Attempt {
            outcome: Outcome::Pass,
            duration: Duration::ZERO,
            boot: Duration::ZERO,
            status: None,
            log: log_rel,
            console: console_rel,
            kernel_reports: vec![],
            boot_failures: vec![],
        };
        let mut vm = self.boot(&dir, &mut attempt)?;
        let from = vm.console.len();
        let started = Instant::now();
        let res = vm.run(&guest_command(spec), self.timeout);
        attempt.duration = started.elapsed();
        match res {
            Ok(out) => {
                let log = out.stdout_str() + &out.stderr_str();
                fs::write(dir.join("test.log"), &log)?;
                attempt.status = Some(out.status);
                attempt.outcome = classify(spec, out.status, &log);
            }
            Err(e) => {
                let partial = partial_log(&vm, &dir);
                let died = vm.console.first_fatal(from);
                fs::write(
                    dir.join("test.log"),
                    format!("{partial}\n-- daxdiff: {e:#}\n"),
                )?;
                attempt.outcome = if let Some(l) = died {
                    Outcome::Fail {
                        reason: format!("the kernel died: {}", l.text.trim()),
                    }
                } else if attempt.duration + Duration::from_secs(1) >= self.timeout {
                    Outcome::Timeout {
                        after: self.timeout,
                    }
                } else {
                    Outcome::Fail {
                        reason: format!(
                            "lost the guest: {}",
                            format!("{e:#}").lines().next().unwrap_or("")
                        ),
                    }
                };
            }
        }
        // Read the reports once QEMU is gone: the console thread has then seen every line.
        let console = vm.console.clone();
        let _ = vm.shutdown();
        let _ = console.wait_for(from, Instant::now() + Duration::from_secs(2), |_| false);
        let text: String = console
            .since(from)
            .into_iter()
            .map(|l| l.text + "\n")
            .collect();
        attempt.kernel_reports = reports_in(&text);
        clean_run_dir(&dir);
        Ok(attempt)
    }
}

impl Runner<'_> {
    /// A fresh guest in `dir`. A boot that fails (under TCG a kernel occasionally dies early,
    /// e.g. patching code while another CPU runs it) is retried: it says nothing about the
    /// test; the failures are kept in the attempt and `boot-failure-N.log`.
    fn boot(&self, dir: &Path, attempt: &mut Attempt) -> Result<Vm> {
        loop {
            let booted = Instant::now();
            match self.guest.boot(dir) {
                Ok(vm) => {
                    attempt.boot = booted.elapsed();
                    return Ok(vm);
                }
                Err(e) => {
                    let console = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
                    let n = attempt.boot_failures.len() + 1;
                    fs::write(
                        dir.join(format!("boot-failure-{n}.log")),
                        format!("{e:#}\n\n{console}"),
                    )?;
                    clean_run_dir(dir);
                    let why = reports_in(&console)
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| format!("{e:#}").lines().next().unwrap_or("").into());
                    attempt.boot_failures.push(why);
                    if n >= BOOT_TRIES {
                        return Err(e).with_context(|| {
                            format!(
                                "the suite guest did not boot on {} in {n} tries ({})",
                                self.kernel,
                                dir.display()
                            )
                        });
                    }
                }
            }
        }
    }
}

fn reports_in(console: &str) -> Vec<String> {
    daxdiff_observe::parse(console)
        .into_iter()
        .map(|r| r.title)
        .collect()
}

/// What a test cut off by the deadline had printed, over a second SSH connection.
fn partial_log(vm: &Vm, dir: &Path) -> String {
    let key = dir.join("id_ed25519");
    let host_key = vm.host_key.as_deref();
    match Ssh::connect(vm.files.ssh_port, &key, host_key, Duration::from_secs(10)) {
        Ok(s) => match s.exec(&format!("cat {GUEST_LOG}"), None, Duration::from_secs(30)) {
            Ok(o) => o.stdout_str(),
            Err(e) => format!("(the test's output could not be read: {e:#})"),
        },
        Err(e) => format!("(the guest no longer answers: {e:#})"),
    }
}

/// Drops what a boot leaves that a report does not need: the NVDIMM and scratch disk
/// backing files (sparse, but gigabytes apparent), the key pair and the QMP socket.
fn clean_run_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("nvdimm")
                || name.starts_with("id_ed25519")
                || name == "qmp.sock"
                || name == "scratch.img"
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::spec::select;

    #[test]
    fn scripts_and_binaries_start_with_meson_environment() {
        let s = guest_command(select(&["dax-ext4".into()]).unwrap()[0]);
        assert!(s.contains("bash -c 'set -o pipefail; /opt/ndctl/src/test/dax-ext4.sh 2>&1 | tee /run/daxdiff/test.log'"), "{s}");
        for var in [
            "NDCTL=/opt/ndctl/build/ndctl/ndctl",
            "DAXCTL=/opt/ndctl/build/daxctl/daxctl",
            "TEST_PATH=/opt/ndctl/build/test",
            "DATA_PATH=/opt/ndctl/src/test",
            "PATH=/opt/ndctl/build/ndctl:",
            "DM_DISABLE_UDEV=1",
        ] {
            assert!(s.contains(var), "{var} in {s}");
        }
        let b = guest_command(select(&["revoke-devmem".into()]).unwrap()[0]);
        assert!(
            b.contains("/opt/ndctl/build/test/revoke_devmem 2>&1"),
            "{b}"
        );
        assert!(
            b.contains("mktemp -d /tmp/revoke-devmem."),
            "a fresh working directory"
        );
    }

    #[test]
    fn flakiness_and_reports_from_attempts() {
        let a = |o: Outcome, r: &[&str]| Attempt {
            outcome: o,
            duration: Duration::from_secs(3),
            boot: Duration::from_secs(9),
            status: Some(0),
            log: "l".into(),
            console: "c".into(),
            kernel_reports: r.iter().map(|s| s.to_string()).collect(),
            boot_failures: vec![],
        };
        let r = TestResult {
            test: TestName("device-dax".into()),
            uses: "e820 pmem".into(),
            verdict: Outcome::Pass,
            flaky: true,
            attempts: vec![
                a(Outcome::Timing { reason: "x".into() }, &["WARNING in f"]),
                a(Outcome::Pass, &["WARNING in f", "BUG: g"]),
            ],
        };
        assert_eq!(r.kernel_reports(), ["BUG: g", "WARNING in f"]);
        assert_eq!(r.duration(), Some(Duration::from_secs(3)));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["attempts"][0]["outcome"], "timing");
        assert_eq!(j["verdict"]["outcome"], "pass");
    }
}
