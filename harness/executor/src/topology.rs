//! The bring-up report the controller reads (`/run/daxdiff/topology.json`): which step
//! ran how, and which DAX filesystems and device-dax devices the guest now offers.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bootcfg::Role;

/// Where bring-up leaves its report for later `status` runs and the controller.
pub const TOPOLOGY_PATH: &str = "/run/daxdiff/topology.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub duration_ms: u64,
    /// What was done, or on failure the command with its full output.
    pub detail: String,
}

/// A DAX-mounted filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsMount {
    pub role: Role,
    pub region: String,
    pub namespace: String,
    pub blockdev: String,
    pub mountpoint: String,
    /// A freshly written file showed `STATX_ATTR_DAX`.
    pub dax: bool,
}

/// A device-dax character device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevDax {
    pub region: String,
    pub namespace: String,
    pub chardev: String,
    pub align: u64,
    pub size: u64,
}

/// The ext4 without DAX on the slow disk: the non-DAX side of direct I/O.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodaxFs {
    /// The virtio disk itself (`/dev/vda`).
    pub disk: String,
    /// The dm-delay device over it, which is what is mounted.
    pub blockdev: String,
    pub mountpoint: String,
    /// Every request's delay.
    pub delay_ms: u32,
}

/// The raw block device target (QEMU null-co: reads zeros, keeps nothing, delays each
/// request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawBlk {
    pub blockdev: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub ok: bool,
    pub error: Option<String>,
    pub steps: Vec<Step>,
    pub fs: Vec<FsMount>,
    pub devdax: Vec<DevDax>,
    #[serde(default)]
    pub nodax: Option<NodaxFs>,
    #[serde(default)]
    pub blkdev: Option<RawBlk>,
}

impl Topology {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("topology serializes")
    }

    pub fn fs_for(&self, role: Role) -> Option<&FsMount> {
        self.fs.iter().find(|f| f.role == role)
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so readers never see half.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Topology {
        Topology {
            ok: true,
            error: None,
            steps: vec![Step {
                name: "cmdline".into(),
                ok: true,
                duration_ms: 0,
                detail: "roles ext4,devdax".into(),
            }],
            fs: vec![FsMount {
                role: Role::Ext4,
                region: "region0".into(),
                namespace: "namespace0.0".into(),
                blockdev: "/dev/pmem0".into(),
                mountpoint: "/mnt/ext4".into(),
                dax: true,
            }],
            devdax: vec![DevDax {
                region: "region1".into(),
                namespace: "namespace1.0".into(),
                chardev: "/dev/dax1.0".into(),
                align: 2097152,
                size: 1054867456,
            }],
            nodax: Some(NodaxFs {
                disk: "/dev/vda".into(),
                blockdev: "/dev/mapper/daxdiff-nodax".into(),
                mountpoint: "/mnt/nodax".into(),
                delay_ms: 500,
            }),
            blkdev: Some(RawBlk {
                blockdev: "/dev/vdb".into(),
                size: 64 << 20,
            }),
        }
    }

    #[test]
    fn json_shape_matches_the_controller_contract() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["ok"], true);
        assert!(v["error"].is_null());
        assert_eq!(v["steps"][0]["duration_ms"], 0);
        assert_eq!(v["fs"][0]["role"], "ext4");
        assert_eq!(v["fs"][0]["blockdev"], "/dev/pmem0");
        assert_eq!(v["fs"][0]["dax"], true);
        assert_eq!(v["devdax"][0]["chardev"], "/dev/dax1.0");
        assert_eq!(v["devdax"][0]["align"], 2097152);
        assert_eq!(v["nodax"]["mountpoint"], "/mnt/nodax");
        assert_eq!(v["blkdev"]["blockdev"], "/dev/vdb");
        let back: Topology = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("daxdiff-topo-{}", std::process::id()));
        let path = dir.join("sub").join("topology.json");
        write_atomic(&path, "{\"old\":1}").unwrap();
        write_atomic(&path, &sample().to_json()).unwrap();
        let back: Topology =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, sample());
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
