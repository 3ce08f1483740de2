//! The QEMU command line each kernel's guest ran with (`qemu.txt` beside the reproducer), with
//! this machine's paths replaced by names a reader substitutes, and the NVDIMM options named.

use std::fmt::Write;
use std::path::PathBuf;

use crate::images::Kernel;
use crate::vm::{profile::BootFiles, Accel, MachineProfile};

pub const QEMU_FILE: &str = "qemu.txt";

/// Placeholder files: relative names, so nothing of this machine leaks into a report.
fn files(kernel: &Kernel, profile: &MachineProfile, accel: Accel) -> BootFiles {
    BootFiles {
        qemu: "qemu-system-x86_64".into(),
        kernel: PathBuf::from(format!("vmlinuz-{}", kernel.release)),
        initramfs: "initramfs.cpio".into(),
        nvdimm_files: (0..profile.nvdimms.len())
            .map(|i| PathBuf::from(format!("nvdimm{i}.img")))
            .collect(),
        scratch_file: profile.scratch_disk.map(|_| PathBuf::from("scratch.img")),
        nodax_file: profile.slow_disks.map(|_| PathBuf::from("nodax.img")),
        qmp_socket: "qmp.sock".into(),
        ssh_port: 10022,
        ssh_pubkey: "SSH_PUBKEY".into(),
        accel,
        bare: false,
    }
}

/// `qemu.txt`: what to substitute, the NVDIMM options, and one command line per kernel.
pub fn render(kernels: [(&str, &Kernel); 2], profile: &MachineProfile, accel: Accel) -> String {
    let mut s = String::new();
    s.push_str(
        "# The QEMU command lines daxdiff booted each kernel with. Substitute:\n\
         #   vmlinuz-<release>  the kernel image (Debian: /boot/vmlinuz-<release> of its package)\n\
         #   initramfs.cpio     daxdiff's guest (ndctl, mkfs, sshd; daxdiff.* on the command line\n\
         #                      drive its DAX bring-up), or drop -initrd and boot your own root\n\
         #   nvdimmN.img        sparse NVDIMM backing files, created empty:\n",
    );
    for (i, n) in profile.nvdimms.iter().enumerate() {
        let _ = writeln!(
            s,
            "#                        truncate -s {} nvdimm{i}.img",
            n.backend_size()
        );
    }
    if let Some(d) = &profile.slow_disks {
        let _ = writeln!(
            s,
            "#   nodax.img          the non-DAX ext4 disk, created empty: truncate -s {} nodax.img\n\
             #                      (the guest makes ext4 on it and puts a {} ms dm-delay in front)",
            d.fs_size, d.delay_ms
        );
    }
    s.push_str(
        "#   SSH_PUBKEY         an ed25519 public key (base64) for daxdiff's guest\n\
         # The NVDIMM options: -machine pc,nvdimm=on, -m with slots= and maxmem=, and per NVDIMM\n\
         # a memory-backend-file (share=on) with an nvdimm device and its label area:\n",
    );
    let args = profile.qemu_args(&files(kernels[0].1, profile, accel));
    for w in args.windows(2) {
        let nvdimm = (w[0] == "-object" && w[1].starts_with("memory-backend-file"))
            || (w[0] == "-device" && w[1].starts_with("nvdimm,"))
            || (w[0] == "-machine" && w[1].contains("nvdimm"))
            || (w[0] == "-m" && w[1].contains("slots="));
        if nvdimm {
            let _ = writeln!(s, "#   {} {}", w[0], w[1]);
        }
    }
    s.push_str(
        "# In the guest the NVDIMMs become, in order: an fsdax namespace with ext4 (-o dax), an\n\
         # fsdax one with xfs (-m reflink=0, -o dax=always) and a devdax one (setup.sh does the\n\
         # same on any machine).\n",
    );
    if accel == Accel::Tcg {
        s.push_str("# TCG here; with KVM use -accel kvm -cpu host.\n");
    }
    for (tag, k) in kernels {
        let _ = writeln!(s, "\n# {tag}: {} (Linux {})", k.name, k.release);
        let _ = writeln!(s, "{}", profile.shell_command(&files(k, profile, accel)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{KernelName, Scheme};

    fn kernel(name: &str, release: &str) -> Kernel {
        Kernel {
            name: KernelName::from(name),
            version: format!("{release}-1"),
            release: release.into(),
            scheme: Scheme::Old,
            bzimage: PathBuf::from("/home/someone/.cache/daxdiff/kernels/x/vmlinuz"),
            modules_root: None,
            config: None,
            vmlinux: None,
            packages: Vec::new(),
        }
    }

    #[test]
    fn names_the_nvdimm_options_and_no_path_of_this_machine() {
        let (a, b) = (
            kernel("debian-6.12", "6.12.117+deb12-amd64"),
            kernel("debian-7.3", "7.3.1+deb13-amd64"),
        );
        let profile = MachineProfile::default();
        let s = render([("A", &a), ("B", &b)], &profile, Accel::Tcg);
        let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.iter().filter(|l| !l.is_empty()).count(), 2, "{s}");
        let cmd_a = lines
            .iter()
            .find(|l| l.contains("vmlinuz-6.12.117+deb12-amd64"))
            .unwrap();
        assert!(cmd_a.starts_with("qemu-system-x86_64 "), "{s}");
        assert!(cmd_a.contains("-machine pc,nvdimm=on"), "{s}");
        assert!(
            cmd_a.contains("-object memory-backend-file,id=nvmem0,share=on,mem-path=nvdimm0.img,"),
            "{s}"
        );
        assert!(
            cmd_a.contains("-device nvdimm,id=nvdimm2,memdev=nvmem2,label-size="),
            "{s}"
        );
        assert!(
            s.contains("#   -device nvdimm,id=nvdimm0,memdev=nvmem0,label-size="),
            "{s}"
        );
        assert!(s.contains("truncate -s "), "{s}");
        assert!(
            s.contains("\n# B: debian-7.3 (Linux 7.3.1+deb13-amd64)\n"),
            "{s}"
        );
        assert!(!s.contains(".cache") && !s.contains("/tmp"), "{s}");
        assert!(cmd_a.contains("file=nodax.img,"), "{s}");
        assert!(s.contains("truncate -s 67108864 nodax.img"), "{s}");
    }
}
