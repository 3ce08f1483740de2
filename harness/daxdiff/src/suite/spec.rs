//! The tests of ndctl's `dax` meson suite: how each starts, what it needs from the machine,
//! and what a pass must show to count as one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A test's name as ndctl's `test/meson.build` gives it (`dax-ext4.sh`, `device-dax`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TestName(pub String);

impl fmt::Display for TestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How meson starts the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// A script from the source tree's `test/` directory, run through its `#!` line.
    Script(&'static str),
    /// An executable built into the build tree's `test/` directory.
    Binary(&'static str),
}

/// What a test needs beyond the suite guest's standard machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A kernel module (or built-in driver) the test needs: `nfit_test` and `cxl_test` come
    /// from the kernel's tools/testing trees, which Debian kernels do not build; `dm_mod`
    /// from device-mapper, which lean built kernels have only with the `suite` fragment.
    Module(&'static str),
    /// A kernel option (without `CONFIG_`): revoke-devmem reads `/dev/mem`, and daxctl onlines
    /// memory through the NUMA node directories in sysfs; lean built kernels have both only
    /// with the `suite` fragment. A kernel whose .config is unknown is taken to have it.
    Config(&'static str),
}

impl Need {
    /// Why a test is skipped on a kernel without it.
    pub fn missing(&self, kernel: &str) -> String {
        match self {
            Need::Module("dm_mod") => format!(
                "kernel {kernel} has no device-mapper (CONFIG_BLK_DEV_DM); a kernel built with \
                 `daxdiff kernel build` has it with --fragment suite"
            ),
            Need::Module(m) => format!(
                "kernel {kernel} has no {m} module (it comes from a kernel build with the \
                 tools/testing test modules)"
            ),
            Need::Config("DEVMEM") => format!(
                "kernel {kernel} has no /dev/mem (CONFIG_DEVMEM); a kernel built with \
                 `daxdiff kernel build` has it with --fragment suite"
            ),
            Need::Config("NUMA") => format!(
                "kernel {kernel} has no /sys/devices/system/node (CONFIG_NUMA), where daxctl \
                 finds the memory blocks it onlines; a kernel built with `daxdiff kernel build` \
                 has it with --fragment suite"
            ),
            Need::Config(o) => format!("kernel {kernel} was built without CONFIG_{o}"),
        }
    }

    /// How `--list` shows it.
    pub fn describe(&self) -> String {
        match self {
            Need::Module(m) => format!("needs module {m}"),
            Need::Config(o) => format!("needs CONFIG_{o}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestSpec {
    pub name: &'static str,
    pub program: Program,
    pub needs: &'static [Need],
    /// Which pmem the test picks: shown in reports, and the reason the machine has both.
    pub uses: &'static str,
    /// A line a real pass prints. Without it a zero exit is vacuous: revoke-devmem turns
    /// "no namespace to test" into a pass.
    pub evidence: Option<&'static str>,
}

impl TestSpec {
    pub fn test_name(&self) -> TestName {
        TestName(self.name.to_string())
    }
}

const E820: &str = "e820 pmem";
const ACPI: &str = "ACPI NVDIMM";

/// The 13 tests of `meson test --suite dax` (ndctl 81), in meson's order.
pub const DAX_SUITE: &[TestSpec] = &[
    TestSpec {
        name: "daxdev-errors.sh",
        program: Program::Script("daxdev-errors.sh"),
        needs: &[Need::Module("nfit_test")],
        uses: "nfit_test",
        evidence: None,
    },
    TestSpec {
        name: "multi-dax.sh",
        program: Program::Script("multi-dax.sh"),
        needs: &[Need::Module("nfit_test")],
        uses: "nfit_test",
        evidence: None,
    },
    TestSpec {
        name: "sub-section.sh",
        program: Program::Script("sub-section.sh"),
        needs: &[],
        uses: ACPI,
        evidence: None,
    },
    TestSpec {
        name: "dax-dev",
        program: Program::Binary("dax-dev"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
    TestSpec {
        name: "dax-ext4.sh",
        program: Program::Script("dax-ext4.sh"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
    TestSpec {
        name: "dax-xfs.sh",
        program: Program::Script("dax-xfs.sh"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
    TestSpec {
        name: "device-dax",
        program: Program::Binary("device-dax"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
    TestSpec {
        name: "revoke-devmem",
        program: Program::Binary("revoke_devmem"),
        needs: &[Need::Config("DEVMEM")],
        uses: E820,
        evidence: Some("devmem revoked!"),
    },
    TestSpec {
        name: "device-dax-fio.sh",
        program: Program::Script("device-dax-fio.sh"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
    TestSpec {
        name: "daxctl-devices.sh",
        program: Program::Script("daxctl-devices.sh"),
        // libdaxctl walks /sys/devices/system/node/nodeN/memoryM for the device's memory
        // blocks; without it: "dax0.0: failed to get number of memory sections".
        needs: &[Need::Config("NUMA")],
        uses: ACPI,
        evidence: None,
    },
    TestSpec {
        name: "daxctl-create.sh",
        program: Program::Script("daxctl-create.sh"),
        needs: &[Need::Module("cxl_test")],
        uses: "cxl_test",
        evidence: None,
    },
    TestSpec {
        name: "dm.sh",
        program: Program::Script("dm.sh"),
        needs: &[Need::Module("dm_mod")],
        uses: ACPI,
        evidence: None,
    },
    TestSpec {
        name: "mmap.sh",
        program: Program::Script("mmap.sh"),
        needs: &[],
        uses: E820,
        evidence: None,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no test named `{0}` in ndctl's dax suite; the suite has: {1}")]
    Unknown(String, String),
}

/// The tests `names` picks (all when empty), in suite order. `dax-ext4` finds `dax-ext4.sh`.
pub fn select(names: &[String]) -> Result<Vec<&'static TestSpec>, SelectError> {
    if names.is_empty() {
        return Ok(DAX_SUITE.iter().collect());
    }
    let mut picked: Vec<&'static TestSpec> = Vec::new();
    for n in names {
        let n = n.trim();
        let t = DAX_SUITE
            .iter()
            .find(|t| t.name == n || t.name.strip_suffix(".sh") == Some(n))
            .ok_or_else(|| {
                SelectError::Unknown(
                    n.to_string(),
                    DAX_SUITE
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        if !picked.iter().any(|p| p.name == t.name) {
            picked.push(t);
        }
    }
    picked.sort_by_key(|t| DAX_SUITE.iter().position(|s| s.name == t.name));
    Ok(picked)
}

/// The names of the tests `test/meson.build` puts in the `dax` suite: the lines
/// `[ 'name', program, 'dax' ],`.
pub fn dax_tests_in_meson(meson_build: &str) -> Vec<String> {
    meson_build
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix('[')?.trim_end_matches(',').trim();
            let l = l.strip_suffix(']')?;
            let fields: Vec<&str> = l.split(',').map(str::trim).collect();
            match fields.as_slice() {
                [name, _, suite] if suite.trim_matches('\'') == "dax" => {
                    Some(name.trim_matches('\'').to_string())
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt of ndctl 81's test/meson.build, the two places dax tests are listed.
    const MESON: &str = "tests = [
  [ 'libndctl',               libndctl,		  'ndctl' ],
  [ 'daxdev-errors.sh',       daxdev_errors_sh,	  'dax'	  ],
  [ 'multi-dax.sh',           multi_dax,	  'dax'   ],
  [ 'cxl-poison.sh',          cxl_poison,         'cxl'   ],
]
if get_option('destructive').enabled()
  tests += [
    [ 'pmem-ns',           pmem_ns,	   'ndctl' ],
    [ 'sub-section.sh',    sub_section,	   'dax'   ],
    [ 'dax-dev',           dax_dev,	   'dax'   ],
    [ 'dax-ext4.sh',       dax_ext4,	   'dax'   ],
    [ 'dax-xfs.sh',        dax_xfs,	   'dax'   ],
    [ 'align.sh',          align,	   'ndctl' ],
    [ 'device-dax',        device_dax,	   'dax'   ],
    [ 'revoke-devmem',     revoke_devmem,  'dax'   ],
    [ 'device-dax-fio.sh', device_dax_fio, 'dax'   ],
    [ 'daxctl-devices.sh', daxctl_devices, 'dax'   ],
    [ 'daxctl-create.sh',  daxctl_create,  'dax'   ],
    [ 'dm.sh',             dm,		   'dax'   ],
    [ 'mmap.sh',           mmap_test,	   'dax'   ],
  ]
endif";

    #[test]
    fn the_suite_is_meson_dax_suite() {
        let from_meson = dax_tests_in_meson(MESON);
        let ours: Vec<&str> = DAX_SUITE.iter().map(|t| t.name).collect();
        assert_eq!(from_meson, ours);
        assert_eq!(ours.len(), 13);
    }

    #[test]
    fn selection_by_name_with_or_without_sh_in_suite_order() {
        let s = select(&["mmap".into(), "dax-dev".into(), "mmap.sh".into()]).unwrap();
        let names: Vec<&str> = s.iter().map(|t| t.name).collect();
        assert_eq!(names, ["dax-dev", "mmap.sh"]);
        assert_eq!(select(&[]).unwrap().len(), 13);
        let e = select(&["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("dax-ext4.sh"), "{e}");
    }

    #[test]
    fn only_nfit_cxl_dm_devmem_and_numa_tests_need_more_than_the_machine() {
        let needing: Vec<&str> = DAX_SUITE
            .iter()
            .filter(|t| !t.needs.is_empty())
            .map(|t| t.name)
            .collect();
        assert_eq!(
            needing,
            [
                "daxdev-errors.sh",
                "multi-dax.sh",
                "revoke-devmem",
                "daxctl-devices.sh",
                "daxctl-create.sh",
                "dm.sh"
            ]
        );
        let devmem = DAX_SUITE
            .iter()
            .find(|t| t.name == "revoke-devmem")
            .unwrap();
        assert_eq!(devmem.needs, [Need::Config("DEVMEM")]);
        let why = devmem.needs[0].missing("6.1-kasan");
        assert!(
            why.contains("/dev/mem") && why.contains("--fragment suite"),
            "{why}"
        );
        let suite = |option: &str| {
            crate::kbuild::config::SHIPPED
                .iter()
                .any(|(name, text)| *name == "suite" && text.contains(option))
        };
        assert!(suite("CONFIG_DEVMEM=y"));
        let devices = DAX_SUITE
            .iter()
            .find(|t| t.name == "daxctl-devices.sh")
            .unwrap();
        assert_eq!(devices.needs, [Need::Config("NUMA")]);
        let why = devices.needs[0].missing("6.1-kasan");
        assert!(
            why.contains("/sys/devices/system/node") && why.contains("--fragment suite"),
            "{why}"
        );
        assert!(suite("CONFIG_NUMA=y"));
    }
}
