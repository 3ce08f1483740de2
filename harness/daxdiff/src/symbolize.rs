//! Kernel reports to file:line: each `func+0xoff/0xsize [module]` frame is looked up in the
//! kernel's vmlinux (or the module's `.ko`) DWARF, inlined callers included, and written in
//! the form syzkaller and the report parser read (`func+0x12/0x40 fs/dax.c:880`).
//! Debian kernels' vmlinux comes from their `-dbg` package, fetched when first needed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use daxdiff_observe::Frame;
use object::{Object, ObjectSymbol};

use crate::cache::{Entry, KeyBuilder};
use crate::images::apt::{Apt, Package, Suites};
use crate::images::Kernel;

/// One object file's DWARF and symbol table.
struct Image {
    loader: addr2line::Loader,
    /// Symbol name → (address, size); a name several static functions share keeps them all.
    symbols: HashMap<String, Vec<(u64, u64)>>,
    /// A module's copy with its sections laid out (see `laid_out`), kept while the loader
    /// reads it.
    _laid_out: Option<tempfile::NamedTempFile>,
}

impl Image {
    fn open(path: &Path) -> Result<Image> {
        Image::load(path, true)
    }

    fn load(path: &Path, lay_out: bool) -> Result<Image> {
        let f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: a read-only mapping of a cache file nothing rewrites in place (entries are
        // built beside and renamed); vmlinux is hundreds of MiB, so it is not copied in.
        let data =
            unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("map {}", path.display()))?;
        let file = object::File::parse(&*data)
            .with_context(|| format!("{} is not an ELF object", path.display()))?;
        if lay_out && file.kind() == object::ObjectKind::Relocatable {
            if let Some(copy) = laid_out(&data) {
                let mut tmp = tempfile::NamedTempFile::new()?;
                std::io::Write::write_all(&mut tmp, &copy)?;
                let mut image = Image::load(tmp.path(), false)
                    .with_context(|| format!("{} with its sections laid out", path.display()))?;
                image._laid_out = Some(tmp);
                return Ok(image);
            }
        }
        let mut symbols: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for s in file.symbols() {
            if s.kind() != object::SymbolKind::Text {
                continue;
            }
            if let Ok(name) = s.name() {
                symbols
                    .entry(name.to_string())
                    .or_default()
                    .push((s.address(), s.size()));
            }
        }
        let loader = addr2line::Loader::new(path)
            .map_err(|e| anyhow::anyhow!("read DWARF of {}: {e}", path.display()))?;
        Ok(Image {
            loader,
            symbols,
            _laid_out: None,
        })
    }

    /// The address of `frame` in this object: symbol + offset, the symbol chosen by size when
    /// several share the name. Return addresses (every frame but the faulting one) point
    /// after the call, so one byte back is looked up.
    fn address(&self, frame: &Frame, is_return: bool) -> Option<u64> {
        let cands = self.symbols.get(&frame.function)?;
        let (addr, _) = match frame.size {
            Some(size) => cands.iter().find(|c| c.1 == size).or(cands.first())?,
            None => cands.first()?,
        };
        let off = frame.offset?;
        Some(addr + off - u64::from(is_return && off > 0))
    }

    /// (function, file, line) from innermost inlined function to the frame's own function.
    fn locate(&self, addr: u64, strip: &[String]) -> Vec<(String, String, u32)> {
        let mut out = Vec::new();
        let Ok(mut frames) = self.loader.find_frames(addr) else {
            return out;
        };
        while let Ok(Some(f)) = frames.next() {
            let func = f
                .function
                .as_ref()
                .and_then(|n| n.raw_name().ok().map(|s| s.to_string()))
                .unwrap_or_default();
            if let Some(loc) = f.location {
                if let (Some(file), Some(line)) = (loc.file, loc.line) {
                    out.push((func, tidy(file, strip), line));
                }
            }
        }
        out
    }
}

/// A copy of a relocatable ELF64 little-endian object (a kernel module) whose allocated
/// sections get distinct addresses, as the module loader gives them, with every symbol moved
/// along with its section. In the .ko every section starts at 0, so `.text`, `.init.text`
/// and `.text.unlikely` overlap and the DWARF (relocated against section symbols) cannot tell
/// their functions apart: a frame would resolve into whichever came first. `None` for any
/// other layout (left as it is).
fn laid_out(data: &[u8]) -> Option<Vec<u8>> {
    const SHF_ALLOC: u64 = 0x2;
    const SHT_SYMTAB: u32 = 2;
    const SYM_SIZE: usize = 24;
    let u16_at = |d: &[u8], o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |d: &[u8], o: usize| Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |d: &[u8], o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    // ELFCLASS64, ELFDATA2LSB.
    if data.get(..4)? != b"\x7fELF" || data.get(4)? != &2 || data.get(5)? != &1 {
        return None;
    }
    let shoff = usize::try_from(u64_at(data, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(data, 0x3a)?);
    let shnum = usize::from(u16_at(data, 0x3c)?);
    if shnum == 0 || shentsize < 64 {
        return None;
    }
    let mut out = data.to_vec();
    let header = |i: usize| shoff + i * shentsize;
    let mut bases = vec![0u64; shnum];
    let mut next = 0x1000u64;
    for (i, base) in bases.iter_mut().enumerate() {
        let h = header(i);
        let flags = u64_at(data, h + 8)?;
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        let align = u64_at(data, h + 48)?.max(16);
        *base = next.div_ceil(align) * align;
        next = *base + u64_at(data, h + 32)?.max(1);
        out.get_mut(h + 16..h + 24)?
            .copy_from_slice(&base.to_le_bytes());
    }
    for i in 0..shnum {
        let h = header(i);
        if u32_at(data, h + 4)? != SHT_SYMTAB {
            continue;
        }
        let (off, size) = (
            usize::try_from(u64_at(data, h + 24)?).ok()?,
            usize::try_from(u64_at(data, h + 32)?).ok()?,
        );
        for sym in (off..off + size).step_by(SYM_SIZE) {
            let shndx = usize::from(u16_at(data, sym + 6)?);
            // Undefined, absolute, common and extended indexes stay.
            if shndx == 0 || shndx >= shnum {
                continue;
            }
            let value = u64_at(data, sym + 8)?.wrapping_add(bases[shndx]);
            out.get_mut(sym + 8..sym + 16)?
                .copy_from_slice(&value.to_le_bytes());
        }
    }
    Some(out)
}

/// Source paths relative to the kernel tree: the build's source directory, a Debian build
/// path (`…/linux-6.12.117/fs/dax.c`) or `./` removed.
fn tidy(path: &str, strip: &[String]) -> String {
    for s in strip {
        if let Some(rest) = path.strip_prefix(s.as_str()) {
            return rest
                .trim_start_matches('/')
                .trim_start_matches("./")
                .to_string();
        }
    }
    let p = path.trim_start_matches("./");
    // Debian's build tree: debian/build/build_amd64_none_amd64/fs/dax.c
    if let Some(i) = p.find("debian/build/build_") {
        if let Some(j) = p[i + 19..].find('/') {
            return p[i + 19 + j + 1..].to_string();
        }
    }
    if let Some(i) = p.rfind("/linux-") {
        if let Some(j) = p[i + 1..].find('/') {
            return p[i + 1 + j + 1..].to_string();
        }
    }
    p.to_string()
}

/// Symbolizes the reports of one kernel.
pub struct Symbolizer {
    vmlinux: Image,
    modules_dir: Option<PathBuf>,
    modules: HashMap<String, Option<Image>>,
    strip: Vec<String>,
}

impl Symbolizer {
    /// For `kernel`, fetching Debian's `-dbg` vmlinux when the kernel has no vmlinux of its own.
    pub fn for_kernel(cache_root: &Path, kernel: &Kernel) -> Result<Symbolizer> {
        let (vmlinux, modules_dir) = match &kernel.vmlinux {
            Some(v) if v.is_file() => (v.clone(), kernel.modules_dir()),
            _ if kernel.version != "local" => debian_dbg(cache_root, kernel)?,
            _ => bail!(
                "kernel {} has no vmlinux to symbolize with; add `vmlinux` to its catalogue entry",
                kernel.name
            ),
        };
        // The source tree, and the build's output directory (generated headers such as
        // asm/syscalls_64.h live there): both are this machine's paths, not the kernel's.
        let mut strip = Vec::new();
        for link in ["source", "build"] {
            if let Some(dir) = kernel
                .modules_dir()
                .and_then(|d| fs::canonicalize(d.join(link)).ok())
            {
                strip.push(dir.display().to_string());
            }
        }
        Ok(Symbolizer {
            vmlinux: Image::open(&vmlinux)?,
            modules_dir,
            modules: HashMap::new(),
            strip,
        })
    }

    fn module(&mut self, name: &str) -> Option<&Image> {
        if !self.modules.contains_key(name) {
            let image = self
                .modules_dir
                .as_ref()
                .and_then(|d| find_ko(d, name))
                .and_then(|p| Image::open(&p).ok());
            self.modules.insert(name.to_string(), image);
        }
        self.modules.get(name).and_then(Option::as_ref)
    }

    /// The report text with a source position after every frame that had none, and the
    /// functions inlined into it on lines of their own (marked `[inline]`) before it.
    pub fn symbolize(&mut self, text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let bare = daxdiff_observe::console::strip_prefixes(line);
            let is_pc = Frame::parse_pc(bare).is_some();
            let frame = Frame::parse_pc(bare)
                .or_else(|| Frame::parse(bare))
                .filter(|f| f.offset.is_some() && f.location.is_none());
            let Some(frame) = frame else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            // Every frame of a call trace is a return address; the faulting PC is not.
            let is_return = !is_pc;
            let strip = self.strip.clone();
            let image = match &frame.module {
                Some(m) => self.module(m),
                None => Some(&self.vmlinux),
            };
            let locs = image
                .and_then(|img| {
                    img.address(&frame, is_return)
                        .map(|a| img.locate(a, &strip))
                })
                .unwrap_or_default();
            // The outermost entry is the frame's own function; the ones before were inlined.
            let Some(((_, file, lineno), inlined)) = locs.split_last() else {
                out.push_str(line);
                out.push('\n');
                continue;
            };
            let prefix = &line[..line.len() - bare.len()];
            let indent: String = bare.chars().take_while(|c| c.is_whitespace()).collect();
            // Guessed frames (`? foo`) get their own position only: their inlined callers
            // would only add noise.
            let inlined = if frame.reliable { inlined } else { &[] };
            for (func, f, l) in inlined {
                out.push_str(&format!("{prefix}{indent}{func} {f}:{l} [inline]\n"));
            }
            out.push_str(&format!("{line} {file}:{lineno}\n"));
        }
        out
    }
}

fn find_ko(dir: &Path, module: &str) -> Option<PathBuf> {
    let want = [
        format!("{module}.ko"),
        format!("{}.ko", module.replace('_', "-")),
    ];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let ft = e.file_type().ok()?;
            if ft.is_dir() && !ft.is_symlink() {
                stack.push(p);
            } else if want
                .iter()
                .any(|w| p.file_name().is_some_and(|n| n == w.as_str()))
            {
                return Some(p);
            }
        }
    }
    None
}

/// Debian's `linux-image-<release>-dbg`: vmlinux and the modules' debug objects.
fn debian_dbg(cache_root: &Path, kernel: &Kernel) -> Result<(PathBuf, Option<PathBuf>)> {
    let pkg = Package {
        name: format!("linux-image-{}-dbg", kernel.release),
        version: kernel.version.clone(),
    };
    let key = KeyBuilder::default()
        .part("dbg", format!("{}={}", pkg.name, pkg.version))
        .finish();
    let e = Entry::new(cache_root, "dbg", &kernel.release, &key);
    if e.verify().is_none() {
        eprintln!(
            "symbolize: fetching {} {} for {} (vmlinux with DWARF; large, once)",
            pkg.name, pkg.version, kernel.name
        );
        let apt = Apt::open(&cache_root.join("apt/kernels"), Suites::Kernels)?;
        apt.update(false)?;
        let debs = apt.download(std::slice::from_ref(&pkg)).with_context(|| {
            format!(
                "{} {} is not served; reports of {} stay unsymbolized",
                pkg.name, pkg.version, kernel.name
            )
        })?;
        let release = kernel.release.clone();
        e.build(|dir| {
            crate::images::apt::unpack(&debs[0], dir, Some("./usr/lib/debug"))?;
            let v = format!("usr/lib/debug/boot/vmlinux-{release}");
            if !dir.join(&v).is_file() {
                bail!("{} holds no {v}", debs[0].display());
            }
            Ok((vec![], Default::default()))
        })?;
    }
    let vmlinux = e
        .dir
        .join(format!("usr/lib/debug/boot/vmlinux-{}", kernel.release));
    let mods = e
        .dir
        .join(format!("usr/lib/debug/lib/modules/{}", kernel.release));
    Ok((vmlinux, mods.is_dir().then_some(mods)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Looked up by name below: kept out of line, or a codegen change inlines it into the
    // test harness's closure and its symbol disappears.
    #[test]
    #[inline(never)]
    fn paths_become_tree_relative() {
        let strip = vec!["tree/src".to_string()];
        assert_eq!(tidy("tree/src/fs/dax.c", &strip), "fs/dax.c");
        // A generated header in the build's output directory.
        assert_eq!(
            tidy(
                "tree/out/./arch/x86/include/generated/asm/syscalls_64.h",
                &["tree/out".to_string()]
            ),
            "arch/x86/include/generated/asm/syscalls_64.h"
        );
        assert_eq!(
            tidy("/build/reproducible-path/linux-6.12.117/mm/gup.c", &[]),
            "mm/gup.c"
        );
        assert_eq!(tidy("./include/linux/mm.h", &[]), "include/linux/mm.h");
        assert_eq!(
            tidy("debian/build/build_amd64_none_amd64/fs/ext4/inode.c", &[]),
            "fs/ext4/inode.c"
        );
    }

    /// A module-like object: two functions in different sections, both at offset 0 of their
    /// section in the .o. Each resolves to its own line.
    #[test]
    fn functions_of_a_relocatable_object_resolve_in_their_own_sections() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("mod.c");
        std::fs::write(
            &src,
            "int sink;\n\
             __attribute__((noinline)) void in_text(int x)\n\
             {\n\
             \tsink += x * 3;\n\
             }\n\
             __attribute__((noinline, section(\".init.text\"))) void in_init(int x)\n\
             {\n\
             \tsink -= x * 5;\n\
             }\n",
        )
        .unwrap();
        let obj = dir.path().join("mod.o");
        let st = std::process::Command::new("gcc")
            .args(["-g", "-O1", "-fno-pic", "-c", "-o"])
            .arg(&obj)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        let image = Image::open(&obj).unwrap();
        for (func, line) in [("in_text", 4), ("in_init", 8)] {
            let frame = Frame::parse(&format!(" {func}+0x4/0x10 [mod]")).unwrap();
            let addr = image.address(&frame, false).unwrap();
            let locs = image.locate(addr, &[]);
            assert!(
                locs.iter()
                    .any(|(f, file, l)| f == func && file.ends_with("mod.c") && *l == line),
                "{func}: {locs:?}"
            );
        }
    }

    /// The symbolizer's own object (this test binary has DWARF: the release profile keeps
    /// line tables) stands in for a vmlinux: a frame of a known function resolves to this file.
    #[test]
    fn frames_resolve_to_file_and_line_through_dwarf() {
        let exe = std::env::current_exe().unwrap();
        let image = Image::open(&exe).unwrap();
        let name = image
            .symbols
            .keys()
            .find(|k| k.contains("paths_become_tree_relative"))
            .cloned()
            .expect("the test function is in the symbol table");
        let frame =
            Frame::parse(&format!(" {name}+0x10/0x{:x}", image.symbols[&name][0].1)).unwrap();
        let addr = image.address(&frame, false).unwrap();
        let locs = image.locate(addr, &[]);
        assert!(
            locs.iter()
                .any(|(_, f, l)| f.ends_with("symbolize.rs") && *l > 0),
            "{locs:?}"
        );
    }
}
