//! From a kernel's name to a guest ready to boot: catalogue lookup, kernel fetch, guest
//! image build and accelerator choice, in the order a user waits for them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::catalogue::{Catalogue, KernelEntry};
use crate::images::{GuestBuilder, GuestImage, Kernel, KernelStore};
use crate::vm::{accel, golden, Accel, BootOptions, DiedDuringBoot, MachineProfile, Vm};

/// Where things live for one invocation.
#[derive(Clone, Debug)]
pub struct Env {
    pub cache: PathBuf,
    pub catalogue: Option<PathBuf>,
}

impl Env {
    /// The shipped catalogue (or `--catalogue`), without the kernels built here.
    pub fn base_catalogue(&self) -> Result<Catalogue> {
        Ok(match &self.catalogue {
            Some(p) => Catalogue::load(p)?,
            None => Catalogue::builtin(),
        })
    }

    /// The catalogue with the kernels `daxdiff kernel build` registered; a built kernel never
    /// shadows a catalogue entry of the same name.
    pub fn catalogue(&self) -> Result<Catalogue> {
        let mut cat = self.base_catalogue()?;
        if let Some(built) = crate::kbuild::registry(&self.cache)? {
            for (name, entry) in built.kernels {
                cat.kernels.entry(name).or_insert(entry);
            }
        }
        Ok(cat)
    }
}

/// A kernel and its guest image, ready to boot.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub kernel: Kernel,
    pub image: GuestImage,
    pub accel: Accel,
    pub cache: PathBuf,
    /// Boot from saved NVDIMM images (made by an extra first boot); worth it only for a
    /// kernel booted many times.
    pub golden_nvdimms: bool,
}

pub fn prepare(env: &Env, name: &str) -> Result<Prepared> {
    let cat = env.catalogue()?;
    let entry = cat.get(name)?;
    let kernel = KernelStore::new(&env.cache).get(entry)?;
    let image = GuestBuilder::new(&env.cache).build(&kernel)?;
    let accel = accel::choose(&env.cache, &kernel, &image)?;
    Ok(Prepared {
        kernel,
        image,
        accel,
        cache: env.cache.clone(),
        golden_nvdimms: true,
    })
}

/// Like [`prepare`] for a kernel that is not in the catalogue (a bisection step), booted a
/// few times at most: no saved NVDIMM images (they cost an extra boot), and guests without
/// the probe skip its headers download and module build.
pub fn prepare_entry(env: &Env, entry: &KernelEntry, with_probe: bool) -> Result<Prepared> {
    let kernel = KernelStore::new(&env.cache).get(entry)?;
    let mut builder = GuestBuilder::new(&env.cache);
    if !with_probe {
        builder = builder.without_probe();
    }
    let image = builder.build(&kernel)?;
    let accel = accel::choose(&env.cache, &kernel, &image)?;
    Ok(Prepared {
        kernel,
        image,
        accel,
        cache: env.cache.clone(),
        golden_nvdimms: false,
    })
}

impl Prepared {
    /// Boots with NVDIMMs copied from the saved images of a first bring-up (made on first
    /// use); `DAXDIFF_FRESH_NVDIMMS=1` starts from blank NVDIMMs every time instead.
    pub fn boot(&self, profile: MachineProfile, run_dir: Option<&Path>) -> Result<Vm> {
        let mut opts = BootOptions {
            profile,
            accel: self.accel,
            run_dir: run_dir.map(Path::to_path_buf),
            ..BootOptions::default()
        };
        if self.golden_nvdimms
            && std::env::var_os("DAXDIFF_FRESH_NVDIMMS").is_none()
            && !opts.profile.nvdimms.is_empty()
        {
            match golden::images(&self.cache, &self.kernel, &self.image, &opts) {
                Ok(images) => opts.nvdimm_images = Some(images),
                Err(e) => eprintln!("nvdimm images: {e:#}\nbooting with blank NVDIMMs"),
            }
        }
        boot_retrying_transient(
            || Vm::boot(&self.kernel, &self.image, opts.clone()),
            run_dir,
        )
    }
}

/// How many boots a kernel that oopses in early boot gets before the error stands.
pub const BOOT_TRIES: usize = 3;

/// Runs `boot` again while the kernel dies in a way that may be transient
/// ([`DiedDuringBoot::may_be_transient`]), up to [`BOOT_TRIES`] times, saying so on stderr;
/// each failed boot's console is kept as `boot-failure-N.log` in `run_dir`. The error of the
/// last try says how many were made.
pub fn boot_retrying_transient(
    mut boot: impl FnMut() -> Result<Vm>,
    run_dir: Option<&Path>,
) -> Result<Vm> {
    let mut n = 0;
    loop {
        n += 1;
        let e = match boot() {
            Ok(vm) => return Ok(vm),
            Err(e) => e,
        };
        let Some(death) = e.downcast_ref::<DiedDuringBoot>() else {
            return Err(e);
        };
        if !death.may_be_transient() {
            return Err(e);
        }
        if n >= BOOT_TRIES {
            let kernel = death.kernel.clone();
            return Err(e.context(format!(
                "kernel {kernel} died during boot {n} times in a row: not a passing fault of the emulator"
            )));
        }
        if let Some(d) = run_dir {
            let console = std::fs::read_to_string(d.join("console.log")).unwrap_or_default();
            let _ = std::fs::write(
                d.join(format!("boot-failure-{n}.log")),
                format!("{e:#}\n\n{console}"),
            );
        }
        eprintln!(
            "kernel {} died during boot ({}); booting again, try {} of {BOOT_TRIES}",
            death.kernel,
            death.first.trim(),
            n + 1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(first: &str) -> anyhow::Error {
        DiedDuringBoot {
            kernel: "debian-7.3".into(),
            first: first.into(),
            tail: "[    2.7] RIP: 0010:sched_clock_cpu+0x9/0x1f0".into(),
        }
        .into()
    }

    fn tries(make: impl Fn() -> anyhow::Error, run_dir: Option<&Path>) -> (usize, String) {
        let mut n = 0;
        let e = boot_retrying_transient(
            || {
                n += 1;
                Err(make())
            },
            run_dir,
        )
        .err()
        .expect("every boot fails");
        (n, format!("{e:#}"))
    }

    #[test]
    fn an_early_oops_is_booted_again_and_each_console_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("console.log"), "Oops: int3\n").unwrap();
        let (n, err) = tries(
            || death("[    2.710700] Oops: int3: 0000 [#1] SMP NOPTI"),
            Some(dir.path()),
        );
        assert_eq!(n, BOOT_TRIES);
        assert!(err.contains("died during boot 3 times in a row"), "{err}");
        assert!(err.contains("Oops: int3"), "{err}");
        for i in 1..BOOT_TRIES {
            let kept = std::fs::read_to_string(dir.path().join(format!("boot-failure-{i}.log")));
            assert!(kept.unwrap().contains("Oops: int3"));
        }
    }

    #[test]
    fn a_death_found_under_added_context_is_still_recognized() {
        let (n, _) = tries(|| death("Oops: int3").context("waiting for SSH"), None);
        assert_eq!(n, BOOT_TRIES);
    }

    #[test]
    fn a_panic_without_init_and_other_errors_are_not_retried() {
        let (n, err) = tries(
            || death("Kernel panic - not syncing: No working init found."),
            None,
        );
        assert_eq!(n, 1);
        assert!(!err.contains("times in a row"), "{err}");
        let (n, _) = tries(|| anyhow::anyhow!("start qemu-system-x86_64: not found"), None);
        assert_eq!(n, 1);
    }
}
