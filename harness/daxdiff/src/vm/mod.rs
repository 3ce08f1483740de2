//! Virtual machines: one QEMU guest with emulated NVDIMMs, booted, brought up with DAX
//! verified, controlled over SSH, and always killed when we are done with it.

pub mod accel;
pub mod console;
pub mod golden;
pub mod profile;
pub mod qmp;
pub mod reaper;
pub mod snapshot;
pub mod ssh;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::images::{GuestImage, Kernel};
pub use console::Console;
use console::Wait;
pub use profile::{Accel, BootFiles, MachineProfile, Role};
pub use ssh::{Output, Ssh};

/// How long a boot may take before the guest counts as unresponsive (TCG is slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the time to a ready guest went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BootTimes {
    /// QEMU start → the guest's /init runs.
    pub kernel: Duration,
    /// /init start → DAX bring-up done (modules, namespaces, mkfs, mounts, checks).
    pub bringup: Duration,
    /// QEMU start → first authenticated SSH session.
    pub ssh: Duration,
    /// QEMU start → ready (bring-up done and SSH up).
    pub ready: Duration,
}

/// What bring-up established, as the guest executor reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Topology {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub steps: Vec<serde_json::Value>,
    #[serde(default)]
    pub fs: Vec<FsMount>,
    #[serde(default)]
    pub devdax: Vec<DevDax>,
    /// The ext4 without DAX on the slow disk (profiles with [`profile::SlowDisks`]).
    #[serde(default)]
    pub nodax: Option<NodaxFs>,
    /// The raw block device on the slow disks.
    #[serde(default)]
    pub blkdev: Option<RawBlk>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodaxFs {
    pub blockdev: String,
    pub mountpoint: String,
    pub delay_ms: u32,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RawBlk {
    pub blockdev: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FsMount {
    pub role: String,
    pub blockdev: String,
    pub mountpoint: String,
    pub dax: bool,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DevDax {
    pub chardev: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone)]
pub struct BootOptions {
    pub profile: MachineProfile,
    pub accel: Accel,
    pub timeout: Duration,
    /// Stop at init (the bare-boot floor) instead of bringing the guest up.
    pub bare: bool,
    /// Where the console log and run files go; a temporary directory when `None`.
    pub run_dir: Option<PathBuf>,
    /// NVDIMM backing files to start from (copied, one per NVDIMM); blank when `None`.
    pub nvdimm_images: Option<Vec<PathBuf>>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            profile: MachineProfile::default(),
            accel: Accel::Tcg,
            timeout: DEFAULT_BOOT_TIMEOUT,
            bare: false,
            run_dir: None,
            nvdimm_images: None,
        }
    }
}

/// The kernel printed an oops or a panic before the guest was ready.
#[derive(Debug, thiserror::Error)]
#[error("kernel {kernel} died during boot: {first}\nconsole tail:\n{tail}")]
pub struct DiedDuringBoot {
    pub kernel: String,
    /// The first fatal console line.
    pub first: String,
    pub tail: String,
}

impl DiedDuringBoot {
    /// Whether booting again may well succeed. An oops in early boot can be TCG's doing: with
    /// several vCPUs, a CPU occasionally executes kernel text that another CPU is patching
    /// (`Oops: int3` in a function that holds a static key). A panic with nothing before it
    /// (no init, no root) is the kernel or image, and happens every time.
    pub fn may_be_transient(&self) -> bool {
        !self.first.contains("Kernel panic - not syncing")
    }
}

/// The kernel went silent before init started and stayed so until the boot timeout. Under
/// TCG on a loaded host this happens now and then (a vCPU waiting on another during early
/// text patching), and the next boot gets through.
#[derive(Debug, thiserror::Error)]
#[error("guest on kernel {kernel} unresponsive: init did not start within the boot timeout\nconsole tail:\n{tail}")]
pub struct StalledBeforeInit {
    pub kernel: String,
    pub tail: String,
}

/// How many boots a kernel that oopses or stalls in early boot gets before the error stands.
pub const BOOT_TRIES: usize = 3;

/// QEMU could not bind the loopback port picked for the guest's SSH forward: between daxdiff
/// finding it free and QEMU binding it, something else on the host took it (another guest, or
/// the source port of a connection). Nothing to do with the kernel: [`Vm::boot`] picks
/// another port and starts QEMU again.
#[derive(Debug, thiserror::Error)]
#[error("QEMU could not forward loopback port {port} to the guest's SSH: another process took the port after daxdiff picked it")]
pub struct PortTaken {
    pub port: u16,
}

/// How many ports [`Vm::boot`] tries before a taken port is an error.
const PORT_TRIES: usize = 5;

/// QEMU's complaint when its host forward for `port` cannot be bound.
fn port_taken(qemu_stderr: &str, port: u16) -> bool {
    qemu_stderr.contains("Could not set up host forwarding rule")
        && qemu_stderr.contains(&format!("127.0.0.1:{port}-"))
}

/// Runs `start` again while it fails with [`PortTaken`], up to [`PORT_TRIES`] times.
fn retrying_taken_ports<T>(mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut n = 0;
    loop {
        n += 1;
        match start() {
            Err(e) if n < PORT_TRIES && e.downcast_ref::<PortTaken>().is_some() => {
                eprintln!("{e}; starting QEMU again on another port");
            }
            r => return r,
        }
    }
}

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
        let (kernel, what) = if let Some(death) = e.downcast_ref::<DiedDuringBoot>() {
            if !death.may_be_transient() {
                return Err(e);
            }
            (
                death.kernel.clone(),
                format!("died during boot ({})", death.first.trim()),
            )
        } else if let Some(stall) = e.downcast_ref::<StalledBeforeInit>() {
            (
                stall.kernel.clone(),
                "stalled before init started".to_string(),
            )
        } else {
            return Err(e);
        };
        if n >= BOOT_TRIES {
            return Err(e.context(format!(
                "kernel {kernel} died or stalled during boot {n} times in a row: not a passing fault of the emulator"
            )));
        }
        if let Some(d) = run_dir {
            let console = fs::read_to_string(d.join("console.log")).unwrap_or_default();
            let _ = fs::write(
                d.join(format!("boot-failure-{n}.log")),
                format!("{e:#}\n\n{console}"),
            );
        }
        eprintln!(
            "kernel {kernel} {what}; booting again, try {} of {BOOT_TRIES}",
            n + 1
        );
    }
}

/// A running guest. Dropping it kills QEMU.
pub struct Vm {
    child: Option<Child>,
    /// Writes QEMU's stderr to `qemu.stderr` once QEMU exits.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    pub console: Console,
    pub ssh: Option<Ssh>,
    pub times: BootTimes,
    pub topology: Topology,
    pub files: BootFiles,
    pub profile: MachineProfile,
    pub run_dir: PathBuf,
    /// The guest's SSH host key (base64 ed25519 blob), as it announced it on the console.
    pub host_key: Option<String>,
    _tmp: Option<reaper::PrivateDir>,
    pub kernel_name: String,
}

impl Vm {
    /// Boots `kernel` with `image` and waits until DAX bring-up is done and SSH answers.
    /// A loopback port taken by someone else before QEMU bound it ([`PortTaken`]) is
    /// replaced by another.
    pub fn boot(kernel: &Kernel, image: &GuestImage, opts: BootOptions) -> Result<Vm> {
        retrying_taken_ports(|| Vm::boot_once(kernel, image, opts.clone()))
    }

    fn boot_once(kernel: &Kernel, image: &GuestImage, opts: BootOptions) -> Result<Vm> {
        let qemu = profile::find_qemu().map_err(anyhow::Error::msg)?;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            for d in reaper::sweep_stale(&std::env::temp_dir(), RUN_DIR_PREFIX) {
                eprintln!(
                    "vm: removed {}, left by a daxdiff that was killed",
                    d.display()
                );
            }
        });
        let (tmp, run_dir) = match &opts.run_dir {
            Some(d) => {
                private_dir(d)?;
                (None, d.clone())
            }
            None => {
                let t = reaper::PrivateDir::new(RUN_DIR_PREFIX)?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let keys = ssh::KeyPair::generate(&run_dir)?;
        let mut nvdimm_files = Vec::new();
        for (i, n) in opts.profile.nvdimms.iter().enumerate() {
            // Sparse and fresh every boot: a copy of the saved images, or blank labels; no
            // state is carried from one boot to the next.
            let p = run_dir.join(format!("nvdimm{i}.img"));
            match opts.nvdimm_images.as_ref().and_then(|v| v.get(i)) {
                Some(img) => golden::copy_sparse(img, &p)?,
                None => {
                    let f = fs::File::create(&p)
                        .with_context(|| format!("create NVDIMM backing file {}", p.display()))?;
                    f.set_len(n.backend_size())?;
                }
            }
            nvdimm_files.push(p);
        }
        let scratch_file = match opts.profile.scratch_disk {
            Some(size) => {
                let p = run_dir.join("scratch.img");
                let f = fs::File::create(&p)
                    .with_context(|| format!("create the scratch disk {}", p.display()))?;
                f.set_len(size)?;
                Some(p)
            }
            None => None,
        };
        let nodax_file = match opts.profile.slow_disks {
            Some(d) => {
                // Blank every boot: the guest makes the file system (a second, unchanging).
                let p = run_dir.join("nodax.img");
                let f = fs::File::create(&p)
                    .with_context(|| format!("create the nodax disk {}", p.display()))?;
                f.set_len(d.fs_size)?;
                Some(p)
            }
            None => None,
        };
        let files = BootFiles {
            qemu,
            kernel: kernel.bzimage.clone(),
            initramfs: image.initramfs.clone(),
            nvdimm_files,
            scratch_file,
            nodax_file,
            qmp_socket: run_dir.join("qmp.sock"),
            ssh_port: free_port()?,
            ssh_pubkey: keys.public_blob.clone(),
            accel: opts.accel,
            bare: opts.bare,
        };
        let (mut vm, start) =
            Vm::start_qemu(files, &opts.profile, run_dir, tmp, &kernel.name.0, &[])?;
        vm.bring_up(&keys, start, start + opts.timeout, opts.bare)?;
        Ok(vm)
    }

    /// Starts QEMU on `files` (with `extra` arguments after the profile's), with its console
    /// read into `console.log`; returns the guest, not yet up, and when QEMU started.
    fn start_qemu(
        files: BootFiles,
        profile: &MachineProfile,
        run_dir: PathBuf,
        tmp: Option<reaper::PrivateDir>,
        kernel_name: &str,
        extra: &[String],
    ) -> Result<(Vm, Instant)> {
        let mut args = profile.qemu_args(&files);
        args.extend(extra.iter().cloned());
        fs::write(
            run_dir.join("qemu.cmd"),
            std::iter::once(files.qemu.display().to_string())
                .chain(args.iter().cloned())
                .map(|w| profile::shell_quote(&w))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n",
        )?;
        let start = Instant::now();
        let mut cmd = Command::new(&files.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        reaper::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", files.qemu.display()))?;
        reaper::register(child.id());
        let stdout = child.stdout.take().expect("piped");
        let console = match Console::spawn(stdout, &run_dir.join("console.log"), start) {
            Ok(c) => c,
            Err(e) => {
                // Without a console nobody would ever stop this QEMU.
                let _ = child.kill();
                let _ = child.wait();
                reaper::unregister(child.id());
                return Err(anyhow::Error::new(e).context("start reading the guest console"));
            }
        };
        let mut stderr = child.stderr.take().expect("piped");
        let stderr_path = run_dir.join("qemu.stderr");
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            let _ = fs::write(stderr_path, buf);
        });
        let vm = Vm {
            child: Some(child),
            stderr_reader: Some(stderr_reader),
            console,
            ssh: None,
            times: BootTimes::default(),
            topology: Topology::default(),
            files,
            profile: profile.clone(),
            run_dir,
            host_key: None,
            _tmp: tmp,
            kernel_name: kernel_name.to_string(),
        };
        Ok((vm, start))
    }

    fn bring_up(
        &mut self,
        keys: &ssh::KeyPair,
        start: Instant,
        deadline: Instant,
        bare: bool,
    ) -> Result<()> {
        let init = self.wait_marker(0, deadline, "init-start")?;
        self.times.kernel = init.1;
        if bare {
            self.times.ready = self.times.kernel;
            return Ok(());
        }
        let (_, done_at, text) =
            self.wait_marker_any(init.0, deadline, &["bringup-done", "bringup-failed"])?;
        if text.contains("bringup-failed") {
            let module_failures: Vec<String> = self
                .console
                .since(init.0)
                .into_iter()
                .filter(|l| l.text.contains("daxdiff-init: module-failed"))
                .map(|l| l.text)
                .collect();
            bail!(
                "DAX bring-up failed on kernel {}: {}\n{}console tail:\n{}",
                self.kernel_name,
                text.trim_start_matches("daxdiff-init: "),
                if module_failures.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", module_failures.join("\n"))
                },
                self.console.tail(30)
            );
        }
        self.times.bringup = done_at - self.times.kernel;
        let port = self.files.ssh_port;
        let host_key = announced_host_key(&self.console.since(init.0).iter().map(|l| l.text.as_str()).collect::<Vec<_>>())
            .with_context(|| format!(
                "the guest on kernel {} did not announce its SSH host key on the console (an image older than this daxdiff? rebuild with ci/build.sh)\nconsole tail:\n{}",
                self.kernel_name,
                self.console.tail(20)
            ))?;
        fs::write(
            self.run_dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} ssh-ed25519 {host_key}\n"),
        )?;
        let mut alive = || self.check_alive();
        let ssh = Ssh::connect_until(
            port,
            &keys.private_key,
            Some(&host_key),
            deadline,
            &mut alive,
        )?;
        self.host_key = Some(host_key);
        self.times.ssh = start.elapsed();
        self.times.ready = self.times.ssh.max(done_at);
        let topo = ssh.exec(
            "cat /run/daxdiff/bringup.json",
            None,
            Duration::from_secs(30),
        )?;
        self.topology = serde_json::from_slice(&topo.stdout).with_context(|| {
            format!(
                "the guest's bring-up report is not valid JSON: {}",
                topo.stdout_str()
            )
        })?;
        self.ssh = Some(ssh);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(l) = self.console.first_fatal(0) {
            return Err(DiedDuringBoot {
                kernel: self.kernel_name.clone(),
                first: l.text,
                tail: self.console.tail(40),
            }
            .into());
        }
        if let Some(child) = &mut self.child {
            if let Some(st) = child.try_wait()? {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                let stderr =
                    fs::read_to_string(self.run_dir.join("qemu.stderr")).unwrap_or_default();
                if port_taken(&stderr, self.files.ssh_port) {
                    return Err(PortTaken {
                        port: self.files.ssh_port,
                    }
                    .into());
                }
                bail!(
                    "QEMU exited ({st}) before the guest was ready: {}\nconsole tail:\n{}",
                    stderr.trim(),
                    self.console.tail(40)
                );
            }
        }
        Ok(())
    }

    fn wait_marker(
        &mut self,
        from: usize,
        deadline: Instant,
        marker: &str,
    ) -> Result<(usize, Duration)> {
        let (i, at, _) = self.wait_marker_any(from, deadline, &[marker])?;
        Ok((i, at))
    }

    /// Waits for one of init's markers, failing early if the kernel dies or QEMU exits.
    fn wait_marker_any(
        &mut self,
        from: usize,
        deadline: Instant,
        markers: &[&str],
    ) -> Result<(usize, Duration, String)> {
        let wanted: Vec<String> = markers
            .iter()
            .map(|m| format!("daxdiff-init: {m}"))
            .collect();
        let what = markers.join(" or ");
        loop {
            // Poll in short slices so a fatal console line or a dead QEMU ends the wait early.
            let slice = (Instant::now() + Duration::from_millis(500)).min(deadline);
            match self.console.wait_for(from, slice, |l| {
                wanted.iter().any(|w| l.text.contains(w.as_str())) || console::is_fatal(&l.text)
            }) {
                Wait::Found(i, l) if !console::is_fatal(&l.text) => return Ok((i, l.at, l.text)),
                Wait::Found(..) | Wait::Closed => {
                    // Give QEMU a moment to exit so its status and stderr are known.
                    std::thread::sleep(Duration::from_millis(300));
                    self.check_alive()?;
                    if let Wait::Closed = self.console.wait_for(from, Instant::now(), |_| false) {
                        bail!(
                            "the console closed before `{what}`\nconsole tail:\n{}",
                            self.console.tail(40)
                        );
                    }
                }
                Wait::TimedOut if Instant::now() >= deadline => {
                    let init_started = self
                        .console
                        .since(0)
                        .iter()
                        .any(|l| l.text.contains("daxdiff-init:"));
                    if !init_started {
                        return Err(StalledBeforeInit {
                            kernel: self.kernel_name.clone(),
                            tail: self.console.tail(40),
                        }
                        .into());
                    }
                    bail!(
                        "guest on kernel {} unresponsive: no `{what}` within the boot timeout\nconsole tail:\n{}",
                        self.kernel_name,
                        self.console.tail(40)
                    )
                }
                Wait::TimedOut => self.check_alive()?,
            }
        }
    }

    pub fn ssh(&self) -> Result<&Ssh> {
        self.ssh
            .as_ref()
            .context("the guest has no SSH session (bare boot)")
    }

    /// Runs a command in the guest; a kernel death while it runs is reported with the console.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<Output> {
        self.run_with_input(cmd, None, timeout)
    }

    /// Like [`Vm::run`], with `input` on the command's standard input.
    pub fn run_with_input(
        &mut self,
        cmd: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output> {
        let from = self.console.len();
        let res = self.ssh()?.exec(cmd, input, timeout);
        match res {
            Ok(o) => Ok(o),
            Err(e) => {
                self.check_alive()
                    .with_context(|| format!("while running `{cmd}`"))?;
                if let Some(l) = self.console.first_fatal(from) {
                    bail!(
                        "kernel {} died while running `{cmd}`: {}\nconsole tail:\n{}",
                        self.kernel_name,
                        l.text,
                        self.console.tail(40)
                    );
                }
                Err(e.context(format!(
                    "guest did not answer while running `{cmd}`\nconsole tail:\n{}",
                    self.console.tail(20)
                )))
            }
        }
    }

    /// The `ssh` command that reaches this guest as root, checking its host key against the
    /// one it announced (`known_hosts` in the run directory).
    pub fn ssh_command(&self) -> Vec<String> {
        let dir = &self.run_dir;
        vec![
            "ssh".into(),
            "-i".into(),
            dir.join("id_ed25519").display().to_string(),
            "-p".into(),
            self.files.ssh_port.to_string(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "root@127.0.0.1".into(),
        ]
    }

    /// Pauses the guest's CPUs (QMP `stop`): the guest stops answering while QEMU, its
    /// network forward and console stay up — a hung guest, on purpose.
    pub fn pause(&self) -> Result<()> {
        qmp_execute(&self.files.qmp_socket, "stop").map(|_| ())
    }

    /// Resumes a paused guest (QMP `cont`).
    pub fn resume(&self) -> Result<()> {
        qmp_execute(&self.files.qmp_socket, "cont").map(|_| ())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Asks QEMU to quit over QMP, then makes sure it is gone.
    pub fn shutdown(mut self) -> Result<()> {
        self.ssh = None;
        let _ = qmp_quit(&self.files.qmp_socket);
        self.kill();
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    reaper::unregister(child.id());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            reaper::unregister(child.id());
        }
    }

    /// The QEMU command line, for reports and reproducers.
    pub fn qemu_command(&self) -> String {
        self.profile.shell_command(&self.files)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.ssh = None;
        if self.child.is_some() {
            let _ = qmp_quit(&self.files.qmp_socket);
            self.kill();
        }
    }
}

fn qmp_quit(socket: &Path) -> Result<()> {
    qmp_execute(socket, "quit").map(|_| ())
}

/// Runs one QMP command without arguments (`stop`, `cont`, `quit`).
fn qmp_execute(socket: &Path, command: &str) -> Result<serde_json::Value> {
    qmp::execute_once(socket, command)
}

/// Prefix of the guests' private run directories in the temporary directory.
pub const RUN_DIR_PREFIX: &str = "daxdiff-vm-";

/// Makes `dir` (and missing parents) and sets it to 0700: it will hold a private key.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("make {} private", dir.display()))
}

/// The host key blob from the guest's `daxdiff-init: hostkey ssh-ed25519 BLOB` console line.
fn announced_host_key(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| {
        let rest = l.split("daxdiff-init: hostkey ssh-ed25519 ").nth(1)?;
        let blob = rest.split_whitespace().next()?;
        Some(blob.to_string())
    })
}

/// A free TCP port on loopback for the SSH forward.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn the_host_key_is_taken_from_the_console_line() {
        let lines = [
            "[    3.1] random: crng init done",
            "daxdiff-init: hostkey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc",
            "daxdiff-init: sshd-started",
        ];
        assert_eq!(
            announced_host_key(&lines).as_deref(),
            Some("AAAAC3NzaC1lZDI1NTE5AAAAIAbc")
        );
        // dropbearkey failed: the line carries no key.
        assert_eq!(announced_host_key(&["daxdiff-init: hostkey "]), None);
    }

    #[test]
    fn a_given_run_directory_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("a/b");
        private_dir(&run).unwrap();
        let mode = fs::metadata(&run).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

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
        assert!(
            err.contains("died or stalled during boot 3 times in a row"),
            "{err}"
        );
        assert!(err.contains("Oops: int3"), "{err}");
        for i in 1..BOOT_TRIES {
            let kept = std::fs::read_to_string(dir.path().join(format!("boot-failure-{i}.log")));
            assert!(kept.unwrap().contains("Oops: int3"));
        }
    }

    #[test]
    fn a_kernel_that_stalls_before_init_is_booted_again() {
        let (n, err) = tries(
            || {
                StalledBeforeInit {
                    kernel: "debian-7.3".into(),
                    tail: "[    4.482] LSM support for eBPF active".into(),
                }
                .into()
            },
            None,
        );
        assert_eq!(n, BOOT_TRIES);
        assert!(
            err.contains("stalled during boot 3 times in a row"),
            "{err}"
        );
        assert!(err.contains("init did not start"), "{err}");
    }

    #[test]
    fn qemus_complaint_about_a_taken_forward_port_is_recognized() {
        // What QEMU 7.2 prints when the port is bound by someone else (measured).
        let stderr = "qemu-system-x86_64: -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:46885-:22: \
                      Could not set up host forwarding rule 'tcp:127.0.0.1:46885-:22'\n";
        assert!(port_taken(stderr, 46885));
        assert!(!port_taken(stderr, 4688), "another port's complaint");
        assert!(!port_taken(
            "qemu-system-x86_64: -device nvdimm: bad",
            46885
        ));
    }

    #[test]
    fn a_taken_port_is_replaced_and_other_errors_stand() {
        let mut n = 0;
        let r = retrying_taken_ports(|| {
            n += 1;
            if n < 3 {
                Err(PortTaken {
                    port: 40000 + n as u16,
                }
                .into())
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut n = 0;
        let e = retrying_taken_ports::<()>(|| {
            n += 1;
            Err(PortTaken { port: 40022 }.into())
        })
        .unwrap_err();
        assert_eq!(n, PORT_TRIES);
        assert!(format!("{e}").contains("port 40022"), "{e}");
        let mut n = 0;
        let _ = retrying_taken_ports::<()>(|| {
            n += 1;
            Err(anyhow::anyhow!("QEMU exited (exit status: 1)"))
        });
        assert_eq!(n, 1, "only a taken port is retried");
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
        let (n, _) = tries(
            || anyhow::anyhow!("start qemu-system-x86_64: not found"),
            None,
        );
        assert_eq!(n, 1);
    }
}
