//! Accelerator choice: KVM only if a KVM guest really boots. On nested setups /dev/kvm can
//! exist while a guest hangs at boot, so the probe boots to init under a timeout and falls
//! back to TCG, saying why. The answer is cached per host kernel and QEMU.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::profile::{Accel, MachineProfile};
use super::{BootOptions, Vm};
use crate::cache::write_atomic;
use crate::images::{GuestImage, Kernel};

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Serialize, Deserialize)]
struct Probed {
    host: String,
    accel: Accel,
    reason: String,
}

fn host_id() -> String {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = super::profile::find_qemu()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let qver = std::fs::metadata(&qemu)
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    format!("{} {qemu} {qver}", rel.trim())
}

/// `DAXDIFF_ACCEL=kvm|tcg` skips the probe.
pub fn choose(cache: &Path, kernel: &Kernel, image: &GuestImage) -> Result<Accel> {
    match std::env::var("DAXDIFF_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    let file = cache.join("accel.json");
    let host = host_id();
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(p) = serde_json::from_str::<Probed>(&text) {
            if p.host == host {
                return Ok(p.accel);
            }
        }
    }
    let (accel, reason) = probe(kernel, image);
    eprintln!("accel: {accel} ({reason})");
    let p = Probed {
        host,
        accel,
        reason,
    };
    write_atomic(&file, serde_json::to_string_pretty(&p)?.as_bytes())?;
    Ok(accel)
}

fn probe(kernel: &Kernel, image: &GuestImage) -> (Accel, String) {
    let kvm = Path::new("/dev/kvm");
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm)
        .is_err()
    {
        return (Accel::Tcg, "no usable /dev/kvm".into());
    }
    eprintln!(
        "accel: /dev/kvm exists; checking that a KVM guest really boots (up to {}s)",
        PROBE_TIMEOUT.as_secs()
    );
    let opts = BootOptions {
        profile: MachineProfile {
            nvdimms: vec![],
            slow_disks: None,
            ..MachineProfile::default()
        },
        accel: Accel::Kvm,
        timeout: PROBE_TIMEOUT,
        bare: true,
        ..BootOptions::default()
    };
    match Vm::boot(kernel, image, opts) {
        Ok(vm) => {
            let t = vm.times.kernel;
            let _ = vm.shutdown();
            (Accel::Kvm, format!("a KVM guest reached init in {:.1}s", t.as_secs_f64()))
        }
        Err(e) => (
            Accel::Tcg,
            format!(
                "/dev/kvm exists but a KVM guest did not reach init within {}s (nested KVM hangs here): {}; using TCG",
                PROBE_TIMEOUT.as_secs(),
                e.to_string().lines().next().unwrap_or("")
            ),
        ),
    }
}
