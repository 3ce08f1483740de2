//! Bring-up of the slow disks, the non-DAX targets of direct I/O: ext4 without DAX on the
//! `daxdiff-nodax` virtio disk behind a dm-delay device, and the raw `daxdiff-blk` disk.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::command;
use crate::kmsg;
use crate::mounts;
use crate::probe;
use crate::steps::{Recorder, StepFailure};
use crate::topology::{NodaxFs, RawBlk, Topology};

pub const NODAX_SERIAL: &str = "daxdiff-nodax";
pub const BLK_SERIAL: &str = "daxdiff-blk";
pub const NODAX_MOUNTPOINT: &str = "/mnt/nodax";
/// The dm-delay device's name (`/dev/mapper/daxdiff-nodax`).
pub const DM_NAME: &str = "daxdiff-nodax";

const DISK_WAIT: Duration = Duration::from_secs(10);
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The virtio disk whose serial is `serial`, from `/sys/block/*/serial`.
pub fn disk_by_serial(sys_block: &Path, serial: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find(|n| {
        std::fs::read_to_string(sys_block.join(n).join("serial"))
            .is_ok_and(|s| s.trim_end_matches(['\n', '\0']) == serial)
    })
}

/// 512-byte sectors of a disk, from sysfs.
fn sectors(sys_block: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(sys_block.join(name).join("size"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The dm-delay table delaying reads, writes and flushes of all of `dev` by `ms`.
pub fn delay_table(dev: &str, sectors: u64, ms: u32) -> String {
    format!("0 {sectors} delay {dev} 0 {ms}")
}

/// Sets up both slow disks; records them in `topo`. False when a step failed.
pub fn set_up(delay_ms: u32, rec: &mut Recorder, topo: &mut Topology) -> bool {
    let sys_block = Path::new("/sys/block");
    let Some((fs_disk, blk_disk)) = rec.run("find the slow disks", |d| {
        let start = Instant::now();
        loop {
            let fs = disk_by_serial(sys_block, NODAX_SERIAL);
            let blk = disk_by_serial(sys_block, BLK_SERIAL);
            if let (Some(fs), Some(blk)) = (&fs, &blk) {
                d.push_str(&format!("{NODAX_SERIAL} is {fs}, {BLK_SERIAL} is {blk}"));
                return Ok((fs.clone(), blk.clone()));
            }
            if start.elapsed() >= DISK_WAIT {
                return Err(StepFailure::new(format!(
                    "no virtio disk with serial {} after {} s (is virtio_blk loaded, and does \
                     QEMU have the slow disks of the machine profile?)",
                    if fs.is_none() {
                        NODAX_SERIAL
                    } else {
                        BLK_SERIAL
                    },
                    DISK_WAIT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }) else {
        return false;
    };
    let size = sectors(sys_block, &blk_disk).unwrap_or(0) * 512;
    topo.blkdev = Some(RawBlk {
        blockdev: format!("/dev/{blk_disk}"),
        size,
    });
    let disk = format!("/dev/{fs_disk}");
    // mkfs on the disk itself, before the delay is in front of it: a second instead of a
    // minute of delayed requests. No journal: every commit would be a delayed write, and
    // this file system is only the other end of direct I/O.
    let made = rec.run(format!("mkfs.ext4 {disk} (no DAX)"), |d| {
        let out = command::run(
            "mkfs.ext4",
            &[
                "-F",
                "-q",
                "-b",
                "4096",
                "-O",
                "^has_journal",
                "-E",
                "nodiscard",
                &disk,
            ],
            CMD_TIMEOUT,
        );
        if !out.success() {
            return Err(StepFailure::command(&out));
        }
        d.push_str(&format!("$ {}", out.argv));
        Ok(())
    });
    if made.is_none() {
        return false;
    }
    // The device starts without delay so that mounting and checking it cost no delayed
    // reads (6 s measured with the delay in place); the delay goes in after.
    let n = sectors(sys_block, &fs_disk).unwrap_or(0);
    let Some(dm) = rec.run(format!("dm device over {disk}"), |d| {
        if n == 0 {
            return Err(StepFailure::new(format!("no size for {fs_disk} in sysfs")));
        }
        let table = delay_table(&disk, n, 0);
        // No udev in the guest: dmsetup makes the node itself.
        let out = command::run(
            "dmsetup",
            &["create", DM_NAME, "--noudevsync", "--table", &table],
            CMD_TIMEOUT,
        );
        if !out.success() {
            let hint = if out.output().contains("delay") {
                " (is dm_delay loaded?)"
            } else {
                ""
            };
            return Err(StepFailure::with_detail(
                format!("dmsetup create {DM_NAME}: {}{hint}", out.failure_reason()),
                format!("{out}\nkernel log:\n{}", kmsg::tail(10)),
            ));
        }
        let node = PathBuf::from(format!("/dev/mapper/{DM_NAME}"));
        if !node.exists() {
            let _ = command::run("dmsetup", &["mknodes", DM_NAME], CMD_TIMEOUT);
        }
        if !node.exists() {
            return Err(StepFailure::new(format!(
                "{} missing after dmsetup create",
                node.display()
            )));
        }
        d.push_str(&format!("{table} -> {}", node.display()));
        Ok(node.display().to_string())
    }) else {
        return false;
    };
    let mounted = rec.run(format!("mount {NODAX_MOUNTPOINT} (no DAX)"), |d| {
        std::fs::create_dir_all(NODAX_MOUNTPOINT)
            .map_err(|e| StepFailure::new(format!("mkdir {NODAX_MOUNTPOINT}: {e}")))?;
        mounts::mount(&dm, NODAX_MOUNTPOINT, "ext4", "").map_err(|e| {
            StepFailure::with_detail(
                format!("mount(2) of {dm} on {NODAX_MOUNTPOINT}: {e}"),
                format!("kernel log:\n{}", kmsg::tail(15)),
            )
        })?;
        let p = probe::probe_file(Path::new(NODAX_MOUNTPOINT)).map_err(StepFailure::new)?;
        if p.dax {
            return Err(StepFailure::new(format!(
                "a fresh file on {NODAX_MOUNTPOINT} has STATX_ATTR_DAX: it must be the non-DAX side"
            )));
        }
        d.push_str(&format!(
            "mount -t ext4 {dm} {NODAX_MOUNTPOINT}; a fresh file lacks STATX_ATTR_DAX"
        ));
        Ok(())
    });
    if mounted.is_none() {
        return false;
    }
    let delayed = rec.run(format!("delay {DM_NAME} by {delay_ms} ms"), |d| {
        let table = delay_table(&disk, n, delay_ms);
        // load puts the table in as the inactive one; resume swaps it in (suspending the
        // device, with the file system frozen, for the moment of the swap).
        for args in [
            vec!["load", DM_NAME, "--noudevsync", "--table", table.as_str()],
            vec!["resume", DM_NAME, "--noudevsync"],
        ] {
            let out = command::run("dmsetup", &args, CMD_TIMEOUT);
            if !out.success() {
                return Err(StepFailure::command(&out));
            }
        }
        d.push_str(&table);
        Ok(())
    });
    if delayed.is_none() {
        return false;
    }
    topo.nodax = Some(NodaxFs {
        disk,
        blockdev: dm,
        mountpoint: NODAX_MOUNTPOINT.to_string(),
        delay_ms,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_disks_by_serial() {
        let root = std::env::temp_dir().join(format!("daxdiff-sysblock-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let dir = &root;
        for (name, serial) in [("vda", "daxdiff-nodax\n"), ("vdb", "daxdiff-blk")] {
            let d = dir.as_path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("serial"), serial).unwrap();
        }
        std::fs::create_dir(dir.as_path().join("pmem0")).unwrap();
        assert_eq!(
            disk_by_serial(dir.as_path(), NODAX_SERIAL).as_deref(),
            Some("vda")
        );
        assert_eq!(
            disk_by_serial(dir.as_path(), BLK_SERIAL).as_deref(),
            Some("vdb")
        );
        assert_eq!(disk_by_serial(dir.as_path(), "daxdiff-scratch"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn delay_table_covers_the_disk() {
        assert_eq!(
            delay_table("/dev/vda", 131072, 500),
            "0 131072 delay /dev/vda 0 500"
        );
    }
}
