//! Between programs: fresh directories before, and after, putting back what a program may
//! have changed — DAX mounts (remounting, re-making the filesystem if it will not mount),
//! the device-dax namespace's mode and device, and the program's files.

use std::path::Path;
use std::time::Duration;

use daxdiff_prog::Program;

use super::env::{FsTarget, ProgDirs, RunEnv};
use crate::bootcfg::Role;
use crate::bringup::make_fs;
use crate::command;
use crate::mounts;
use crate::ndctl;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Pseudo-calls after which the device-dax namespace must be checked.
const DEVDAX_CHANGERS: [&str; 3] = [
    "daxdiff_devdax_disable",
    "daxdiff_devdax_enable",
    "daxdiff_ns_reconfigure",
];

/// Pseudo-calls that unmount a filesystem.
const REMOUNTERS: [&str; 1] = ["daxdiff_evict"];

fn touches(prog: &Program, names: &[&str]) -> bool {
    prog.calls.iter().any(|c| names.contains(&c.base_name()))
}

/// Makes sure `fs` is mounted with DAX; returns what had to be done, if anything.
fn ensure_mounted(fs: &FsTarget) -> Result<Option<String>, String> {
    let Some(dev) = &fs.blockdev else {
        return Ok(None);
    };
    let mp = fs.mountpoint.to_string_lossy().into_owned();
    let table = mounts::read().map_err(|e| format!("reading /proc/mounts: {e}"))?;
    if mounts::find(&table, &mp).is_some_and(|m| m.has_dax_always() && &m.source == dev) {
        return Ok(None);
    }
    match mounts::mount(dev, &mp, &fs.fstype, &fs.mount_data) {
        Ok(()) => Ok(Some(format!("remounted {mp}"))),
        Err(first) => {
            let role = if fs.fstype == "ext4" {
                Role::Ext4
            } else {
                Role::Xfs
            };
            let out = make_fs(role, dev);
            if !out.success() {
                return Err(format!(
                    "{mp} would not mount ({first}) and mkfs failed: {}",
                    out.failure_reason()
                ));
            }
            mounts::mount(dev, &mp, &fs.fstype, &fs.mount_data)
                .map(|()| {
                    Some(format!(
                        "{mp} would not mount ({first}): re-made the filesystem"
                    ))
                })
                .map_err(|e| format!("{mp} does not mount even after mkfs: {e}"))
        }
    }
}

/// Creates the program's directories, repairing a mount first when needed.
pub fn prepare(env: &RunEnv, dirs: &ProgDirs) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for (fs, dir) in env.fs_targets().zip(dirs.all()) {
        if std::fs::create_dir(dir).is_err() {
            if let Some(n) = ensure_mounted(fs)? {
                notes.push(n);
            }
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
    }
    if let Some(dir) = &dirs.nodax {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    Ok(notes)
}

/// Puts the device-dax namespace back into devdax mode with its device enabled; updates
/// the device name in `env` if it changed.
fn restore_devdax(env: &mut RunEnv) -> Result<Option<String>, String> {
    let Some(dd) = env.devdax.clone() else {
        return Ok(None);
    };
    let (out, listing) = ndctl::list_all(ADMIN_TIMEOUT);
    let listing = listing.map_err(|e| format!("ndctl list: {e:#}: {}", out.failure_reason()))?;
    let ns = listing
        .regions
        .iter()
        .flat_map(|r| r.namespaces.iter())
        .find(|n| n.dev == dd.namespace)
        .cloned();
    let mut notes = Vec::new();
    let align = dd.align.to_string();
    let ns = match ns {
        Some(ns) if ns.mode() == "devdax" && ns.align() == Some(dd.align) && ns.is_enabled() => ns,
        other => {
            if other.as_ref().is_some_and(|n| !n.is_enabled()) {
                let _ = ndctl::run(&["enable-namespace", &dd.namespace], ADMIN_TIMEOUT);
            }
            let out = ndctl::run(
                &[
                    "create-namespace",
                    "-f",
                    "-e",
                    &dd.namespace,
                    "-m",
                    "devdax",
                    "-a",
                    &align,
                ],
                ADMIN_TIMEOUT,
            );
            if !out.success() {
                return Err(format!(
                    "restoring {} to devdax: {}",
                    dd.namespace,
                    out.failure_reason()
                ));
            }
            notes.push(format!("reconfigured {} back to devdax", dd.namespace));
            ndctl::parse_created_namespace(&out.stdout).map_err(|e| format!("{e:#}"))?
        }
    };
    let chardev = ns
        .chardev()
        .map(str::to_string)
        .unwrap_or_else(|| dd.chardev.clone());
    if !env.dev_dir.join(&chardev).exists() {
        let out = command::run("daxctl", &["enable-device", &chardev], ADMIN_TIMEOUT);
        if !out.success() {
            return Err(format!("re-enabling {chardev}: {}", out.failure_reason()));
        }
        notes.push(format!("re-enabled {chardev}"));
    }
    if chardev != dd.chardev {
        notes.push(format!("device-dax is now {chardev}"));
        if let Some(d) = env.devdax.as_mut() {
            d.chardev = chardev;
        }
    }
    Ok((!notes.is_empty()).then(|| notes.join("; ")))
}

/// After a program: mounts, device-dax, then the program's files. Returns notes on what
/// had to be repaired or could not be.
pub fn after(env: &mut RunEnv, dirs: &ProgDirs, prog: &Program, stuck: bool) -> Vec<String> {
    let mut notes = repair(env, prog, stuck, Suspect::default());
    notes.extend(remove_dirs(dirs));
    notes
}

/// What a failed teardown step may have left changed, beyond what the program itself did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Suspect {
    pub mounts: bool,
    pub devdax: bool,
}

/// Puts back the DAX mounts (when the program or a failed teardown step may have left one
/// unmounted, or `stuck`) and the device-dax namespace (when the program or a failed
/// teardown step changed it).
pub fn repair(env: &mut RunEnv, prog: &Program, stuck: bool, suspect: Suspect) -> Vec<String> {
    let mut notes = Vec::new();
    if touches(prog, &REMOUNTERS) || stuck || suspect.mounts {
        for fs in env.fs_targets() {
            match ensure_mounted(fs) {
                Ok(Some(n)) => notes.push(n),
                Ok(None) => {}
                Err(e) => notes.push(format!("cleanup: {e}")),
            }
        }
    }
    if touches(prog, &DEVDAX_CHANGERS) || suspect.devdax {
        if stuck {
            // ndctl would block behind the stuck program.
            notes.push("cleanup: device-dax left as the stuck program left it".to_string());
        } else {
            match restore_devdax(env) {
                Ok(Some(n)) => notes.push(n),
                Ok(None) => {}
                Err(e) => notes.push(format!("cleanup: {e}")),
            }
        }
    }
    notes
}

/// Removes the program's directories (the non-DAX one too: what a program wrote there
/// goes with it, and the raw block device keeps nothing).
pub fn remove_dirs(dirs: &ProgDirs) -> Vec<String> {
    let mut notes = Vec::new();
    for dir in dirs.all().chain(dirs.nodax.iter()) {
        if let Err(e) = remove_tree(dir) {
            notes.push(format!("cleanup: removing {}: {e}", dir.display()));
        }
    }
    notes
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
