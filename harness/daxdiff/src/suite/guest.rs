//! The machine and image the dax suite runs on: the suite flavour of the guest image (its own
//! recipe and `/init`, ndctl's test build laid over it) and a QEMU profile with both kinds
//! of pmem the tests pick: a label-capable ACPI NVDIMM left raw and legacy e820 pmem.

use std::path::Path;

use anyhow::{bail, Result};

use super::ndctl::{NdctlBuild, GUEST_DIR};
use crate::images::guest::{Flavour, Overlay};
use crate::images::{GuestBuilder, GuestImage, Kernel, KernelStore};
use crate::setup::Env;
use crate::vm::profile::{LegacyPmem, Nvdimm, GIB, MIB};
use crate::vm::{accel, Accel, BootOptions, MachineProfile, Role, Vm};

pub const RECIPE: &str = include_str!("../../../../vm-images/suite/recipe.toml");
pub const INIT: &str = include_str!("../../../../vm-images/suite/init.sh");

pub fn flavour(ndctl: &NdctlBuild) -> Flavour {
    Flavour {
        name: "suite".into(),
        recipe: RECIPE.into(),
        init: INIT.into(),
        overlays: vec![Overlay {
            source: ndctl.tree.clone(),
            target: GUEST_DIR.trim_start_matches('/').into(),
            key: ndctl.key.clone(),
        }],
    }
}

/// 8 GiB of RAM of which legacy pmem takes [4 GiB, 8 GiB) (`memmap=4G!4G`), and one 6 GiB
/// NVDIMM with a label area. Sizes come from the tests: device-dax writes twice the
/// alignment through the fsdax device before mapping it as device-dax, 2 GiB at 1 GiB
/// alignment, after a 1 GiB-aligned data offset; dax-ext4.sh and mmap.sh fallocate 1 GiB on
/// the e820 namespace; daxctl-devices.sh carves a 4 GiB devdax namespace out of the ACPI
/// region and hot-plugs it as system RAM; dm.sh joins two 1 GiB namespaces.
pub fn profile() -> MachineProfile {
    MachineProfile {
        memory: 8 * GIB,
        cpus: 2,
        nvdimms: vec![Nvdimm {
            size: 6 * GIB,
            label_size: 128 * 1024,
            role: Role::Raw,
        }],
        legacy_pmem: Some(LegacyPmem {
            size: 4 * GIB,
            start: 4 * GIB,
        }),
        cmdline: vec![],
        // The tests' working directories: device-dax opens its data file O_DIRECT.
        scratch_disk: Some(SCRATCH_DISK),
        slow_disks: None,
    }
}

/// Size of the suite guest's scratch disk, formatted ext4 and mounted on /tmp by /init.
pub const SCRATCH_DISK: u64 = 512 * MIB;

/// A kernel with its suite image.
pub struct SuiteGuest {
    pub kernel: Kernel,
    pub image: GuestImage,
    pub accel: Accel,
}

impl SuiteGuest {
    /// Kernel `name` with its suite image, ready to boot.
    pub fn prepare(env: &Env, name: &str, ndctl: &NdctlBuild) -> Result<SuiteGuest> {
        let cat = env.catalogue()?;
        let entry = cat.get(name)?;
        let kernel = KernelStore::new(&env.cache).get(entry)?;
        if let Some(missing) = lacks_cgroups(&kernel) {
            bail!(
                "kernel {name} was built without cgroups ({missing}), and the suite guest's \
                 journald does not start without them (the tests read the kernel log through \
                 journalctl); rebuild it with `daxdiff kernel build … --fragment base \
                 --fragment dax --fragment debug --fragment suite`"
            );
        }
        let image = GuestBuilder::with_flavour(&env.cache, flavour(ndctl))?.build(&kernel)?;
        let accel = accel::choose(&env.cache, &kernel, &image)?;
        Ok(SuiteGuest {
            kernel,
            image,
            accel,
        })
    }

    /// Boots with [`profile`] and blank NVDIMMs (never saved images: /init lays out the
    /// starting state itself), console and run files in `run_dir`.
    pub fn boot(&self, run_dir: &Path) -> Result<Vm> {
        Vm::boot(
            &self.kernel,
            &self.image,
            BootOptions {
                profile: profile(),
                accel: self.accel,
                run_dir: Some(run_dir.to_path_buf()),
                nvdimm_images: None,
                timeout: crate::vm::DEFAULT_BOOT_TIMEOUT * slowdown(&self.kernel),
                ..BootOptions::default()
            },
        )
    }
}

/// `CONFIG_CGROUPS is not set` when the kernel's .config says so (a kernel without a known
/// .config is given the benefit of the doubt).
fn lacks_cgroups(kernel: &Kernel) -> Option<&'static str> {
    (kernel.config_enabled("CGROUPS") == Some(false)).then_some("CONFIG_CGROUPS is not set")
}

/// How many times the usual allowance a kernel gets, to boot and for each test. A KASAN
/// kernel under TCG is about three times slower: 110 s to /init measured on a loaded machine
/// against 30–40 s, and mmap.sh's ext4 half alone took 580 s on a 6.1 KASAN build, where
/// the whole test takes about 6 min on a Debian kernel.
pub fn slowdown(kernel: &Kernel) -> u32 {
    if kernel.config_enabled("KASAN") == Some(true) {
        3
    } else {
        1
    }
}

impl SuiteGuest {
    /// This guest's [`slowdown`].
    pub fn slowdown(&self) -> u32 {
        slowdown(&self.kernel)
    }
}

/// Whether the kernel has module `name` (built as a module or built in).
pub fn kernel_has_module(modules_dir: Option<&Path>, name: &str) -> bool {
    let Some(dir) = modules_dir else {
        return false;
    };
    let file = format!("/{}.ko", name.replace('-', "_"));
    ["modules.dep", "modules.builtin"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let path = l.split(':').next().unwrap_or("").replace('-', "_");
                path.ends_with(&file) || path.contains(&format!("{file}."))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::guest::Recipe;

    #[test]
    fn kasan_kernels_get_three_times_the_boot_allowance_and_cgroups_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config");
        let kernel = |config: Option<std::path::PathBuf>| Kernel {
            name: crate::catalogue::KernelName::from("k"),
            version: "local".into(),
            release: "6.1.192".into(),
            scheme: crate::catalogue::Scheme::Old,
            bzimage: "bzImage".into(),
            modules_root: None,
            config,
            vmlinux: None,
            packages: vec![],
        };
        std::fs::write(&config, "CONFIG_KCOV=y\nCONFIG_KASAN=y\n").unwrap();
        assert_eq!(slowdown(&kernel(Some(config.clone()))), 3);
        std::fs::write(&config, "# CONFIG_KASAN is not set\n").unwrap();
        assert_eq!(slowdown(&kernel(Some(config.clone()))), 1);
        assert_eq!(slowdown(&kernel(None)), 1);
        // The lean configuration has no cgroups; journald needs them.
        std::fs::write(&config, "# CONFIG_CGROUPS is not set\n").unwrap();
        assert!(lacks_cgroups(&kernel(Some(config.clone()))).is_some());
        std::fs::write(&config, "CONFIG_CGROUPS=y\n").unwrap();
        assert!(lacks_cgroups(&kernel(Some(config))).is_none());
        assert!(lacks_cgroups(&kernel(None)).is_none());
    }

    #[test]
    fn the_suite_recipe_has_what_the_tests_call() {
        let r = Recipe::parse(RECIPE).unwrap();
        assert!(r.module_tree, "the tests modprobe modules themselves");
        for p in [
            "bash",
            "jq",
            "trace-cmd",
            "fio",
            "dmsetup",
            "systemd",
            "e2fsprogs",
            "xfsprogs",
            "kmod",
            "util-linux",
            "coreutils",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        for m in ["nd_e820", "nfit", "kmem", "device_dax"] {
            assert!(r.modules.iter().any(|x| x == m), "{m}");
        }
        // dm.sh is skipped on a kernel without device-mapper rather than refusing the kernel.
        assert!(r.optional_modules.iter().any(|x| x == "dm_mod"));
        assert!(INIT.contains("daxdiff-init: $*") && INIT.contains("bringup-done rc=0"));
        assert!(
            INIT.contains("init-labels"),
            "fresh label areas are initialized"
        );
    }

    #[test]
    fn profile_has_e820_pmem_inside_ram_and_a_raw_nvdimm() {
        let p = profile();
        let l = p.legacy_pmem.as_ref().unwrap();
        // pc machines put RAM beyond 3 GiB above 4 GiB: the carve-out must lie in RAM.
        assert!(l.start >= 4 * GIB && l.start + l.size <= 4 * GIB + (p.memory - 3 * GIB));
        assert_eq!(l.start % GIB, 0, "1 GiB aligned for device-dax's 1G test");
        // device-dax at 1 GiB: a 1 GiB-aligned data offset, then 2 GiB of data.
        assert!(l.size >= 4 * GIB, "{l:?}");
        assert_eq!(p.nvdimms.len(), 1);
        assert_eq!(p.nvdimms[0].role, Role::Raw);
        assert!(
            p.nvdimms[0].size >= 5 * GIB,
            "daxctl-devices.sh takes 4 GiB"
        );
        assert!(p.nvdimms[0].label_size > 0, "sub-section.sh needs labels");
    }

    #[test]
    fn module_lookup_reads_dep_and_builtin() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/drivers/nvdimm/nd_e820.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz\nkernel/drivers/md/dm-mod.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        assert!(kernel_has_module(Some(d.path()), "nd_e820"));
        assert!(kernel_has_module(Some(d.path()), "dm_mod"));
        assert!(kernel_has_module(Some(d.path()), "ext4"));
        assert!(!kernel_has_module(Some(d.path()), "nfit_test"));
        assert!(
            !kernel_has_module(Some(d.path()), "libnvdimm"),
            "only left of the colon"
        );
        assert!(!kernel_has_module(None, "nd_e820"));
    }
}
