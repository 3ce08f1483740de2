//! Guest-side agent of daxdiff: brings the emulated NVDIMMs up as DAX filesystems and a
//! device-dax character device, and reports the resulting topology to the host controller.

pub mod bootcfg;
pub mod bringup;
pub mod command;
pub mod kmsg;
pub mod mounts;
pub mod ndctl;
pub mod probe;
pub mod refcounts;
pub mod run;
pub mod slowdisks;
pub mod status;
pub mod statx;
pub mod steps;
pub mod topology;

/// Tests that fork and wait share the process with executors reaping any child
/// (`run::supervise::reap_orphans`): they take turns.
#[cfg(test)]
pub(crate) static FORK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
