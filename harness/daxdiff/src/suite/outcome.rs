//! What one run of one test amounts to: pass, fail, skip (with the test's own reason),
//! vacuous (a pass that tested nothing), timing (a failed timing check, which emulation
//! makes slow) or timeout, read from its exit status and output.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::TestSpec;

/// meson's (and ndctl's) exit status for "skipped".
pub const SKIP_STATUS: i32 = 77;

/// Lines with which ndctl's tests report a timing check failing.
pub const TIMING_MARKERS: &[&str] = &["took too long"];

/// Lines with which ndctl's tests explain a skip, strongest first.
const SKIP_MARKERS: &[&str] = &[
    "skipping",
    "lacks",
    "Unable to find",
    "failed to find",
    "Module ",
    "not found",
    "requires:",
    "explicit skip",
    "missing",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail {
        reason: String,
    },
    Skip {
        reason: String,
    },
    Vacuous {
        reason: String,
    },
    Timing {
        reason: String,
    },
    Timeout {
        #[serde(with = "secs")]
        after: Duration,
    },
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail { .. } => "fail",
            Outcome::Skip { .. } => "skip",
            Outcome::Vacuous { .. } => "vacuous",
            Outcome::Timing { .. } => "timing",
            Outcome::Timeout { .. } => "timeout",
        }
    }

    /// Worth a second run to tell a flaky test from a failing one.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Fail { .. } | Outcome::Timing { .. } | Outcome::Timeout { .. }
        )
    }

    /// The test exercised the kernel (passed or failed), rather than skipping or passing
    /// without testing anything.
    pub fn really_ran(&self) -> bool {
        !matches!(self, Outcome::Skip { .. } | Outcome::Vacuous { .. })
    }

    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Pass => None,
            Outcome::Fail { reason }
            | Outcome::Skip { reason }
            | Outcome::Vacuous { reason }
            | Outcome::Timing { reason } => Some(reason.clone()),
            Outcome::Timeout { after } => Some(format!("no result after {}s", after.as_secs())),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Durations as seconds in reports.
pub mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

/// Lines the test itself printed: bash's `-x` trace lines (`+ cmd`) and the libraries'
/// debug log (the test programs run libndctl at LOG_DEBUG, which reports every sysfs
/// attribute it could not read) left out.
fn own_lines(log: &str) -> impl DoubleEndedIterator<Item = &str> {
    log.lines().map(str::trim_end).filter(|l| {
        !l.trim().is_empty()
            && !l.starts_with('+')
            && !["libndctl: ", "libdaxctl: ", "libcxl: "]
                .iter()
                .any(|p| l.starts_with(p))
    })
}

/// The line that best says why the test skipped.
pub fn skip_reason(log: &str) -> String {
    for m in SKIP_MARKERS {
        if let Some(l) = own_lines(log).rev().find(|l| l.contains(m)) {
            return l.trim().to_string();
        }
    }
    own_lines(log)
        .next_back()
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "exit 77 without a message".into())
}

/// The line that best says why the test failed: the first "failed at line N" the script's
/// error trap printed (cleanup handlers print more, often without a number), else the last
/// line that speaks of a failure or an error, else the last line.
pub fn fail_reason(log: &str, status: i32) -> String {
    let numbered = |l: &&str| {
        ["failed at line ", "Error at line "].iter().any(|m| {
            l.split_once(m)
                .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
    };
    let line = own_lines(log)
        .find(numbered)
        .or_else(|| {
            own_lines(log).rev().find(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("fail") || l.contains("error")
            })
        })
        .or_else(|| own_lines(log).next_back());
    match line {
        Some(l) => format!("exit {status}: {}", l.trim()),
        None => format!("exit {status}"),
    }
}

/// Classifies one finished run (the host's deadline is handled by the caller: a test cut off
/// there is a [`Outcome::Timeout`]).
pub fn classify(spec: &TestSpec, status: i32, log: &str) -> Outcome {
    match status {
        0 => match spec.evidence {
            Some(ev) if !log.contains(ev) => Outcome::Vacuous {
                reason: format!(
                    "exit 0 without `{ev}`: {}",
                    own_lines(log)
                        .rev()
                        .find(|l| l.contains("fail") || l.contains("skip"))
                        .or_else(|| own_lines(log).next_back())
                        .unwrap_or("no output")
                        .trim()
                ),
            },
            _ => Outcome::Pass,
        },
        SKIP_STATUS => Outcome::Skip {
            reason: skip_reason(log),
        },
        _ => match own_lines(log).find(|l| TIMING_MARKERS.iter().any(|m| l.contains(m))) {
            Some(l) => Outcome::Timing {
                reason: format!("exit {status}: {}", l.trim()),
            },
            None => Outcome::Fail {
                reason: fail_reason(log, status),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::spec::select;

    fn spec(name: &str) -> &'static TestSpec {
        select(&[name.to_string()]).unwrap()[0]
    }

    #[test]
    fn revoke_devmem_without_a_namespace_is_vacuous() {
        // What revoke-devmem prints when it finds no e820 namespace: it exits 0.
        let log = "test_devmem: failed to find suitable namespace\n";
        let o = classify(spec("revoke-devmem"), 0, log);
        assert_eq!(o.kind(), "vacuous");
        assert!(
            o.reason()
                .unwrap()
                .contains("failed to find suitable namespace"),
            "{o:?}"
        );
        assert!(!o.really_ran());
        let real = "devmem revoked!\n";
        assert_eq!(classify(spec("revoke-devmem"), 0, real), Outcome::Pass);
    }

    #[test]
    fn skips_carry_the_reason_the_test_printed() {
        let log = "+ modprobe nfit_test\nmodprobe: FATAL: Module nfit_test not found in directory /lib/modules/6.12.0\n++ err 24\ntest/multi-dax.sh: failed at line 24\n";
        let o = classify(spec("multi-dax.sh"), 77, log);
        assert_eq!(
            o,
            Outcome::Skip {
                reason:
                    "modprobe: FATAL: Module nfit_test not found in directory /lib/modules/6.12.0"
                        .into()
            }
        );
        let fio = "+ fio --enghelp\nfio lacks dev-dax engine\n";
        assert_eq!(
            classify(spec("device-dax-fio.sh"), 77, fio)
                .reason()
                .unwrap(),
            "fio lacks dev-dax engine"
        );
        let kver = "kernel 4.9.0: may lack align sub-section hotplug support, skipping...\n";
        assert!(classify(spec("sub-section.sh"), 77, kver)
            .reason()
            .unwrap()
            .contains("sub-section"));
        assert_eq!(
            classify(spec("dm.sh"), 77, "").reason().unwrap(),
            "exit 77 without a message"
        );
    }

    #[test]
    fn device_dax_verify_loop_slowness_is_timing_not_failure() {
        let log = "__test_device_dax: dax1.0: verify loop took too long usecs: 1048576\n";
        let o = classify(spec("device-dax"), 1, log);
        assert_eq!(o.kind(), "timing", "{o:?}");
        assert!(o.is_failure() && o.really_ran());
        let other = "__test_device_dax: failed dax direct-i/o\n";
        assert_eq!(classify(spec("device-dax"), 1, other).kind(), "fail");
        // The library's debug log is not the test's verdict.
        let setup = "libndctl: __sysfs_read_attr: failed to read /sys/devices/platform/e820_pmem/ndbus1/region1/dax1.0/size: No such device or address\n/dev/pmem1: failed data setup\nlibndctl: __sysfs_read_attr: failed to read x: No such device or address\n";
        assert_eq!(
            classify(spec("device-dax"), 250, setup).reason().unwrap(),
            "exit 250: /dev/pmem1: failed data setup"
        );
    }

    #[test]
    fn failures_name_the_line_the_script_reported() {
        let log = "+ mount -o dax /dev/pmem0 test_dax_mnt\nmount: wrong fs type\n++ err 77\ntest/dax-ext4.sh: failed at line 77\n+ umount test_dax_mnt\n";
        let o = classify(spec("dax-ext4.sh"), 1, log);
        assert_eq!(
            o,
            Outcome::Fail {
                reason: "exit 1: test/dax-ext4.sh: failed at line 77".into()
            }
        );
        assert_eq!(
            classify(spec("dax-dev"), 139, "").reason().unwrap(),
            "exit 139"
        );
        // dm.sh's cleanup prints a second, numberless "failed at line": the first counts.
        let dm = "mke2fs 1.47.0 (5-Feb-2023)\nThe file /dev/mapper/test_pmem does not exist and no size was specified.\n++ err 70 cleanup\ntest/dm.sh: failed at line 70\n++ cleanup\ntest/dm.sh: failed at line \nerror destroying namespaces: Device or resource busy\n";
        assert_eq!(
            classify(spec("dm.sh"), 1, dm).reason().unwrap(),
            "exit 1: test/dm.sh: failed at line 70"
        );
        assert_eq!(
            classify(
                spec("dm.sh"),
                1,
                "all good\nsomething went wrong: Error -5\nbye\n"
            )
            .reason()
            .unwrap(),
            "exit 1: something went wrong: Error -5"
        );
    }

    #[test]
    fn passes_without_evidence_rules_are_passes() {
        assert_eq!(
            classify(spec("dax-dev"), 0, "namespace0.0\n"),
            Outcome::Pass
        );
        assert!(Outcome::Pass.really_ran() && !Outcome::Pass.is_failure());
        let t = Outcome::Timeout {
            after: Duration::from_secs(900),
        };
        assert!(t.is_failure() && t.really_ran());
        let j = serde_json::to_value(&t).unwrap();
        assert_eq!(j["outcome"], "timeout");
        assert_eq!(j["after"], 900.0);
    }
}
