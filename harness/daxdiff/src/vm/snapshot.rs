//! A guest's complete state saved once after its bring-up, and guests restored from it in
//! about a second instead of booted (20 s and more under TCG).
//!
//! QEMU 7.2 (the host's) has no file migration and no `snapshot-save` for pmem-backed
//! guests, so the state goes out by migration to a file (`exec:cat`): the guest is stopped,
//! its NVDIMM backing files and disks are copied (sparse) while nothing writes them, and RAM
//! and device state are migrated with `x-ignore-shared`, which leaves the NVDIMMs
//! (share=on file backends) to those copies instead of pushing 3 GiB through the stream and
//! faulting it into the destination's backing files (9.5 s against 0.6 s to load, measured).
//! A restore starts QEMU with the same devices on fresh copies, `-incoming defer`, loads the
//! state, and continues the guest; the SSH key it authorized and the host key it announced
//! come from the saved guest.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::profile::shell_quote;
use super::qmp::Qmp;
use super::{free_port, golden, reaper, BootFiles, MachineProfile, Ssh, Topology, Vm};

/// How saved guests' directories are named, in the temporary directory: under the run
/// directories' prefix, so a killed daxdiff's are swept like its run directories.
pub const PREFIX: &str = "daxdiff-vm-snapshot-";
const STATE: &str = "state.mig";
const KEY: &str = "id_ed25519";

/// How long saving or loading the migration stream may take (a few hundred MB from the page
/// cache; seconds even under load).
const MIGRATION_DEADLINE: Duration = Duration::from_secs(120);

/// One guest's saved state, removed with this value (or by the signal handler).
pub struct Snapshot {
    dir: reaper::PrivateDir,
    /// The saved guest's files, with the NVDIMM and disk paths pointing into `dir`.
    files: BootFiles,
    profile: MachineProfile,
    host_key: String,
    topology: Topology,
    kernel_name: String,
    /// How long the save took (the guest stopped).
    pub saved_in: Duration,
    /// Size of the migration stream.
    pub state_bytes: u64,
}

/// What a restore cost, by step.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RestoreTimes {
    /// Copying the saved NVDIMMs and disks.
    pub copy: Duration,
    /// QEMU start → state loaded.
    pub load: Duration,
    /// State loaded → first authenticated SSH session.
    pub ssh: Duration,
    /// The whole restore, to a guest ready for programs.
    pub ready: Duration,
}

impl Vm {
    /// Saves the guest's complete state (RAM, devices, NVDIMM contents, disks) and lets it
    /// run on. Take it before an executor session starts: open SSH sessions would be saved
    /// half open, so the guest's SSH session is closed for the save and opened again after.
    pub fn save_snapshot(&mut self) -> Result<Snapshot> {
        let host_key = self
            .host_key
            .clone()
            .context("a bare-booted guest has no SSH to restore; boot it fully first")?;
        let started = Instant::now();
        let dir = reaper::PrivateDir::new(PREFIX)?;
        fs::copy(self.run_dir.join(KEY), dir.path().join(KEY))
            .context("keep the guest's SSH client key with its snapshot")?;
        self.ssh = None;
        let mut qmp = Qmp::connect(&self.files.qmp_socket, Duration::from_secs(5))?;
        set_up_migration(&mut qmp)?;
        qmp.execute("stop", serde_json::Value::Null)?;
        let saved = (|| -> Result<(BootFiles, u64)> {
            // Copied while the guest is stopped (QEMU flushed its disks at `stop`): they
            // match the RAM state exactly.
            let files = copy_disks(&self.files, dir.path())
                .context("save the guest's NVDIMMs and disks")?;
            let state = dir.path().join(STATE);
            let uri = format!("exec:cat > {}", shell_quote(&state.display().to_string()));
            qmp.execute("migrate", json!({ "uri": uri }))?;
            qmp.wait_migration(Instant::now() + MIGRATION_DEADLINE)?;
            Ok((files, fs::metadata(&state)?.len()))
        })();
        // The guest runs on whatever the save did.
        let resumed = qmp.execute("cont", serde_json::Value::Null);
        let (files, state_bytes) = saved.context("save the guest's state")?;
        resumed.context("resume the guest after saving it")?;
        let saved_in = started.elapsed();
        self.reconnect()?;
        Ok(Snapshot {
            dir,
            files,
            profile: self.profile.clone(),
            host_key,
            topology: self.topology.clone(),
            kernel_name: self.kernel_name.clone(),
            saved_in,
            state_bytes,
        })
    }

    /// A new SSH session to the guest (after [`Vm::save_snapshot`] closed it).
    fn reconnect(&mut self) -> Result<()> {
        let host_key = self.host_key.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = self.files.ssh_port;
        let key = self.run_dir.join(KEY);
        let mut alive = || self.check_alive();
        let ssh = Ssh::connect_until(port, &key, host_key.as_deref(), deadline, &mut alive)?;
        self.ssh = Some(ssh);
        Ok(())
    }

    /// A guest restored from `snap`: the state it was saved in, on fresh copies of its
    /// NVDIMMs and disks, with a console of its own that starts empty.
    pub fn restore(snap: &Snapshot) -> Result<(Vm, RestoreTimes)> {
        let started = Instant::now();
        let tmp = reaper::PrivateDir::new(super::RUN_DIR_PREFIX)?;
        let run_dir = tmp.path().to_path_buf();
        let mut files =
            copy_disks(&snap.files, &run_dir).context("copy the saved NVDIMMs and disks")?;
        let key = run_dir.join(KEY);
        fs::copy(snap.dir.path().join(KEY), &key).context("copy the saved SSH client key")?;
        files.qmp_socket = run_dir.join("qmp.sock");
        files.ssh_port = free_port()?;
        fs::write(
            run_dir.join("known_hosts"),
            format!(
                "[127.0.0.1]:{} ssh-ed25519 {}\n",
                files.ssh_port, snap.host_key
            ),
        )?;
        let copied = started.elapsed();
        let extra = ["-incoming".to_string(), "defer".to_string()];
        let (mut vm, qemu_start) = Vm::start_qemu(
            files,
            &snap.profile,
            run_dir,
            Some(tmp),
            &snap.kernel_name,
            &extra,
        )?;
        let load = (|| -> Result<()> {
            let mut qmp = Qmp::connect(&vm.files.qmp_socket, Duration::from_secs(30))?;
            set_up_migration(&mut qmp)?;
            let state = snap.dir.path().join(STATE);
            let uri = format!("exec:cat {}", shell_quote(&state.display().to_string()));
            qmp.execute("migrate-incoming", json!({ "uri": uri }))?;
            qmp.wait_migration(Instant::now() + MIGRATION_DEADLINE)?;
            // Saved stopped, so restored stopped: it runs from here.
            qmp.execute("cont", serde_json::Value::Null)?;
            Ok(())
        })();
        if let Err(e) = load {
            let stderr = fs::read_to_string(vm.run_dir.join("qemu.stderr")).unwrap_or_default();
            bail!(
                "restore {} from {}: {e:#}{}",
                snap.kernel_name,
                snap.dir.path().display(),
                if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("\nQEMU said: {}", stderr.trim())
                }
            );
        }
        let loaded = qemu_start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = vm.files.ssh_port;
        let mut alive = || vm.check_alive();
        let ssh = Ssh::connect_until(port, &key, Some(&snap.host_key), deadline, &mut alive)
            .with_context(|| {
                format!(
                    "reach the guest restored from {}",
                    snap.dir.path().display()
                )
            })?;
        vm.ssh = Some(ssh);
        vm.host_key = Some(snap.host_key.clone());
        vm.topology = snap.topology.clone();
        let ready = started.elapsed();
        vm.times.ssh = ready;
        vm.times.ready = ready;
        Ok((
            vm,
            RestoreTimes {
                copy: copied,
                load: loaded,
                ssh: ready.saturating_sub(copied + loaded),
                ready,
            },
        ))
    }
}

/// `files` with every NVDIMM and disk backing file copied (sparse) into `dir`.
fn copy_disks(files: &BootFiles, dir: &Path) -> Result<BootFiles> {
    let copy = |from: &Path| -> Result<PathBuf> {
        let to = dir.join(from.file_name().context("a backing file has no name")?);
        golden::copy_sparse(from, &to).with_context(|| format!("copy {}", from.display()))?;
        Ok(to)
    };
    let mut out = files.clone();
    out.nvdimm_files = files
        .nvdimm_files
        .iter()
        .map(|f| copy(f))
        .collect::<Result<_>>()?;
    out.scratch_file = files.scratch_file.as_deref().map(copy).transpose()?;
    out.nodax_file = files.nodax_file.as_deref().map(copy).transpose()?;
    Ok(out)
}

/// Both ends of a save or restore migrate alike: NVDIMMs stay with their file copies, and
/// nothing limits the stream (QEMU's default is 32 MiB/s, made for live migration).
fn set_up_migration(qmp: &mut Qmp) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] }),
    )?;
    qmp.execute(
        "migrate-set-parameters",
        json!({ "max-bandwidth": 1u64 << 40 }),
    )?;
    Ok(())
}

impl Snapshot {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
