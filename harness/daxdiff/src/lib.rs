//! daxdiff: boots a base and a patched kernel in QEMU with emulated NVDIMMs, drives the same
//! programs against ext4-dax, xfs-dax and device-dax in both, and compares what they did.

pub mod bench;
pub mod bisect;
pub mod cache;
pub mod catalogue;
pub mod diff;
pub mod duration;
pub mod exec;
pub mod fuzz;
pub mod images;
pub mod kbuild;
pub mod lock;
pub mod mail;
pub mod output;
pub mod process_group;
pub mod prog_cli;
pub mod refcounts;
pub mod report;
pub mod repro;
pub mod setup;
pub mod suite;
pub mod symbolize;
pub mod vm;
pub mod workdir;
