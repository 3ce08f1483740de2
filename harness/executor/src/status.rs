//! `status`: re-checks, without reconfiguring anything, that what bring-up recorded still
//! holds — DAX mounts in place, fresh files DAX, device-dax devices present and mappable.

use std::path::Path;

use crate::bootcfg::{BootConfig, Role};
use crate::bringup::{verify_devdax, verify_fs_dax};
use crate::mounts;
use crate::steps::{Recorder, StepFailure};
use crate::topology::Topology;

pub fn run(topology_path: &Path) -> Topology {
    let mut rec = Recorder::new("status");
    let recorded = rec.run(format!("read {}", topology_path.display()), |d| {
        let text = std::fs::read_to_string(topology_path)
            .map_err(|e| StepFailure::new(format!("{e} (run `daxdiff-exec bringup` first)")))?;
        let t: Topology = serde_json::from_str(&text)
            .map_err(|e| StepFailure::new(format!("not a topology report: {e}")))?;
        if !t.ok {
            return Err(StepFailure::new(format!(
                "bring-up had failed: {}",
                t.error.as_deref().unwrap_or("no error recorded")
            )));
        }
        d.push_str(&format!(
            "{} filesystems, {} device-dax",
            t.fs.len(),
            t.devdax.len()
        ));
        Ok(t)
    });
    let mut topo = Topology::default();
    if let Some(recorded) = recorded {
        check(&recorded, &mut rec, &mut topo);
    }
    topo.ok = !rec.failed();
    topo.error = rec.error.take();
    topo.steps = std::mem::take(&mut rec.steps);
    topo
}

fn check(recorded: &Topology, rec: &mut Recorder, topo: &mut Topology) {
    rec.run("compare with kernel command line", |d| {
        let cfg = BootConfig::from_proc().map_err(|e| StepFailure::new(format!("{e:#}")))?;
        for role in [Role::Ext4, Role::Xfs] {
            let wanted = cfg.roles.contains(&role);
            if wanted != recorded.fs_for(role).is_some() {
                return Err(StepFailure::new(format!(
                    "the command line {} {role} but the topology {} it",
                    if wanted {
                        "asks for"
                    } else {
                        "does not ask for"
                    },
                    if wanted { "lacks" } else { "has" }
                )));
            }
        }
        let devdax = cfg.roles.iter().filter(|r| **r == Role::Devdax).count();
        if devdax != recorded.devdax.len() {
            return Err(StepFailure::new(format!(
                "the command line asks for {devdax} devdax, the topology has {}",
                recorded.devdax.len()
            )));
        }
        d.push_str("roles match");
        Ok(())
    });
    let table = mounts::read().unwrap_or_default();
    for fs in &recorded.fs {
        let mut now = fs.clone();
        let mounted = rec.run(format!("mount {}", fs.mountpoint), |d| {
            let m = mounts::find(&table, &fs.mountpoint)
                .ok_or_else(|| StepFailure::new(format!("{} is not mounted", fs.mountpoint)))?;
            if m.source != fs.blockdev || m.fstype != fs.role.as_str() {
                return Err(StepFailure::new(format!(
                    "{} has {} ({}) mounted, expected {} ({})",
                    fs.mountpoint, m.source, m.fstype, fs.blockdev, fs.role
                )));
            }
            if !m.has_dax_always() {
                return Err(StepFailure::new(format!(
                    "{} is mounted without dax: options {}",
                    fs.mountpoint,
                    m.options.join(",")
                )));
            }
            d.push_str(&format!(
                "{} {} {} {}",
                m.source,
                m.target,
                m.fstype,
                m.options.join(",")
            ));
            Ok(())
        });
        now.dax = mounted.is_some()
            && rec
                .run(format!("verify DAX on {}", fs.mountpoint), |d| {
                    verify_fs_dax(&fs.mountpoint, d)
                })
                .is_some();
        topo.fs.push(now);
    }
    for dd in &recorded.devdax {
        rec.run(format!("verify {}", dd.chardev), |d| {
            verify_devdax(&dd.chardev, dd.align, d)
        });
        topo.devdax.push(dd.clone());
    }
    if let Some(n) = &recorded.nodax {
        rec.run(format!("mount {}", n.mountpoint), |d| {
            let m = mounts::find(&table, &n.mountpoint)
                .ok_or_else(|| StepFailure::new(format!("{} is not mounted", n.mountpoint)))?;
            if m.has_dax_always() {
                return Err(StepFailure::new(format!(
                    "{} is mounted with dax, but it is the non-DAX side",
                    n.mountpoint
                )));
            }
            d.push_str(&format!("{} {} {}", m.source, m.target, m.fstype));
            Ok(())
        });
    }
    topo.nodax = recorded.nodax.clone();
    topo.blkdev = recorded.blkdev.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_topology_says_to_run_bringup() {
        let t = run(Path::new("/nonexistent/daxdiff/topology.json"));
        assert!(!t.ok);
        let e = t.error.unwrap();
        assert!(
            e.starts_with("status: read /nonexistent/daxdiff/topology.json failed:"),
            "{e}"
        );
        assert!(e.contains("daxdiff-exec bringup"), "{e}");
    }

    #[test]
    fn failed_bringup_fails_status() {
        let dir = std::env::temp_dir().join(format!("daxdiff-status-{}", std::process::id()));
        let path = dir.join("topology.json");
        let failed = Topology {
            ok: false,
            error: Some("bringup: x failed: y".into()),
            ..Default::default()
        };
        crate::topology::write_atomic(&path, &failed.to_json()).unwrap();
        let t = run(&path);
        assert!(!t.ok);
        assert!(t.error.unwrap().contains("bringup: x failed: y"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
