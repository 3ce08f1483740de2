//! From a kernel's name to a guest ready to boot: catalogue lookup, kernel fetch, guest
//! image build and accelerator choice, in the order a user waits for them.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::catalogue::Catalogue;
use crate::images::{GuestBuilder, GuestImage, Kernel, KernelStore};
use crate::vm::{accel, Accel, BootOptions, MachineProfile, Vm};

/// Where things live for one invocation.
#[derive(Clone, Debug)]
pub struct Env {
    pub cache: PathBuf,
    pub catalogue: Option<PathBuf>,
}

impl Env {
    pub fn catalogue(&self) -> Result<Catalogue> {
        Ok(match &self.catalogue {
            Some(p) => Catalogue::load(p)?,
            None => Catalogue::builtin(),
        })
    }
}

/// A kernel and its guest image, ready to boot.
pub struct Prepared {
    pub kernel: Kernel,
    pub image: GuestImage,
    pub accel: Accel,
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
    })
}

impl Prepared {
    pub fn boot(&self, profile: MachineProfile, run_dir: Option<&Path>) -> Result<Vm> {
        Vm::boot(
            &self.kernel,
            &self.image,
            BootOptions {
                profile,
                accel: self.accel,
                run_dir: run_dir.map(Path::to_path_buf),
                ..BootOptions::default()
            },
        )
    }
}
