//! DAX bring-up inside the guest: from blank QEMU NVDIMMs to DAX-mounted ext4/xfs and a
//! device-dax character device, each step timed and checked, ending in a [`Topology`].

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::bootcfg::{BootConfig, Role};
use crate::command::{self, CmdOutput};
use crate::kmsg;
use crate::mounts;
use crate::ndctl::{self, Listing, Namespace};
use crate::probe;
use crate::steps::{Recorder, StepFailure};
use crate::topology::{self, DevDax, FsMount, Topology};

const NDCTL_TIMEOUT: Duration = Duration::from_secs(60);
const MKFS_TIMEOUT: Duration = Duration::from_secs(180);
const DEVICE_NODE_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Options {
    /// How long to wait for the NVDIMMs to show up after module load.
    pub dimm_wait: Duration,
    pub topology_path: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dimm_wait: Duration::from_secs(20),
            topology_path: PathBuf::from(topology::TOPOLOGY_PATH),
        }
    }
}

fn nmem(index: usize) -> String {
    format!("nmem{index}")
}

/// Runs bring-up, writes the topology file (also on failure) and returns the report.
pub fn run(opts: &Options) -> Topology {
    let mut rec = Recorder::new("bringup");
    let mut topo = Topology::default();
    let cfg = rec.run("read kernel command line", |d| {
        let cfg = BootConfig::from_proc().map_err(|e| StepFailure::new(format!("{e:#}")))?;
        let roles: Vec<&str> = cfg.roles.iter().map(|r| r.as_str()).collect();
        d.push_str(&format!(
            "roles {} devdax_align {}",
            roles.join(","),
            cfg.devdax_align
        ));
        Ok(cfg)
    });
    if let Some(cfg) = cfg {
        configure(&cfg, opts, &mut rec, &mut topo);
        if let (Some(ms), false) = (cfg.nodax_delay_ms, rec.failed()) {
            crate::slowdisks::set_up(ms, &mut rec, &mut topo);
        }
    }
    topo.ok = !rec.failed();
    topo.error = rec.error.take();
    topo.steps = std::mem::take(&mut rec.steps);
    if let Err(e) = topology::write_atomic(&opts.topology_path, &topo.to_json()) {
        let msg = format!(
            "bringup: writing {} failed: {e}",
            opts.topology_path.display()
        );
        topo.ok = false;
        topo.error.get_or_insert(msg);
    }
    topo
}

fn configure(cfg: &BootConfig, opts: &Options, rec: &mut Recorder, topo: &mut Topology) {
    let n = cfg.roles.len();
    let Some(_) = rec.run(format!("wait for {n} NVDIMMs"), |d| {
        wait_for_dimms(n, opts.dimm_wait, d)
    }) else {
        return;
    };
    let labelled: Vec<String> = cfg
        .roles
        .iter()
        .enumerate()
        .filter(|(_, r)| **r != Role::Raw)
        .map(|(i, _)| nmem(i))
        .collect();
    if labelled.is_empty() {
        return;
    }
    let Some(()) = rec.run("initialize labels", |d| ensure_labels(&labelled, d)) else {
        return;
    };
    let Some(listing) = rec.run("map NVDIMMs to regions", |d| {
        let (out, listing) = ndctl::list_all(NDCTL_TIMEOUT);
        let listing =
            listing.map_err(|e| StepFailure::with_detail(format!("{e:#}"), out.to_string()))?;
        for (i, role) in cfg.roles.iter().enumerate() {
            let dimm = nmem(i);
            match listing.region_of_dimm(&dimm) {
                Some(r) => d.push_str(&format!("{dimm} -> {} ({role})\n", r.dev)),
                None => {
                    return Err(StepFailure::with_detail(
                        format!("no region maps {dimm} (the {role} NVDIMM)"),
                        out.to_string(),
                    ))
                }
            }
        }
        Ok(listing)
    }) else {
        return;
    };

    // Each NVDIMM is set up on its own thread: namespace creation and mkfs dominate bring-up
    // under TCG, and the regions are independent. Steps and results are merged in role order.
    let jobs: Vec<(Role, String)> = cfg
        .roles
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, role)| role.namespace_mode().is_some())
        .map(|(i, role)| {
            let region = listing
                .region_of_dimm(&nmem(i))
                .expect("checked while mapping")
                .dev
                .clone();
            (role, region)
        })
        .collect();
    let done: Vec<(Recorder, Topology)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(role, region)| {
                s.spawn(move || {
                    let mut r = Recorder::new("bringup");
                    let mut t = Topology::default();
                    set_up_role(cfg, *role, region, &mut r, &mut t);
                    (r, t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bring-up thread"))
            .collect()
    });
    for (r, t) in done {
        rec.steps.extend(r.steps);
        if rec.error.is_none() {
            rec.error = r.error;
        }
        topo.fs.extend(t.fs);
        topo.devdax.extend(t.devdax);
    }
}

fn set_up_role(
    cfg: &BootConfig,
    role: Role,
    region: &str,
    rec: &mut Recorder,
    topo: &mut Topology,
) {
    let mode = role
        .namespace_mode()
        .expect("only roles with a namespace mode");
    let align = (role == Role::Devdax).then_some(cfg.devdax_align);
    let Some(ns) = rec.run(format!("create-namespace for {role} on {region}"), |d| {
        create_namespace(region, mode, align, d)
    }) else {
        return;
    };
    if role == Role::Devdax {
        set_up_devdax(region, &ns, cfg.devdax_align, rec, topo);
    } else {
        set_up_fs(role, region, &ns, rec, topo);
    }
}

fn wait_for_dimms(n: usize, wait: Duration, d: &mut String) -> Result<(), StepFailure> {
    let start = Instant::now();
    loop {
        let (out, listing) = ndctl::list_all(NDCTL_TIMEOUT);
        let missing: Vec<String> = match &listing {
            Ok(l) => (0..n)
                .map(nmem)
                .filter(|m| !l.has_dimm(m) || l.region_of_dimm(m).is_none())
                .collect(),
            Err(_) => (0..n).map(nmem).collect(),
        };
        if missing.is_empty() {
            d.push_str(&format!(
                "{n} DIMMs with regions after {} ms",
                start.elapsed().as_millis()
            ));
            return Ok(());
        }
        if out.spawn_error.is_some() || start.elapsed() >= wait {
            let seen = listing.as_ref().map(|l| l.dimms.len()).unwrap_or(0);
            return Err(StepFailure::with_detail(
                format!(
                    "ndctl sees {seen} of {n} DIMMs (missing or without region: {}) after {} s \
                     (is the nfit module loaded, and does QEMU run with -machine nvdimm=on and \
                     one nvdimm device per role?){}",
                    missing.join(","),
                    wait.as_secs(),
                    out.spawn_error
                        .as_ref()
                        .map(|e| format!("; ndctl: {e}"))
                        .unwrap_or_default()
                ),
                out.to_string(),
            ));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Fresh QEMU label areas are blank, which leaves regions label-less (one raw namespace,
/// no way to create fsdax/devdax): write empty label indexes where they are missing.
fn ensure_labels(dimms: &[String], d: &mut String) -> Result<(), StepFailure> {
    let mut blank = Vec::new();
    for dimm in dimms {
        let out = ndctl::run(&["check-labels", dimm], NDCTL_TIMEOUT);
        if out.spawn_error.is_some() {
            return Err(StepFailure::command(&out));
        }
        if !out.success() {
            blank.push(dimm.as_str());
        }
    }
    if blank.is_empty() {
        d.push_str(&format!("labels already valid on {}", dimms.join(",")));
        return Ok(());
    }
    let mut log = Vec::<CmdOutput>::new();
    let disable = ndctl::run(&["disable-region", "all"], NDCTL_TIMEOUT);
    let disabled = disable.success();
    log.push(disable);
    let mut init_args = vec!["init-labels"];
    init_args.extend(blank.iter().copied());
    let init = if disabled {
        Some(ndctl::run(&init_args, NDCTL_TIMEOUT))
    } else {
        None
    };
    // Re-enable whatever happened, so a failure leaves the regions as they were.
    let enable = ndctl::run(&["enable-region", "all"], NDCTL_TIMEOUT);
    let record = |log: &[CmdOutput], extra: &[&CmdOutput]| {
        log.iter()
            .chain(extra.iter().copied())
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    if !disabled {
        return Err(StepFailure::with_detail(
            format!("ndctl disable-region all: {}", log[0].failure_reason()),
            record(&log, &[&enable]),
        ));
    }
    let init = init.expect("ran when disabled");
    if !init.success() {
        return Err(StepFailure::with_detail(
            format!(
                "ndctl init-labels {}: {} (does each QEMU nvdimm have a label area, label-size=128K or more?)",
                blank.join(" "),
                init.failure_reason()
            ),
            record(&log, &[&init, &enable]),
        ));
    }
    if !enable.success() {
        return Err(StepFailure::with_detail(
            format!("ndctl enable-region all: {}", enable.failure_reason()),
            record(&log, &[&init, &enable]),
        ));
    }
    d.push_str(&format!("initialized labels on {}", blank.join(",")));
    Ok(())
}

/// Makes `region` hold one enabled namespace in `mode`, reusing or reconfiguring what is
/// there; returns it as a fresh `ndctl list` shows it (exact sizes, device names).
fn create_namespace(
    region: &str,
    mode: &str,
    align: Option<u64>,
    d: &mut String,
) -> Result<Namespace, StepFailure> {
    let (out, listing) = ndctl::list_all(NDCTL_TIMEOUT);
    let listing =
        listing.map_err(|e| StepFailure::with_detail(format!("{e:#}"), out.to_string()))?;
    let existing: Vec<Namespace> = listing
        .region(region)
        .map(|r| r.configured_namespaces().cloned().collect())
        .unwrap_or_default();
    let fits = |ns: &Namespace| {
        ns.mode() == mode && ns.is_enabled() && align.is_none_or(|a| ns.align() == Some(a))
    };
    let align_arg = align.map(|a| a.to_string());
    let dev = if let Some(ns) = existing.iter().find(|ns| fits(ns)) {
        d.push_str(&format!("reusing {} ({mode})\n", ns.dev));
        ns.dev.clone()
    } else {
        let mut args: Vec<&str> = vec!["create-namespace", "-m", mode];
        match existing.first() {
            Some(old) => {
                d.push_str(&format!(
                    "reconfiguring {} from {} to {mode}\n",
                    old.dev,
                    old.mode()
                ));
                args.extend(["-f", "-e", old.dev.as_str()]);
            }
            None => args.extend(["-r", region]),
        }
        if let Some(a) = &align_arg {
            args.extend(["-a", a.as_str()]);
        }
        let mut out = ndctl::run(&args, NDCTL_TIMEOUT);
        if !out.success() && out.output().contains("misaligned to 16M") && !args.contains(&"-f") {
            // ndctl wants 16M for cross-arch compatibility; x86 kernels need 2M (subsection)
            // alignment, which -f lets through. Less than that cannot work at all.
            let start = region_start(region);
            if start.is_some_and(|s| s % (2 << 20) != 0) {
                return Err(StepFailure::with_detail(
                    format!(
                        "{region} starts at {:#x}, not 2 MiB aligned, so no DAX namespace can live there \
                         (QEMU placed the NVDIMM right after the previous one's visible size, which is the \
                         memory backend size minus label-size: give each backend size + label-size)",
                        start.unwrap_or(0)
                    ),
                    out.to_string(),
                ));
            }
            d.push_str(&format!(
                "{region} starts off 16M but on 2M; retrying with -f\n"
            ));
            args.push("-f");
            out = ndctl::run(&args, NDCTL_TIMEOUT);
        }
        if !out.success() {
            return Err(StepFailure::command(&out));
        }
        let ns = ndctl::parse_created_namespace(&out.stdout)
            .map_err(|e| StepFailure::with_detail(format!("{e:#}"), out.to_string()))?;
        d.push_str(&format!("$ {}\n{}\n", out.argv, out.stdout.trim()));
        ns.dev
    };
    let (out, listing) = ndctl::list_all(NDCTL_TIMEOUT);
    let listing: Listing =
        listing.map_err(|e| StepFailure::with_detail(format!("{e:#}"), out.to_string()))?;
    let ns = listing
        .region(region)
        .and_then(|r| r.namespaces.iter().find(|n| n.dev == dev))
        .cloned()
        .ok_or_else(|| {
            StepFailure::with_detail(
                format!("{dev} vanished from ndctl list after creation"),
                out.to_string(),
            )
        })?;
    let node = match mode {
        "devdax" => ns.chardev().map(|c| format!("/dev/{c}")),
        _ => ns.blockdev.as_ref().map(|b| format!("/dev/{b}")),
    }
    .ok_or_else(|| {
        StepFailure::with_detail(
            format!("{dev} in {mode} mode has no device"),
            out.to_string(),
        )
    })?;
    wait_for_node(Path::new(&node))?;
    d.push_str(&format!("{dev} ready as {node}"));
    Ok(ns)
}

/// Physical start of a region, from sysfs.
fn region_start(region: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/sys/bus/nd/devices/{region}/resource")).ok()?;
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn wait_for_node(node: &Path) -> Result<(), StepFailure> {
    let start = Instant::now();
    while !node.exists() {
        if start.elapsed() >= DEVICE_NODE_WAIT {
            return Err(StepFailure::new(format!(
                "{} did not appear within {} s (is devtmpfs mounted on /dev?)",
                node.display(),
                DEVICE_NODE_WAIT.as_secs()
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn set_up_fs(
    role: Role,
    region: &str,
    ns: &Namespace,
    rec: &mut Recorder,
    topo: &mut Topology,
) -> bool {
    let mountpoint = role.mountpoint().expect("fs role");
    let option = role.dax_mount_option().expect("fs role");
    let blockdev = format!(
        "/dev/{}",
        ns.blockdev.as_deref().expect("checked at creation")
    );
    topo.fs.push(FsMount {
        role,
        region: region.to_string(),
        namespace: ns.dev.clone(),
        blockdev: blockdev.clone(),
        mountpoint: mountpoint.to_string(),
        dax: false,
    });
    // An NVDIMM image saved after a first bring-up (the controller's golden set) already
    // holds the file system: mounting it as is saves mkfs, the slowest step under TCG.
    if has_fs(role, &blockdev) && !is_mounted(mountpoint) {
        let reused = rec.run(format!("reuse {role} on {blockdev}"), |d| {
            std::fs::create_dir_all(mountpoint)
                .map_err(|e| StepFailure::new(format!("mkdir {mountpoint}: {e}")))?;
            mounts::mount(&blockdev, mountpoint, role.as_str(), option)
                .map_err(|e| StepFailure::new(format!("mount(2) of {blockdev}: {e}")))?;
            d.push_str(&format!("mounted the existing {role} with -o {option}"));
            Ok(())
        });
        if reused.is_some() {
            let dax = rec.run(format!("verify DAX on {mountpoint}"), |d| {
                verify_fs_dax(mountpoint, d)
            });
            if let (Some(dax), Some(entry)) = (dax, topo.fs.last_mut()) {
                entry.dax = dax;
            }
            return dax.is_some();
        }
        // A failed reuse is not final: forget it and make a fresh file system.
        rec.error = None;
        rec.steps.retain(|s| !s.name.starts_with("reuse "));
    }
    let mkfs = match role {
        Role::Ext4 => "mkfs.ext4",
        _ => "mkfs.xfs",
    };
    let made = rec.run(format!("{mkfs} {blockdev}"), |d| {
        // A repeated bring-up finds the old filesystem mounted.
        if let Ok(table) = mounts::read() {
            for m in table
                .iter()
                .rev()
                .filter(|m| m.target == mountpoint || m.source == blockdev)
            {
                mounts::umount(&m.target).map_err(|e| {
                    StepFailure::new(format!(
                        "{} is mounted on {} and umount failed: {e}",
                        m.source, m.target
                    ))
                })?;
                d.push_str(&format!("unmounted old {}\n", m.target));
            }
        }
        let out = make_fs(role, &blockdev);
        if !out.success() {
            return Err(StepFailure::command(&out));
        }
        d.push_str(&format!("$ {}", out.argv));
        Ok(())
    });
    if made.is_none() {
        return false;
    }
    let mounted = rec.run(format!("mount {mountpoint} -o {option}"), |d| {
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| StepFailure::new(format!("mkdir {mountpoint}: {e}")))?;
        mounts::mount(&blockdev, mountpoint, role.as_str(), option).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENODEV) => format!(" (is the {role} module loaded?)"),
                Some(libc::EINVAL) => {
                    " (see the kernel log in the step detail: does the device support DAX?)"
                        .to_string()
                }
                Some(libc::ENOENT) | Some(libc::ENXIO) => format!(" (is {blockdev} there?)"),
                _ => String::new(),
            };
            StepFailure::with_detail(
                format!("mount(2) of {blockdev} ({role}, {option}): {e}{hint}"),
                format!(
                    "mount -t {role} -o {option} {blockdev} {mountpoint}: {e}\nkernel log:\n{}",
                    kmsg::tail(15)
                ),
            )
        })?;
        d.push_str(&format!(
            "mount -t {role} -o {option} {blockdev} {mountpoint}"
        ));
        Ok(())
    });
    if mounted.is_none() {
        return false;
    }
    let dax = rec.run(format!("verify DAX on {mountpoint}"), |d| {
        verify_fs_dax(mountpoint, d)
    });
    if let (Some(dax), Some(entry)) = (dax, topo.fs.last_mut()) {
        entry.dax = dax;
    }
    dax.is_some()
}

fn is_mounted(mountpoint: &str) -> bool {
    mounts::read()
        .map(|t| t.iter().any(|m| m.target == mountpoint))
        .unwrap_or(false)
}

/// Whether `blockdev` starts with the superblock of `role`'s file system.
fn has_fs(role: Role, blockdev: &str) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 1082];
    let read = std::fs::File::open(blockdev).and_then(|mut f| f.read_exact(&mut buf));
    read.is_ok() && superblock_matches(role, &buf)
}

/// ext4: magic 0xEF53 at byte 1080; xfs: "XFSB" at byte 0.
fn superblock_matches(role: Role, head: &[u8]) -> bool {
    match role {
        Role::Ext4 => head.get(1080..1082) == Some(&[0x53, 0xEF][..]),
        Role::Xfs => head.get(..4) == Some(&b"XFSB"[..]),
        _ => false,
    }
}

/// Makes a fresh filesystem for `role` on `blockdev`, as DAX needs it.
pub fn make_fs(role: Role, blockdev: &str) -> CmdOutput {
    match role {
        // 4 KiB blocks always: DAX needs block size == page size, and mke2fs would pick
        // 1 KiB on small devices.
        Role::Ext4 => command::run(
            "mkfs.ext4",
            &["-F", "-q", "-b", "4096", blockdev],
            MKFS_TIMEOUT,
        ),
        // Reflink and DAX exclude each other on the kernels under test.
        _ => command::run(
            "mkfs.xfs",
            &["-f", "-q", "-m", "reflink=0", blockdev],
            MKFS_TIMEOUT,
        ),
    }
}

/// Shared by bring-up and status: a fresh file on the mount must be DAX.
pub fn verify_fs_dax(mountpoint: &str, d: &mut String) -> Result<bool, StepFailure> {
    let p = probe::probe_file(Path::new(mountpoint)).map_err(StepFailure::new)?;
    if !p.dax {
        return Err(StepFailure::with_detail(
            format!(
                "a fresh file on {mountpoint} lacks STATX_ATTR_DAX (the filesystem {} the DAX attribute)",
                if p.dax_reported { "reports" } else { "does not even report" }
            ),
            format!("statx attributes_mask has DAX: {}\nkernel log:\n{}", p.dax_reported, kmsg::tail(10)),
        ));
    }
    d.push_str("fresh file has STATX_ATTR_DAX");
    Ok(true)
}

fn set_up_devdax(
    region: &str,
    ns: &Namespace,
    align: u64,
    rec: &mut Recorder,
    topo: &mut Topology,
) -> bool {
    let chardev = format!("/dev/{}", ns.chardev().expect("checked at creation"));
    let align = ns.align().unwrap_or(align);
    topo.devdax.push(DevDax {
        region: region.to_string(),
        namespace: ns.dev.clone(),
        chardev: chardev.clone(),
        align,
        size: ns.size_bytes().unwrap_or(0),
    });
    rec.run(format!("verify {chardev}"), |d| {
        verify_devdax(&chardev, align, d)
    })
    .is_some()
}

/// Shared by bring-up and status: the character device exists and one aligned piece maps.
pub fn verify_devdax(chardev: &str, align: u64, d: &mut String) -> Result<(), StepFailure> {
    probe::probe_chardev(Path::new(chardev), align).map_err(StepFailure::new)?;
    d.push_str(&format!(
        "{chardev} is a character device; {align} bytes map and read"
    ));
    Ok(())
}

#[cfg(test)]
mod superblock_tests {
    use super::*;

    #[test]
    fn superblock_magic_is_told_apart() {
        let mut ext4 = vec![0u8; 1082];
        ext4[1080] = 0x53;
        ext4[1081] = 0xEF;
        let mut xfs = vec![0u8; 1082];
        xfs[..4].copy_from_slice(b"XFSB");
        assert!(superblock_matches(Role::Ext4, &ext4));
        assert!(!superblock_matches(Role::Xfs, &ext4));
        assert!(superblock_matches(Role::Xfs, &xfs));
        assert!(!superblock_matches(Role::Ext4, &xfs));
        assert!(!superblock_matches(Role::Ext4, &[0u8; 1082]));
    }
}
