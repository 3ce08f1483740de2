//! The machine a guest runs on (memory, CPUs, NVDIMMs and what each is for) and the QEMU
//! command line built from it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// What the guest's bring-up does with an NVDIMM (the role travels on the kernel command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// fsdax namespace, ext4 mounted with `-o dax` at /mnt/ext4.
    Ext4,
    /// fsdax namespace, xfs (reflink off) mounted with `-o dax=always` at /mnt/xfs.
    Xfs,
    /// devdax namespace, /dev/daxX.Y.
    Devdax,
    /// left alone (for tests that lay out namespaces themselves).
    Raw,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Ext4 => "ext4",
            Role::Xfs => "xfs",
            Role::Devdax => "devdax",
            Role::Raw => "raw",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nvdimm {
    pub size: u64,
    pub label_size: u64,
    pub role: Role,
}

impl Nvdimm {
    /// Bytes of the backing file: the pmem the guest sees plus the label area.
    pub fn backend_size(&self) -> u64 {
        self.size + self.label_size
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Legacy e820 pmem carved out of guest RAM with `memmap=SIZE!START`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyPmem {
    pub size: u64,
    pub start: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineProfile {
    pub memory: u64,
    pub cpus: u32,
    pub nvdimms: Vec<Nvdimm>,
    pub legacy_pmem: Option<LegacyPmem>,
    /// Extra kernel command line words.
    pub cmdline: Vec<String>,
    /// A blank virtio disk of this size (serial `daxdiff-scratch`) for a guest that needs a
    /// block-backed file system for its work files (O_DIRECT, which tmpfs refuses before
    /// Linux 6.6).
    pub scratch_disk: Option<u64>,
    /// Non-DAX targets of direct I/O whose requests stay in flight (see [`SlowDisks`]).
    #[serde(default)]
    pub slow_disks: Option<SlowDisks>,
}

/// Two virtio disks for O_DIRECT I/O that pins a DAX buffer while the DAX file changes under
/// it: one holds an ext4 without DAX (serial `daxdiff-nodax`, mounted at /mnt/nodax over a
/// dm-delay device the guest makes), the other is a raw block device with no data behind it
/// (serial `daxdiff-blk`: QEMU's null-co driver, reads return zeros, writes vanish).
///
/// Every request on either takes `delay_ms` (dm-delay in the guest; null-co's latency in
/// QEMU), whatever its size and whatever came before it. QEMU's I/O throttling does not do
/// that: its leaky bucket lets a request through at once when the bucket is empty and only
/// delays the ones after, so a lone 64 KiB read was not held at all, while a 2 MiB one
/// was held in proportion to its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowDisks {
    pub fs_size: u64,
    pub raw_size: u64,
    pub delay_ms: u32,
}

/// The fuzzing guest's slow disks: 64 MiB each, 500 ms a request.
pub const SLOW_DISKS: SlowDisks = SlowDisks {
    fs_size: 64 * MIB,
    raw_size: 64 * MIB,
    delay_ms: 500,
};

impl Default for MachineProfile {
    /// Three 1 GiB NVDIMMs: fsdax for ext4, fsdax for xfs, devdax.
    fn default() -> Self {
        let dimm = |role| Nvdimm {
            size: GIB,
            label_size: 128 * 1024,
            role,
        };
        MachineProfile {
            memory: 2 * GIB,
            cpus: 2,
            nvdimms: vec![dimm(Role::Ext4), dimm(Role::Xfs), dimm(Role::Devdax)],
            legacy_pmem: None,
            cmdline: vec![],
            scratch_disk: None,
            slow_disks: Some(SLOW_DISKS),
        }
    }
}

/// Everything one boot needs besides the profile.
#[derive(Clone, Debug)]
pub struct BootFiles {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// One backing file per NVDIMM, in profile order.
    pub nvdimm_files: Vec<PathBuf>,
    /// Backing file of the profile's scratch disk.
    pub scratch_file: Option<PathBuf>,
    /// Backing file of the slow disks' ext4 disk.
    pub nodax_file: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    pub ssh_port: u16,
    /// The guest's authorized key (base64 of the ed25519 public key blob).
    pub ssh_pubkey: String,
    pub accel: Accel,
    /// Boot only to init and power off (the bare-boot floor of the boot benchmark).
    pub bare: bool,
}

impl MachineProfile {
    pub fn kernel_cmdline(&self, files: &BootFiles) -> String {
        let mut words: Vec<String> = vec![
            "console=ttyS0,115200".into(),
            "panic=-1".into(),
            "nokaslr".into(),
            "mitigations=off".into(),
            "printk.time=1".into(),
            format!(
                "daxdiff.pmem={}",
                self.nvdimms
                    .iter()
                    .map(|n| n.role.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("daxdiff.sshkey={}", files.ssh_pubkey),
        ];
        if let Some(l) = &self.legacy_pmem {
            words.push(format!("memmap={}M!{}M", l.size / MIB, l.start / MIB));
        }
        if let Some(d) = &self.slow_disks {
            words.push(format!("daxdiff.nodax_delay_ms={}", d.delay_ms));
        }
        if files.bare {
            words.push("daxdiff.bare=1".into());
        }
        words.extend(self.cmdline.iter().cloned());
        words.join(" ")
    }

    /// The QEMU argument vector (program not included).
    pub fn qemu_args(&self, files: &BootFiles) -> Vec<String> {
        assert_eq!(
            files.nvdimm_files.len(),
            self.nvdimms.len(),
            "one backing file per NVDIMM"
        );
        // Room for every DIMM rounded up to 1 GiB, plus 1 GiB of slack for QEMU's placement.
        let dimm_total: u64 = self
            .nvdimms
            .iter()
            .map(|n| n.backend_size().div_ceil(GIB) * GIB)
            .sum::<u64>()
            + GIB;
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
        ]);
        push(&[
            "-machine",
            if self.nvdimms.is_empty() {
                "pc"
            } else {
                "pc,nvdimm=on"
            },
        ]);
        match files.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            // The default TCG CPU model lacks what crc32c needs; ext4/xfs mounts then fail.
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        }
        let mem = if self.nvdimms.is_empty() {
            format!("{}M", self.memory / MIB)
        } else {
            format!(
                "{}M,slots={},maxmem={}M",
                self.memory / MIB,
                self.nvdimms.len(),
                (self.memory + dimm_total) / MIB
            )
        };
        let smp = self.cpus.to_string();
        push(&["-m", &mem, "-smp", &smp]);
        for (i, (n, f)) in self.nvdimms.iter().zip(&files.nvdimm_files).enumerate() {
            // QEMU keeps the label area at the end of the backend and maps the rest as pmem:
            // sizing the backend as pmem + labels keeps every DIMM's region 1 GiB aligned
            // (a region left misaligned makes namespace creation fail in the guest).
            let obj = format!(
                "memory-backend-file,id=nvmem{i},share=on,mem-path={},size={}",
                opt_value(f),
                n.backend_size()
            );
            let dev = format!(
                "nvdimm,id=nvdimm{i},memdev=nvmem{i},label-size={}K",
                n.label_size / 1024
            );
            push(&["-object", &obj, "-device", &dev]);
        }
        let net = format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22",
            files.ssh_port
        );
        if let Some(f) = &files.scratch_file {
            let drive = format!(
                "file={},format=raw,if=none,id=scratch,cache=unsafe",
                opt_value(f)
            );
            push(&[
                "-drive",
                &drive,
                "-device",
                "virtio-blk-pci,drive=scratch,serial=daxdiff-scratch",
            ]);
        }
        if let Some(d) = &self.slow_disks {
            if let Some(f) = &files.nodax_file {
                let drive = format!(
                    "file={},format=raw,if=none,id=nodax,cache=unsafe",
                    opt_value(f)
                );
                push(&[
                    "-drive",
                    &drive,
                    "-device",
                    "virtio-blk-pci,drive=nodax,serial=daxdiff-nodax",
                ]);
            }
            let blk = format!(
                "driver=null-co,size={},read-zeroes=on,latency-ns={},if=none,id=blk",
                d.raw_size,
                u64::from(d.delay_ms) * 1_000_000
            );
            push(&[
                "-drive",
                &blk,
                "-device",
                "virtio-blk-pci,drive=blk,serial=daxdiff-blk",
            ]);
        }
        push(&["-netdev", &net, "-device", "virtio-net-pci,netdev=net0"]);
        push(&["-serial", "stdio"]);
        // What `-qmp unix:<path>,…` stands for, spelled out: in that short form the path is
        // an unnamed first option, which QEMU splits at an `=` in it.
        let qmp = format!(
            "socket,id=qmp,path={},server=on,wait=off",
            opt_value(&files.qmp_socket)
        );
        push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
        let kernel = files.kernel.display().to_string();
        let initrd = files.initramfs.display().to_string();
        let cmdline = self.kernel_cmdline(files);
        push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &cmdline]);
        a
    }

    /// The command line as a user would paste it into a shell.
    pub fn shell_command(&self, files: &BootFiles) -> String {
        std::iter::once(files.qemu.display().to_string())
            .chain(self.qemu_args(files))
            .map(|w| shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A path as the value of a QEMU `key=value,…` option string, where a comma ends the value
/// unless doubled: a run directory with a comma in its name must not add options.
/// (`-kernel`, `-initrd` and `-append` take their argument whole and need no escaping.)
fn opt_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// QEMU's x86 system emulator: `$DAXDIFF_QEMU` or `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf, String> {
    find_qemu_in(
        std::env::var_os("DAXDIFF_QEMU").map(PathBuf::from),
        &std::env::var("PATH").unwrap_or_default(),
    )
}

/// Looks for QEMU in an explicit override, else in the directories of `path`.
pub fn find_qemu_in(explicit: Option<PathBuf>, path: &str) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "DAXDIFF_QEMU={} is not an executable file",
                p.display()
            ))
        };
    }
    for dir in std::env::split_paths(path) {
        let p = dir.join("qemu-system-x86_64");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err("qemu-system-x86_64 not found on PATH; install it with `apt-get install --no-install-recommends qemu-system-x86` (or run ci/setup.sh), or set DAXDIFF_QEMU".into())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BootFiles {
        BootFiles {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/c/vmlinuz".into(),
            initramfs: "/c/initramfs.cpio".into(),
            nvdimm_files: vec!["/r/nv0".into(), "/r/nv1".into(), "/r/nv2".into()],
            scratch_file: None,
            nodax_file: Some("/r/nodax.img".into()),
            qmp_socket: "/r/qmp.sock".into(),
            ssh_port: 40022,
            ssh_pubkey: "AAAAC3Nza".into(),
            accel: Accel::Tcg,
            bare: false,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn default_profile_has_three_nvdimms_with_labels() {
        let args = MachineProfile::default().qemu_args(&files());
        assert_eq!(after(&args, "-machine"), ["pc,nvdimm=on"]);
        let devs = after(&args, "-device");
        assert_eq!(
            devs.iter()
                .filter(|d| d.starts_with("nvdimm,") && d.contains("label-size=128K"))
                .count(),
            3
        );
        let objs = after(&args, "-object");
        assert!(objs[1].contains("mem-path=/r/nv1") && objs[1].contains("share=on"));
        // 1 GiB of pmem plus the 128 KiB label area.
        assert!(
            objs[1].ends_with(&format!("size={}", GIB + 128 * 1024)),
            "{}",
            objs[1]
        );
        // maxmem covers RAM and every NVDIMM, with a slot for each.
        let maxmem = (2 * GIB + 3 * 2 * GIB + GIB) / MIB;
        assert_eq!(
            after(&args, "-m"),
            [format!("2048M,slots=3,maxmem={maxmem}M")]
        );
    }

    #[test]
    fn network_stays_on_loopback() {
        let args = MachineProfile::default().qemu_args(&files());
        let net = after(&args, "-netdev")[0];
        assert!(net.contains("restrict=on"), "{net}");
        assert!(net.contains("hostfwd=tcp:127.0.0.1:40022-:22"), "{net}");
        assert!(
            args.iter().any(|a| a == "-nodefaults"),
            "no default NIC sneaks in"
        );
    }

    #[test]
    fn tcg_uses_cpu_max_and_kvm_uses_host() {
        let args = MachineProfile::default().qemu_args(&files());
        assert_eq!(after(&args, "-cpu"), ["max"]);
        let mut f = files();
        f.accel = Accel::Kvm;
        let args = MachineProfile::default().qemu_args(&f);
        assert_eq!(after(&args, "-accel"), ["kvm"]);
        assert_eq!(after(&args, "-cpu"), ["host"]);
    }

    #[test]
    fn a_scratch_disk_is_a_virtio_disk_named_for_the_guest() {
        assert!(!MachineProfile::default()
            .qemu_args(&files())
            .iter()
            .any(|a| a.contains("scratch")));
        let mut f = files();
        f.scratch_file = Some("/r/scratch.img".into());
        let p = MachineProfile {
            slow_disks: None,
            ..MachineProfile::default()
        };
        let args = p.qemu_args(&f);
        assert_eq!(
            after(&args, "-drive"),
            ["file=/r/scratch.img,format=raw,if=none,id=scratch,cache=unsafe"]
        );
        assert!(after(&args, "-device")
            .contains(&"virtio-blk-pci,drive=scratch,serial=daxdiff-scratch"));
    }

    #[test]
    fn slow_disks_are_an_ext4_disk_and_a_null_device_with_latency() {
        let p = MachineProfile::default();
        let args = p.qemu_args(&files());
        let drives = after(&args, "-drive");
        assert!(drives.contains(&"file=/r/nodax.img,format=raw,if=none,id=nodax,cache=unsafe"));
        assert!(drives.contains(
            &"driver=null-co,size=67108864,read-zeroes=on,latency-ns=500000000,if=none,id=blk"
        ));
        let devs = after(&args, "-device");
        assert!(devs.contains(&"virtio-blk-pci,drive=nodax,serial=daxdiff-nodax"));
        assert!(devs.contains(&"virtio-blk-pci,drive=blk,serial=daxdiff-blk"));
        assert!(p
            .kernel_cmdline(&files())
            .contains("daxdiff.nodax_delay_ms=500"));
        let none = MachineProfile {
            slow_disks: None,
            ..MachineProfile::default()
        };
        let args = none.qemu_args(&files());
        assert!(!args
            .iter()
            .any(|a| a.contains("daxdiff-nodax") || a.contains("null-co")));
        assert!(!none.kernel_cmdline(&files()).contains("nodax"));
    }

    #[test]
    fn cmdline_carries_roles_key_console_and_legacy_pmem() {
        let p = MachineProfile {
            legacy_pmem: Some(LegacyPmem {
                size: 512 * MIB,
                start: 2 * GIB,
            }),
            ..MachineProfile::default()
        };
        let mut f = files();
        f.bare = true;
        let c = p.kernel_cmdline(&f);
        assert!(c.contains("console=ttyS0"), "{c}");
        assert!(c.contains("daxdiff.pmem=ext4,xfs,devdax"), "{c}");
        assert!(c.contains("daxdiff.sshkey=AAAAC3Nza"), "{c}");
        assert!(c.contains("memmap=512M!2048M"), "{c}");
        assert!(c.contains("daxdiff.bare=1"), "{c}");
        assert!(
            c.contains("panic=-1"),
            "a panic must end QEMU (with -no-reboot)"
        );
        let args = p.qemu_args(&f);
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert_eq!(
            after(&args, "-chardev"),
            ["socket,id=qmp,path=/r/qmp.sock,server=on,wait=off"]
        );
    }

    #[test]
    fn shell_command_quotes_the_append_string() {
        let s = MachineProfile::default().shell_command(&files());
        assert!(s.starts_with("qemu-system-x86_64 -nodefaults"));
        assert!(s.contains("-append 'console=ttyS0,115200 "), "{s}");
    }

    #[test]
    fn paths_with_commas_and_equals_stay_one_option_value() {
        let dir = "/runs/a=b,share=off,c";
        let mut f = files();
        f.nvdimm_files = (0..3).map(|i| format!("{dir}/nv{i}").into()).collect();
        f.scratch_file = Some(format!("{dir}/scratch.img").into());
        f.nodax_file = Some(format!("{dir}/nodax.img").into());
        f.qmp_socket = format!("{dir}/qmp.sock").into();
        let args = MachineProfile::default().qemu_args(&f);
        let esc = "/runs/a=b,,share=off,,c";
        assert_eq!(
            after(&args, "-object")[0],
            format!(
                "memory-backend-file,id=nvmem0,share=on,mem-path={esc}/nv0,size={}",
                GIB + 128 * 1024
            )
        );
        let drives = after(&args, "-drive");
        assert!(
            drives.contains(
                &format!("file={esc}/scratch.img,format=raw,if=none,id=scratch,cache=unsafe")
                    .as_str()
            ),
            "{drives:?}"
        );
        assert!(
            drives.contains(
                &format!("file={esc}/nodax.img,format=raw,if=none,id=nodax,cache=unsafe").as_str()
            ),
            "{drives:?}"
        );
        assert_eq!(
            after(&args, "-chardev"),
            [format!(
                "socket,id=qmp,path={esc}/qmp.sock,server=on,wait=off"
            )]
        );
        assert_eq!(after(&args, "-mon"), ["chardev=qmp,mode=control"]);
    }
}
