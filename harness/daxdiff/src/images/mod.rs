//! Images: kernels (Debian packages or local builds) and the guest initramfs that goes with
//! each, fetched and built into the content-addressed cache.

pub mod apt;
pub mod guest;
pub mod kernel;
pub mod probe;

pub use guest::{GuestBuilder, GuestImage};
pub use kernel::{Kernel, KernelStore};
