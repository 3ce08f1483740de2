//! A private apt configuration: its own sources list, lists, cache and an empty dpkg status,
//! so fetching guest-side packages never changes what the host has installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::lock::Lock;

/// A Debian package at one version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
}

pub struct Apt {
    root: PathBuf,
}

/// Mirrors taken from the host's own apt configuration, so a farm's local mirror is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors {
    pub debian: String,
    pub security: String,
    pub keyring: String,
}

impl Mirrors {
    /// `$DAXDIFF_DEBIAN_MIRROR` / `$DAXDIFF_SECURITY_MIRROR` override what the host uses.
    pub fn from_host() -> Result<Mirrors> {
        let mut text = String::new();
        text.push_str(&fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
        if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                text.push('\n');
                text.push_str(&fs::read_to_string(p).unwrap_or_default());
            }
        }
        let mut m = parse_host_sources(&text).context(
            "no Debian mirror found in the host's apt sources; set DAXDIFF_DEBIAN_MIRROR and DAXDIFF_SECURITY_MIRROR",
        )?;
        if let Ok(v) = std::env::var("DAXDIFF_DEBIAN_MIRROR") {
            m.debian = v;
        }
        if let Ok(v) = std::env::var("DAXDIFF_SECURITY_MIRROR") {
            m.security = v;
        }
        Ok(m)
    }
}

/// Private roots whose update failed in this process, with the error.
fn failed_updates() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, String>> {
    static FAILED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
    > = std::sync::OnceLock::new();
    FAILED.get_or_init(Default::default)
}

/// The lines of `apt-get update`'s output that say an index was not fetched. apt exits 0
/// when a mirror cannot be reached ("Some index files failed to download. They have been
/// ignored, or old ones used instead"), so its status alone does not tell.
/// "W: Failed to fetch URL  reason" says both what and why, so those lines are given when
/// there are any; else the `Err:` and `E:` lines.
pub fn update_failures(stdout: &str, stderr: &str) -> Vec<String> {
    let lines = || stdout.lines().chain(stderr.lines()).map(str::trim);
    let fetch: Vec<String> = lines()
        .filter_map(|l| l.strip_prefix("W: Failed to fetch "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if !fetch.is_empty() {
        return fetch;
    }
    lines()
        .filter(|l| {
            l.starts_with("Err:") || l.starts_with("E: ") || l.contains("failed to download")
        })
        .map(str::to_string)
        .collect()
}

/// Finds the Debian archive and security URIs in one-line or deb822 apt sources.
pub fn parse_host_sources(text: &str) -> Option<Mirrors> {
    let mut uris: Vec<(String, String)> = Vec::new(); // (uri, suite)
    let mut pending_uri: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            if line.is_empty() {
                pending_uri = None;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("deb ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with('[') && !w.ends_with(']'))
                .collect();
            if words.len() >= 2 {
                uris.push((words[0].to_string(), words[1].to_string()));
            }
        } else if let Some(u) = line.strip_prefix("URIs:") {
            pending_uri = Some(u.trim().to_string());
        } else if let Some(s) = line.strip_prefix("Suites:") {
            if let Some(u) = &pending_uri {
                for suite in s.split_whitespace() {
                    uris.push((u.clone(), suite.to_string()));
                }
            }
        }
    }
    let is_debian = |u: &str| u.contains("debian") && !u.contains("nodesource");
    let security = uris
        .iter()
        .find(|(u, s)| is_debian(u) && s.ends_with("-security"))
        .map(|(u, _)| u.clone())?;
    let debian = uris
        .iter()
        .find(|(u, s)| is_debian(u) && !s.ends_with("-security") && !u.contains("security"))
        .map(|(u, _)| u.clone())?;
    Some(Mirrors {
        debian: debian.trim_end_matches('/').to_string(),
        security: security.trim_end_matches('/').to_string(),
        keyring: "/usr/share/keyrings/debian-archive-keyring.gpg".to_string(),
    })
}

/// The host's Debian release codename (e.g. "bookworm").
pub fn host_release() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME: daxdiff needs a Debian host")
}

/// The release after `release`, whose backports carry the newer kernels.
fn next_release(release: &str) -> Option<&'static str> {
    match release {
        "bullseye" => Some("bookworm"),
        "bookworm" => Some("trixie"),
        "trixie" => Some("forky"),
        _ => None,
    }
}

/// Which suites a private apt root sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suites {
    /// The host's release only: guest userspace must match the host's libc and tools.
    HostRelease,
    /// The host's release and the next one, with backports: every kernel Debian serves.
    Kernels,
}

pub fn sources_list(m: &Mirrors, release: &str, suites: Suites) -> String {
    let line =
        |uri: &str, suite: &str| format!("deb [signed-by={}] {uri} {suite} main\n", m.keyring);
    let mut s = String::new();
    s += &line(&m.debian, release);
    s += &line(&m.debian, &format!("{release}-updates"));
    s += &line(&m.security, &format!("{release}-security"));
    if suites == Suites::Kernels {
        s += &line(&m.debian, &format!("{release}-backports"));
        if let Some(next) = next_release(release) {
            s += &line(&m.debian, next);
            s += &line(&m.security, &format!("{next}-security"));
            s += &line(&m.debian, &format!("{next}-backports"));
        }
    }
    s
}

impl Apt {
    /// Opens (creating if needed) a private apt root under `root`.
    pub fn open(root: &Path, suites: Suites) -> Result<Apt> {
        Apt::open_inner(root, suites, false)
    }

    /// Like [`Apt::open`], with `deb-src` entries too: for source packages.
    pub fn open_with_sources(root: &Path, suites: Suites) -> Result<Apt> {
        Apt::open_inner(root, suites, true)
    }

    fn open_inner(root: &Path, suites: Suites, with_sources: bool) -> Result<Apt> {
        let mirrors = Mirrors::from_host()?;
        let release = host_release()?;
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
            "lists/partial",
            "archives/partial",
            "dpkg",
        ] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("create {}", root.join(d).display()))?;
        }
        let status = root.join("dpkg/status");
        if !status.exists() {
            fs::write(&status, b"")?;
        }
        let mut list = sources_list(&mirrors, &release, suites);
        if with_sources {
            let src = list.replace("deb [", "deb-src [");
            list.push_str(&src);
        }
        let path = root.join("etc/apt/sources.list");
        if fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            fs::write(&path, &list)?;
            // New sources: the old lists say nothing about them.
            let _ = fs::remove_file(root.join("lists/.updated"));
        }
        Ok(Apt {
            root: root.to_path_buf(),
        })
    }

    fn options(&self) -> Vec<String> {
        let r = self.root.display();
        vec![
            format!("-oDir::Etc={r}/etc/apt"),
            format!("-oDir::State::Lists={r}/lists"),
            format!("-oDir::State::status={r}/dpkg/status"),
            format!("-oDir::Cache={r}/cache"),
            format!("-oDir::Cache::Archives={r}/archives"),
            "-oAPT::Architecture=amd64".into(),
            "-oAPT::Install-Recommends=false".into(),
            "-oDebug::NoLocking=true".into(),
            "-oAcquire::Retries=3".into(),
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    /// apt's own locks are off (`Debug::NoLocking`: they need root and a dpkg lock file,
    /// and `apt-cache` and `apt-get download` take none anyway), so this lock of ours is
    /// held around every apt command on the root: one process updating the lists while
    /// another reads or downloads would see them half written.
    fn lock(&self) -> Result<Lock> {
        Lock::take(
            &self.root.join("daxdiff.lock"),
            "private apt root",
            |busy| {
                eprintln!(
                    "apt: {} is in use by another daxdiff process{}; waiting for it",
                    self.root.display(),
                    busy.holder
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default()
                )
            },
        )
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c.env("LC_ALL", "C");
        c
    }

    /// Refreshes the package lists when they are older than a day (or `force`).
    pub fn update(&self, force: bool) -> Result<()> {
        let _lock = self.lock()?;
        let stamp = self.root.join("lists/.updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(24 * 3600));
        if fresh && !force {
            return Ok(());
        }
        if let Some(why) = failed_updates().lock().unwrap().get(&self.root) {
            // Once per process: every kernel of `images list` would wait for the same
            // unreachable mirror again.
            bail!("{why}");
        }
        eprintln!(
            "apt: refreshing the private package lists ({})",
            self.root.display()
        );
        let out = self
            .command("apt-get")
            .args(["-q", "update"])
            .output()
            .context("run apt-get (is apt installed?)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed = update_failures(&stdout, &stderr);
        if !out.status.success() || !failed.is_empty() {
            // Not stamped: the next command tries again instead of trusting stale or empty
            // lists for a day.
            let _ = fs::remove_file(&stamp);
            let mirrors = Mirrors::from_host()
                .map(|m| format!("{} and {}", m.debian, m.security))
                .unwrap_or_else(|_| "the host's mirrors".into());
            let detail = if failed.is_empty() {
                stderr.trim().to_string()
            } else {
                failed.join("\n  ")
            };
            let why = format!(
                "apt-get update of the private package lists ({}) could not read the \
                 mirrors {mirrors}:\n  {detail}\nCheck the network, or point daxdiff at a \
                 reachable mirror with DAXDIFF_DEBIAN_MIRROR and DAXDIFF_SECURITY_MIRROR",
                self.root.display(),
            );
            failed_updates()
                .lock()
                .unwrap()
                .insert(self.root.clone(), why.clone());
            bail!("{why}");
        }
        fs::write(&stamp, b"")?;
        Ok(())
    }

    /// Every version of every package whose name matches the POSIX regex `pattern`.
    pub fn search(&self, pattern: &str) -> Result<Vec<Package>> {
        let _lock = self.lock()?;
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()?;
        if !out.status.success() {
            bail!(
                "apt-cache search {pattern}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|s| s.trim().to_string())
            .collect();
        if names.is_empty() {
            return Ok(vec![]);
        }
        let out = self
            .command("apt-cache")
            .arg("madison")
            .args(&names)
            .output()?;
        Ok(parse_madison(&String::from_utf8_lossy(&out.stdout)))
    }

    /// A package version's raw `Depends:` field (empty when it has none).
    pub fn depends(&self, p: &Package) -> Result<String> {
        let _lock = self.lock()?;
        let out = self
            .command("apt-cache")
            .args(["show", &format!("{}={}", p.name, p.version)])
            .output()
            .context("run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {}={}: {}",
                p.name,
                p.version,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// The packages (with versions) that installing `names` on an empty system needs.
    pub fn closure(&self, names: &[&str]) -> Result<Vec<Package>> {
        let _lock = self.lock()?;
        let out = self
            .command("apt-get")
            .args(["-s", "-q", "install"])
            .args(names)
            .output()?;
        if !out.status.success() {
            bail!(
                "cannot resolve packages {}: {}",
                names.join(" "),
                String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(parse_simulated_installs(&String::from_utf8_lossy(
            &out.stdout,
        )))
    }

    /// Downloads packages into the private archive dir; returns their .deb paths.
    pub fn download(&self, pkgs: &[Package]) -> Result<Vec<PathBuf>> {
        let _lock = self.lock()?;
        let dir = self.root.join("archives");
        let mut missing = Vec::new();
        let mut paths = Vec::new();
        for p in pkgs {
            let found = find_deb(&dir, p)?;
            match found {
                Some(path) => paths.push(path),
                None => missing.push(p.clone()),
            }
        }
        if !missing.is_empty() {
            eprintln!(
                "apt: downloading {} package(s): {}",
                missing.len(),
                missing
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let specs: Vec<String> = missing
                .iter()
                .map(|p| format!("{}={}", p.name, p.version))
                .collect();
            let status = self
                .command("apt-get")
                .current_dir(&dir)
                .args(["-q", "download"])
                .args(&specs)
                // apt's chatter goes to stderr: stdout may be a command's result.
                .stdout(std::io::stderr())
                .status()
                .context("run apt-get download")?;
            if !status.success() {
                bail!(
                    "apt-get download {} failed (is the mirror reachable?)",
                    specs.join(" ")
                );
            }
            for p in &missing {
                paths.push(
                    find_deb(&dir, p)?
                        .with_context(|| format!("apt-get download did not produce {}", p.name))?,
                );
            }
        }
        Ok(paths)
    }
}

impl Apt {
    /// `apt-cache showsrc NAME`: every version's source stanza the lists know.
    pub fn showsrc(&self, name: &str) -> Result<String> {
        let _lock = self.lock()?;
        let out = self
            .command("apt-cache")
            .args(["showsrc", name])
            .output()
            .context("run apt-cache showsrc")?;
        if !out.status.success() {
            bail!(
                "apt-cache showsrc {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get source --download-only SPEC` into `dir`. Its exit status is returned, not
    /// judged: mirrors may serve some of a source package's files and not others, so the
    /// caller checks for the files it needs.
    pub fn download_source(&self, spec: &str, dir: &Path) -> Result<std::process::Output> {
        let _lock = self.lock()?;
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        self.command("apt-get")
            .current_dir(dir)
            .args(["-q", "source", "--download-only", spec])
            .output()
            .context("run apt-get source")
    }
}

/// Unpacks a downloaded package into `dir` (`dpkg-deb -x`), or only the archive `member`
/// (a path like `./usr/lib/debug`) when one is given.
pub fn unpack(deb: &Path, dir: &Path, member: Option<&str>) -> Result<()> {
    let st = match member {
        None => Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(dir)
            .status(),
        Some(m) => Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" \"$3\"")
            .arg("sh")
            .arg(deb)
            .arg(dir)
            .arg(m)
            .status(),
    }
    .context("run dpkg-deb")?;
    if !st.success() {
        match member {
            None => bail!(
                "dpkg-deb -x {} failed: the download may be damaged; remove it and retry",
                deb.display()
            ),
            Some(m) => bail!(
                "{} holds no {m} (or the download is damaged)",
                deb.display()
            ),
        }
    }
    Ok(())
}

/// apt names downloaded files `name_version_arch.deb` with ':' in versions escaped as `%3a`.
fn find_deb(dir: &Path, p: &Package) -> Result<Option<PathBuf>> {
    let ver = p.version.replace(':', "%3a");
    for arch in ["amd64", "all"] {
        let path = dir.join(format!("{}_{}_{}.deb", p.name, ver, arch));
        if path.exists() {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

pub fn parse_madison(text: &str) -> Vec<Package> {
    let mut v: Vec<Package> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let name = f.next()?;
            let version = f.next()?;
            (!name.is_empty() && !version.is_empty()).then(|| Package {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Reads `Inst name (version suite [arch])` lines of `apt-get -s install`.
pub fn parse_simulated_installs(text: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let version = rest.strip_prefix('(')?.split_whitespace().next()?;
            Some(Package {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// Debian version ordering, as dpkg defines it.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
            let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
            let (sa, sb) = (&a[..na], &b[..nb]);
            let (mut ia, mut ib) = (sa.chars(), sb.chars());
            loop {
                let (ca, cb) = (ia.next(), ib.next());
                if ca.is_none() && cb.is_none() {
                    break;
                }
                match order(ca).cmp(&order(cb)) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            a = &a[na..];
            b = &b[nb..];
            let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let va: u128 = a[..da].parse().unwrap_or(0);
            let vb: u128 = b[..db].parse().unwrap_or(0);
            match va.cmp(&vb) {
                Ordering::Equal => {}
                o => return o,
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn debian_versions_order_like_dpkg() {
        assert_eq!(
            compare_versions("6.12.117-1~deb12u1", "6.12.115-1~deb12u1"),
            Greater
        );
        assert_eq!(compare_versions("6.12.9-1", "6.12.10-1"), Less);
        assert_eq!(compare_versions("7.3.4-1~bpo13+1", "7.3.4-1"), Less);
        assert_eq!(compare_versions("1:1.0", "2.0"), Greater);
        assert_eq!(compare_versions("6.1.192-2", "6.1.192-2"), Equal);
        assert_eq!(compare_versions("1.0a", "1.0"), Greater);
        assert_eq!(compare_versions("1.0~rc1", "1.0"), Less);
    }

    #[test]
    fn host_sources_in_both_formats() {
        let deb822 = "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        let m = parse_host_sources(deb822).unwrap();
        assert_eq!(m.debian, "http://mirror.example/debian");
        assert_eq!(m.security, "http://mirror.example/debian-security");
        let oneline = "deb [arch=amd64] http://m.example/debian/ bookworm main\ndeb http://m.example/debian-security bookworm-security main\n";
        let m = parse_host_sources(oneline).unwrap();
        assert_eq!(m.debian, "http://m.example/debian");
        assert!(
            parse_host_sources("deb https://deb.nodesource.com/node_20.x nodistro main\n")
                .is_none()
        );
    }

    #[test]
    fn kernel_sources_reach_the_next_release_and_backports() {
        let m = Mirrors {
            debian: "http://d/debian".into(),
            security: "http://d/debian-security".into(),
            keyring: "/k".into(),
        };
        let k = sources_list(&m, "bookworm", Suites::Kernels);
        assert!(k.contains("http://d/debian trixie-backports main"));
        assert!(k.contains("http://d/debian-security bookworm-security main"));
        assert!(k.contains("http://d/debian-security trixie-security main"));
        let u = sources_list(&m, "bookworm", Suites::HostRelease);
        assert!(!u.contains("trixie") && !u.contains("backports"), "{u}");
    }

    #[test]
    fn an_unreachable_mirror_is_a_failed_update_though_apt_exits_0() {
        // What bookworm's apt-get prints (exit 0) with its mirror unreachable.
        let stdout = "Err:1 http://127.0.0.1:9/debian bookworm InRelease\n  \
            Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n\
            Reading package lists...\n";
        let stderr = "W: Failed to fetch http://127.0.0.1:9/debian/dists/bookworm/InRelease  \
            Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n\
            W: Some index files failed to download. They have been ignored, or old ones used instead.\n";
        let f = update_failures(stdout, stderr);
        assert_eq!(
            f,
            [
                "http://127.0.0.1:9/debian/dists/bookworm/InRelease Could not connect to \
              127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)"
            ]
        );
        // Without the warnings, the errors say it.
        assert_eq!(update_failures(stdout, "").len(), 1);
        // A healthy update says nothing of the kind.
        let ok = "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]\nHit:2 \
            http://deb.debian.org/debian-security bookworm-security InRelease\nReading package lists...\n";
        assert!(update_failures(ok, "").is_empty());
    }

    #[test]
    fn madison_and_simulation_output() {
        let madison = "linux-image-6.1.0-56-amd64-unsigned |  6.1.192-2 | http://x bookworm-security/main amd64 Packages\n";
        assert_eq!(
            parse_madison(madison),
            vec![Package {
                name: "linux-image-6.1.0-56-amd64-unsigned".into(),
                version: "6.1.192-2".into()
            }]
        );
        let sim = "NOTE: This is only a simulation!\nInst libc6 (2.36-9+deb12u10 Debian:12.10/stable [amd64])\nInst busybox-static (1:1.35.0-4+b3 Debian:12.10/stable [amd64])\nConf libc6 (2.36-9+deb12u10 Debian:12.10/stable [amd64])\n";
        let p = parse_simulated_installs(sim);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].version, "1:1.35.0-4+b3");
    }
}
