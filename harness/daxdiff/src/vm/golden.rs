//! Golden NVDIMM images: the backing files as a first bring-up left them (labels written,
//! namespaces created, file systems made), saved once per kernel, guest image and machine
//! profile, and copied sparsely for every later boot. Every boot still starts from the same
//! bytes, and skips the slowest bring-up steps under TCG (label init, namespace creation, mkfs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{BootOptions, Vm};
use crate::cache::{Entry, KeyBuilder};
use crate::images::{GuestImage, Kernel};

/// The saved images for `profile`, made now if missing or damaged.
pub fn images(
    cache: &Path,
    kernel: &Kernel,
    image: &GuestImage,
    opts: &BootOptions,
) -> Result<Vec<PathBuf>> {
    let profile = &opts.profile;
    let key = KeyBuilder::default()
        .part("kernel", kernel.bzimage.display().to_string())
        .part("initramfs", image.initramfs.display().to_string())
        .part("profile", serde_json::to_string(profile)?)
        .finish();
    let e = Entry::new(cache, "nvdimms", &kernel.name.0, &key);
    let names: Vec<String> = (0..profile.nvdimms.len())
        .map(|i| format!("nvdimm{i}.img"))
        .collect();
    if let Some(m) = e.verify() {
        let intact = names.iter().all(|n| {
            let path = e.dir.join(n);
            m.facts
                .get(n)
                .is_some_and(|want| data_digest(&path).is_ok_and(|got| &got == want))
        });
        if intact {
            return Ok(names.iter().map(|n| e.dir.join(n)).collect());
        }
        eprintln!(
            "nvdimm images for {} are damaged; making them again",
            kernel.name
        );
    }
    eprintln!(
        "nvdimm images for {}: first bring-up from blank NVDIMMs (saved for later boots)",
        kernel.name
    );
    e.build(|dir| {
        let fresh = BootOptions { profile: profile.clone(), accel: opts.accel, timeout: opts.timeout, bare: false, run_dir: Some(dir.join("run")), nvdimm_images: None };
        let run_dir = dir.join("run");
        let mut vm = super::boot_retrying_transient(|| Vm::boot(kernel, image, fresh.clone()), Some(&run_dir))?;
        if !vm.topology.ok {
            bail!("bring-up on blank NVDIMMs failed: {:?}", vm.topology.error);
        }
        // Clean file systems in the image: unmount before QEMU lets go of the files.
        let out = vm.run("sync; for m in /mnt/ext4 /mnt/xfs; do ! grep -q \" $m \" /proc/mounts || umount $m || exit 1; done", Duration::from_secs(120))?;
        if out.status != 0 {
            bail!("unmounting before saving the NVDIMM images failed: {}", out.stderr_str());
        }
        let files = vm.files.nvdimm_files.clone();
        vm.shutdown()?;
        let mut facts = BTreeMap::new();
        for (src, name) in files.iter().zip(&names) {
            let dst = dir.join(name);
            std::fs::rename(src, &dst)?;
            facts.insert(name.clone(), data_digest(&dst)?);
        }
        std::fs::remove_dir_all(dir.join("run"))?;
        Ok((vec![], facts))
    })?;
    Ok(names.iter().map(|n| e.dir.join(n)).collect())
}

/// The data extents of a sparse file: (offset, length), found with SEEK_DATA/SEEK_HOLE.
fn extents(f: &File) -> Result<Vec<(u64, u64)>> {
    let len = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after pos
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { len as i64 } else { hole };
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    Ok(out)
}

/// Copies `src` to `dst` writing only its data extents; `dst` keeps `src`'s length.
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let mut s = File::open(src).with_context(|| format!("open {}", src.display()))?;
    let mut d = File::create(dst).with_context(|| format!("create {}", dst.display()))?;
    d.set_len(s.metadata()?.len())?;
    let mut buf = vec![0u8; 1 << 20];
    for (off, len) in extents(&s)? {
        s.seek(SeekFrom::Start(off))?;
        d.seek(SeekFrom::Start(off))?;
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            s.read_exact(&mut buf[..n])?;
            d.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
}

/// A digest of a sparse file's length and data (zero runs hash like holes would not, so the
/// extents are hashed with their offsets): cheap for mostly-empty NVDIMM images.
pub fn data_digest(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    h.update(f.metadata()?.len().to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    for (off, len) in extents(&f)? {
        h.update(off.to_le_bytes());
        h.update(len.to_le_bytes());
        f.seek(SeekFrom::Start(off))?;
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            f.read_exact(&mut buf[..n])?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_data_length_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(b"label area").unwrap();
        f.seek(SeekFrom::Start((64 << 20) - 4096)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        drop(f);
        let dst = d.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        use std::os::unix::fs::MetadataExt;
        // Far fewer blocks than the 64 MiB length: the holes stayed holes.
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 8 << 20);
        assert_eq!(data_digest(&src).unwrap(), data_digest(&dst).unwrap());
        // A changed byte changes the digest.
        let mut g = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
        g.seek(SeekFrom::Start(10 << 20)).unwrap();
        g.write_all(b"LABEL").unwrap();
        drop(g);
        assert_ne!(data_digest(&src).unwrap(), data_digest(&dst).unwrap());
    }
}
