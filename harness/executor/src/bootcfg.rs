//! What the controller asks of bring-up through the kernel command line:
//! `daxdiff.pmem=ROLE,…` (one role per NVDIMM, in nmem order), `daxdiff.devdax_align=SIZE`
//! and `daxdiff.nodax_delay_ms=MS` (set up the slow non-DAX disks with that delay).

use std::fmt;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Default device-dax alignment: 2 MiB, so PMD faults are possible.
pub const DEFAULT_DEVDAX_ALIGN: u64 = 2 << 20;

/// What one NVDIMM becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// fsdax namespace, ext4 mounted `-o dax` at `/mnt/ext4`.
    Ext4,
    /// fsdax namespace, xfs (reflink off) mounted `-o dax=always` at `/mnt/xfs`.
    Xfs,
    /// devdax namespace exposing `/dev/daxX.Y`.
    Devdax,
    /// Left alone.
    Raw,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "ext4" => Ok(Role::Ext4),
            "xfs" => Ok(Role::Xfs),
            "devdax" => Ok(Role::Devdax),
            "raw" => Ok(Role::Raw),
            other => bail!("unknown NVDIMM role {other:?} (expected ext4, xfs, devdax or raw)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ext4 => "ext4",
            Role::Xfs => "xfs",
            Role::Devdax => "devdax",
            Role::Raw => "raw",
        }
    }

    /// The ndctl namespace mode this role needs, if any.
    pub fn namespace_mode(self) -> Option<&'static str> {
        match self {
            Role::Ext4 | Role::Xfs => Some("fsdax"),
            Role::Devdax => Some("devdax"),
            Role::Raw => None,
        }
    }

    /// Where a filesystem role is mounted.
    pub fn mountpoint(self) -> Option<&'static str> {
        match self {
            Role::Ext4 => Some("/mnt/ext4"),
            Role::Xfs => Some("/mnt/xfs"),
            Role::Devdax | Role::Raw => None,
        }
    }

    /// The mount data string that turns DAX on for a filesystem role.
    pub fn dax_mount_option(self) -> Option<&'static str> {
        match self {
            Role::Ext4 => Some("dax"),
            Role::Xfs => Some("dax=always"),
            Role::Devdax | Role::Raw => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bring-up parameters read from `/proc/cmdline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// Role of nmem0, nmem1, … in that order.
    pub roles: Vec<Role>,
    pub devdax_align: u64,
    /// Set up the slow disks (non-DAX ext4 and raw block device), each request delayed
    /// this long; `None`: the machine has none.
    pub nodax_delay_ms: Option<u32>,
}

impl BootConfig {
    pub fn from_proc() -> Result<BootConfig> {
        let text = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
        BootConfig::parse(&text)
    }

    pub fn parse(cmdline: &str) -> Result<BootConfig> {
        let mut roles = None;
        let mut devdax_align = DEFAULT_DEVDAX_ALIGN;
        let mut nodax_delay_ms = None;
        for word in cmdline.split_ascii_whitespace() {
            if let Some(list) = word.strip_prefix("daxdiff.pmem=") {
                let parsed: Result<Vec<Role>> = list
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(Role::parse)
                    .collect();
                roles = Some(parsed.context("in daxdiff.pmem= on the kernel command line")?);
            } else if let Some(size) = word.strip_prefix("daxdiff.devdax_align=") {
                devdax_align = parse_size(size)
                    .context("in daxdiff.devdax_align= on the kernel command line")?;
            } else if let Some(ms) = word.strip_prefix("daxdiff.nodax_delay_ms=") {
                nodax_delay_ms = Some(ms.parse().map_err(|_| {
                    anyhow!("daxdiff.nodax_delay_ms={ms:?} on the kernel command line is not a number of milliseconds")
                })?);
            }
        }
        let roles = roles.ok_or_else(|| {
            anyhow!("no daxdiff.pmem=ROLE,... on the kernel command line: the controller must say what each NVDIMM is for")
        })?;
        if roles.is_empty() {
            bail!("daxdiff.pmem= on the kernel command line lists no roles");
        }
        for role in [Role::Ext4, Role::Xfs] {
            if roles.iter().filter(|r| **r == role).count() > 1 {
                bail!(
                    "daxdiff.pmem= names {role} twice, but there is one mountpoint per filesystem"
                );
            }
        }
        Ok(BootConfig {
            roles,
            devdax_align,
            nodax_delay_ms,
        })
    }
}

/// Parses `4096`, `4K`, `2M`, `1G` (binary units, as ndctl takes them).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => bail!("size {s:?} has an unknown unit (use K, M, G or T)"),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow!("size {s:?} is not a number with an optional K/M/G/T unit"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| anyhow!("size {s:?} overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_align() {
        let c = BootConfig::parse(
            "console=ttyS0 root=/dev/ram0 daxdiff.pmem=ext4,xfs,devdax daxdiff.devdax_align=1G quiet\n",
        )
        .unwrap();
        assert_eq!(c.roles, vec![Role::Ext4, Role::Xfs, Role::Devdax]);
        assert_eq!(c.devdax_align, 1 << 30);
        assert_eq!(c.nodax_delay_ms, None);
    }

    #[test]
    fn slow_disks_delay() {
        let c = BootConfig::parse("daxdiff.pmem=ext4 daxdiff.nodax_delay_ms=500").unwrap();
        assert_eq!(c.nodax_delay_ms, Some(500));
        let e = BootConfig::parse("daxdiff.pmem=ext4 daxdiff.nodax_delay_ms=half").unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
    }

    #[test]
    fn default_align_is_2m() {
        let c = BootConfig::parse("daxdiff.pmem=devdax,raw").unwrap();
        assert_eq!(c.roles, vec![Role::Devdax, Role::Raw]);
        assert_eq!(c.devdax_align, 2 * 1024 * 1024);
    }

    #[test]
    fn rejects_missing_unknown_and_duplicate() {
        let e = BootConfig::parse("console=ttyS0").unwrap_err();
        assert!(e.to_string().contains("daxdiff.pmem="), "{e}");
        let e = BootConfig::parse("daxdiff.pmem=ext4,btrfs").unwrap_err();
        assert!(format!("{e:#}").contains("btrfs"), "{e:#}");
        assert!(BootConfig::parse("daxdiff.pmem=xfs,xfs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("2m").unwrap(), 2 << 20);
        assert!(parse_size("2X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
