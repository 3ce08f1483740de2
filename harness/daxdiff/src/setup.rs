//! From a kernel's name to a guest ready to boot: catalogue lookup, kernel fetch, guest
//! image build and accelerator choice, in the order a user waits for them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::catalogue::{Catalogue, KernelEntry};
use crate::images::{GuestBuilder, GuestImage, Kernel, KernelStore};
use crate::vm::{accel, boot_retrying_transient, golden, Accel, BootOptions, MachineProfile, Vm};

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
