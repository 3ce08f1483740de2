//! What programs run against: the DAX filesystems and device-dax device bring-up set up
//! (from the topology), the non-DAX ends of direct I/O, and each program's own fresh
//! directories on the file systems.

use std::path::{Path, PathBuf};

use daxdiff_prog::FileTarget;

use crate::bootcfg::Role;
use crate::topology::Topology;

/// A DAX filesystem programs create files on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsTarget {
    pub mountpoint: PathBuf,
    /// The block device, for remounting; `None` when the directory is not a mount the
    /// executor may remount (host tests).
    pub blockdev: Option<String>,
    pub fstype: String,
    /// Mount data that turns DAX on (`dax`, `dax=always`).
    pub mount_data: String,
}

/// The device-dax device programs open and map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevdaxTarget {
    pub namespace: String,
    /// Name under the device directory: `dax2.0`.
    pub chardev: String,
    pub align: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEnv {
    pub ext4: Option<FsTarget>,
    pub xfs: Option<FsTarget>,
    pub devdax: Option<DevdaxTarget>,
    /// Where device names (`dax2.0`) live: `/dev`.
    pub dev_dir: PathBuf,
    /// The ext4 without DAX on the slow disk (never remounted by the executor).
    pub nodax: Option<FsTarget>,
    /// The raw slow block device.
    pub blkdev: Option<PathBuf>,
}

impl RunEnv {
    pub fn from_topology(t: &Topology) -> RunEnv {
        let fs = |role: Role| {
            t.fs_for(role).map(|f| FsTarget {
                mountpoint: PathBuf::from(&f.mountpoint),
                blockdev: Some(f.blockdev.clone()),
                fstype: role.as_str().to_string(),
                mount_data: role.dax_mount_option().unwrap_or("").to_string(),
            })
        };
        let devdax = t.devdax.first().map(|d| DevdaxTarget {
            namespace: d.namespace.clone(),
            chardev: d.chardev.trim_start_matches("/dev/").to_string(),
            align: d.align,
        });
        RunEnv {
            ext4: fs(Role::Ext4),
            xfs: fs(Role::Xfs),
            devdax,
            dev_dir: PathBuf::from("/dev"),
            nodax: t.nodax.as_ref().map(|n| FsTarget {
                mountpoint: PathBuf::from(&n.mountpoint),
                blockdev: Some(n.blockdev.clone()),
                fstype: "ext4".to_string(),
                mount_data: String::new(),
            }),
            blkdev: t.blkdev.as_ref().map(|b| PathBuf::from(&b.blockdev)),
        }
    }

    /// Plain directories standing in for the DAX mounts (host tests: tmpfs, no remount).
    pub fn plain_dirs(ext4: &Path, xfs: &Path) -> RunEnv {
        let fs = |p: &Path, t: &str| FsTarget {
            mountpoint: p.to_path_buf(),
            blockdev: None,
            fstype: t.to_string(),
            mount_data: String::new(),
        };
        RunEnv {
            ext4: Some(fs(ext4, "ext4")),
            xfs: Some(fs(xfs, "xfs")),
            devdax: None,
            dev_dir: PathBuf::from("/dev"),
            nodax: None,
            blkdev: None,
        }
    }

    pub fn fs(&self, target: FileTarget) -> Option<&FsTarget> {
        match target {
            FileTarget::Ext4 => self.ext4.as_ref(),
            FileTarget::Xfs => self.xfs.as_ref(),
            FileTarget::Nodax => self.nodax.as_ref(),
            FileTarget::Devdax | FileTarget::Blkdev => None,
        }
    }

    pub fn fs_targets(&self) -> impl Iterator<Item = &FsTarget> {
        self.ext4.iter().chain(self.xfs.iter())
    }
}

/// One program's directories: `p<seq>` under each filesystem target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgDirs {
    pub ext4: Option<PathBuf>,
    pub xfs: Option<PathBuf>,
    /// On the ext4 without DAX; not in [`ProgDirs::all`], which follows the DAX targets.
    pub nodax: Option<PathBuf>,
}

impl ProgDirs {
    pub fn new(env: &RunEnv, seq: u64) -> ProgDirs {
        let dir = |f: &Option<FsTarget>| f.as_ref().map(|f| f.mountpoint.join(format!("p{seq}")));
        ProgDirs {
            ext4: dir(&env.ext4),
            xfs: dir(&env.xfs),
            nodax: dir(&env.nodax),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.ext4.iter().chain(self.xfs.iter())
    }
}

/// Where a program's file name points: its directory on the call's filesystem, or the
/// device directory for devdax. Device names are mapped onto the real device, since the
/// descriptions name it generically (`dax0.0`) and the guest's numbering varies.
pub fn resolve_path(
    env: &RunEnv,
    dirs: &ProgDirs,
    target: Option<FileTarget>,
    name: &str,
) -> PathBuf {
    match target {
        Some(FileTarget::Ext4) => match &dirs.ext4 {
            Some(d) => d.join(name),
            None => PathBuf::from("/nonexistent/daxdiff-no-ext4").join(name),
        },
        Some(FileTarget::Xfs) => match &dirs.xfs {
            Some(d) => d.join(name),
            None => PathBuf::from("/nonexistent/daxdiff-no-xfs").join(name),
        },
        Some(FileTarget::Nodax) => match &dirs.nodax {
            Some(d) => d.join(name),
            None => PathBuf::from("/nonexistent/daxdiff-no-nodax").join(name),
        },
        // One raw device: every name stands for it, as dax0.0 does for device-dax.
        Some(FileTarget::Blkdev) => env
            .blkdev
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent/daxdiff-no-blkdev")),
        Some(FileTarget::Devdax) => match &env.devdax {
            Some(d) if name.starts_with("dax") => env.dev_dir.join(&d.chardev),
            _ => env.dev_dir.join(name),
        },
        // Calls without a variant: relative to the ext4 directory, like a cwd would be.
        None => match &dirs.ext4 {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{DevDax, FsMount};

    #[test]
    fn env_from_topology_and_paths() {
        let t = Topology {
            ok: true,
            fs: vec![FsMount {
                role: Role::Xfs,
                region: "region1".into(),
                namespace: "namespace1.0".into(),
                blockdev: "/dev/pmem1".into(),
                mountpoint: "/mnt/xfs".into(),
                dax: true,
            }],
            devdax: vec![DevDax {
                region: "region2".into(),
                namespace: "namespace2.0".into(),
                chardev: "/dev/dax2.0".into(),
                align: 2 << 20,
                size: 1 << 30,
            }],
            ..Default::default()
        };
        let env = RunEnv::from_topology(&t);
        assert!(env.ext4.is_none());
        let xfs = env.xfs.as_ref().unwrap();
        assert_eq!(xfs.mount_data, "dax=always");
        assert_eq!(xfs.blockdev.as_deref(), Some("/dev/pmem1"));
        let dirs = ProgDirs::new(&env, 7);
        assert_eq!(dirs.xfs.as_deref(), Some(Path::new("/mnt/xfs/p7")));
        assert_eq!(
            resolve_path(&env, &dirs, Some(FileTarget::Xfs), "file1"),
            Path::new("/mnt/xfs/p7/file1")
        );
        assert_eq!(
            resolve_path(&env, &dirs, Some(FileTarget::Devdax), "dax0.0"),
            Path::new("/dev/dax2.0")
        );
        assert!(
            resolve_path(&env, &dirs, Some(FileTarget::Ext4), "file0").starts_with("/nonexistent")
        );
        assert!(
            resolve_path(&env, &dirs, Some(FileTarget::Nodax), "file0").starts_with("/nonexistent")
        );
        assert!(
            resolve_path(&env, &dirs, Some(FileTarget::Blkdev), "blk0").starts_with("/nonexistent")
        );
    }

    #[test]
    fn slow_disks_from_topology() {
        use crate::topology::{NodaxFs, RawBlk};
        let t = Topology {
            ok: true,
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
            ..Default::default()
        };
        let env = RunEnv::from_topology(&t);
        let dirs = ProgDirs::new(&env, 3);
        assert_eq!(dirs.all().count(), 0, "no DAX directories");
        assert_eq!(
            resolve_path(&env, &dirs, Some(FileTarget::Nodax), "file1"),
            Path::new("/mnt/nodax/p3/file1")
        );
        assert_eq!(
            resolve_path(&env, &dirs, Some(FileTarget::Blkdev), "blk0"),
            Path::new("/dev/vdb")
        );
        assert_eq!(env.fs(FileTarget::Nodax).unwrap().mount_data, "");
    }
}
