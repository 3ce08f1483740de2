//! A daxdiff program → syzkaller text: syscalls under syzkaller's names with numbers for
//! flags, mappings and buffers laid out in its data area; pseudo-calls refused or commented.

use std::collections::HashMap;

use super::text::{SyzArg, SyzCall, SyzProgram, SyzProp, ADDR_BASE, DATA_SIZE};
use super::{Refusal, SyzError, TARGET_HINT};
use crate::program::{Arg, BufRef, Call, Program, ResId, ThreadId};
use crate::target::{CallKind, Dir, FileTarget, ParamType, PipeEnd, Pseudo, ResourceKind, Target};

/// How to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Write calls without a syzkaller counterpart as `# daxdiff only: …` comments (listed in
    /// [`Exported::skipped`]) instead of refusing the program.
    pub skip_unknown: bool,
}

/// An exported program and the calls left as comments.
#[derive(Clone, Debug)]
pub struct Exported {
    pub program: SyzProgram,
    pub skipped: Vec<Refusal>,
}

/// The comment a call without a syzkaller counterpart becomes with `skip_unknown`.
pub const DAXDIFF_ONLY: &str = "# daxdiff only:";

const PAGE: u64 = 0x1000;
const PMD: u64 = 0x20_0000;
const MAP_FIXED: u64 = 0x10;
const MREMAP_MAYMOVE: u64 = 0x1;
const MREMAP_FIXED: u64 = 0x2;
/// sizeof(struct io_uring_params).
const URING_PARAMS: u64 = 120;

/// Export `prog` (valid against `target`) as syzkaller text.
pub fn export(target: &Target, prog: &Program, opts: &ExportOptions) -> Result<Exported, SyzError> {
    let mut ex = Exporter {
        target,
        vars: HashMap::new(),
        next_var: 0,
        used: 0,
    };
    let mut out = SyzProgram::default();
    let mut refused = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut line = 0;
    for c in &prog.calls {
        line += c.comments.len() + 1;
        pending.extend(c.comments.iter().cloned());
        match ex.call(c) {
            Ok((mut sc, hint)) => {
                sc.line = line;
                sc.comments = std::mem::take(&mut pending);
                if let Some(t) = hint {
                    sc.comments.push(format!("{TARGET_HINT} {}", t.suffix()));
                }
                out.calls.push(sc);
            }
            Err(why) => {
                if let Some(r) = c.ret {
                    let gone = format!(
                        "comes from line {line} ({}), which was not exported",
                        c.name
                    );
                    ex.vars.insert(r, Var::Gone(gone));
                }
                pending.push(format!("{DAXDIFF_ONLY} {}", c.to_text()));
                refused.push(Refusal {
                    line,
                    call: c.name.clone(),
                    why,
                });
            }
        }
    }
    if !refused.is_empty() && !opts.skip_unknown {
        return Err(SyzError::Refused(refused));
    }
    out.trailer = pending;
    out.trailer.extend(prog.trailer.iter().cloned());
    Ok(Exported {
        program: out,
        skipped: refused,
    })
}

/// What a daxdiff resource is on the syzkaller side.
#[derive(Clone, Debug)]
enum Var {
    /// A syzkaller result variable (fds, rings, pids).
    Named(String),
    Pipe {
        read: String,
        write: String,
    },
    /// A mapping at a fixed address of the data area.
    Map {
        addr: u64,
    },
    /// A value syzkaller has no variable for (a registered buffer table).
    Token,
    Gone(String),
}

struct Exporter<'a> {
    target: &'a Target,
    vars: HashMap<ResId, Var>,
    next_var: u32,
    /// Bytes of the data area handed out so far.
    used: u64,
}

impl Exporter<'_> {
    fn fresh(&mut self) -> String {
        self.next_var += 1;
        format!("r{}", self.next_var - 1)
    }

    /// `size` bytes of syzkaller's data area, aligned to `align`.
    fn alloc(&mut self, size: u64, align: u64) -> Result<u64, String> {
        let off = self.used.div_ceil(align) * align;
        if off + size > DATA_SIZE {
            return Err(format!(
                "0x{size:x} more bytes do not fit syzkaller's 16 MiB data area \
                 (0x{:x} in use); export a program with smaller mappings or buffers",
                off
            ));
        }
        self.used = off + size;
        Ok(ADDR_BASE + off)
    }

    fn scalar(&self, a: &Arg) -> Result<u64, String> {
        self.target
            .scalar_value(a)
            .ok_or_else(|| "expects a number or known constant names".to_string())
    }

    /// One call; the mount comment to write before it, if its files are not on ext4.
    fn call(&mut self, c: &Call) -> Result<(SyzCall, Option<FileTarget>), String> {
        let desc = self
            .target
            .call(&c.name)
            .ok_or_else(|| format!("daxdiff describes no {}", c.name))?;
        let mut sc = SyzCall {
            props: if c.thread == ThreadId::MAIN {
                Vec::new()
            } else {
                vec![SyzProp {
                    name: "async".into(),
                    value: None,
                }]
            },
            ..SyzCall::default()
        };
        let hint = desc
            .file_target
            .filter(|t| !matches!(t, FileTarget::Ext4 | FileTarget::Devdax));
        match desc.kind {
            CallKind::Pseudo(Pseudo::Pipe) => {
                let (read, write) = (self.fresh(), self.fresh());
                let at = self.alloc(8, 8)?;
                let end = |n: &String| SyzArg::Def {
                    name: n.clone(),
                    value: Box::new(SyzArg::Int(u64::MAX)),
                };
                sc.name = "pipe2".into();
                sc.args = vec![
                    ptr(at, SyzArg::Struct(vec![end(&read), end(&write)])),
                    SyzArg::Int(self.scalar(&c.args[0])?),
                ];
                if let Some(r) = c.ret {
                    self.vars.insert(r, Var::Pipe { read, write });
                }
                return Ok((sc, None));
            }
            CallKind::Pseudo(Pseudo::UringSetup) => {
                let at = self.alloc(URING_PARAMS, 8)?;
                sc.name = "io_uring_setup".into();
                sc.args = vec![
                    SyzArg::Int(self.scalar(&c.args[0])?),
                    SyzArg::Ptr {
                        addr: Some(at),
                        vma_size: None,
                        pointee: None,
                    },
                ];
            }
            CallKind::Pseudo(_) => {
                return Err(
                    "a daxdiff pseudo-call with no syzkaller counterpart (--skip-unknown writes \
                     it as a comment)"
                        .into(),
                )
            }
            CallKind::Syscall { .. } => {
                sc.name = match c.name.as_str() {
                    "mmap" | "mmap$anon" => return self.mmap(c, sc).map(|s| (s, None)),
                    "mremap" => return self.mremap(c, sc).map(|s| (s, None)),
                    "read$pipe" => "read".into(),
                    "close$pipe_r" | "close$pipe_w" => "close".into(),
                    "fcntl$setfl" => "fcntl$setstatus".into(),
                    "io_uring_register$REGISTER_BUFFERS" => {
                        "io_uring_register$IORING_REGISTER_BUFFERS".into()
                    }
                    "io_uring_register$UNREGISTER_BUFFERS" => {
                        "io_uring_register$IORING_UNREGISTER_BUFFERS".into()
                    }
                    n if n.starts_with("ioctl$") => n.into(),
                    _ => c.base_name().into(),
                };
                for i in 0..c.args.len() {
                    let a = self.arg(c, i, desc.file_target)?;
                    sc.args.push(a);
                }
            }
        }
        match desc.ret_kind {
            Some(ResourceKind::RegBufs) => {
                c.ret.map(|r| self.vars.insert(r, Var::Token));
            }
            Some(_) => {
                let name = self.fresh();
                sc.ret = Some(name.clone());
                c.ret.map(|r| self.vars.insert(r, Var::Named(name)));
            }
            None => {}
        }
        Ok((sc, hint))
    }

    fn arg(&mut self, c: &Call, i: usize, ft: Option<FileTarget>) -> Result<SyzArg, String> {
        let desc = self.target.call(&c.name).expect("validated call");
        let p = &desc.params[i];
        let a = &c.args[i];
        let fail = |e: String| format!("argument {} ({}): {e}", i + 1, p.name);
        match (&p.ty, a) {
            (ParamType::Resource { pipe_end, .. }, Arg::Res(r)) => match self.vars.get(r) {
                Some(Var::Named(n)) => Ok(SyzArg::Res(n.clone())),
                Some(Var::Pipe { read, write }) => Ok(SyzArg::Res(
                    if *pipe_end == Some(PipeEnd::Write) {
                        write
                    } else {
                        read
                    }
                    .clone(),
                )),
                Some(Var::Gone(why)) => Err(fail(format!("r{} {why}", r.0))),
                _ => Err(fail(format!("r{} has no syzkaller variable", r.0))),
            },
            (ParamType::Path { .. }, Arg::Path(name)) => {
                let mut bytes = match ft {
                    Some(FileTarget::Devdax) => format!("/dev/{name}"),
                    _ => format!("./{name}"),
                }
                .into_bytes();
                bytes.push(0);
                let at = self.alloc(bytes.len() as u64, 1).map_err(fail)?;
                Ok(ptr(at, SyzArg::Data { bytes, size: None }))
            }
            (ParamType::Buffer { dir }, Arg::Buf(b)) => {
                let len = desc
                    .params
                    .iter()
                    .zip(&c.args)
                    .find_map(|(q, x)| match q.ty {
                        ParamType::Len { of } if of == i => self.target.scalar_value(x),
                        _ => None,
                    });
                self.buf(b, *dir, len.unwrap_or(PAGE)).map_err(fail)
            }
            (ParamType::Vma, Arg::Buf(b)) => {
                let size = c
                    .args
                    .get(i + 1)
                    .and_then(|x| self.target.scalar_value(x))
                    .unwrap_or(PAGE);
                self.vma(b, size).map_err(fail)
            }
            (ParamType::Iovecs { dir }, Arg::Iovecs(iovs)) => {
                let mut items = Vec::new();
                for iov in iovs {
                    let base = self.buf(&iov.base, *dir, iov.len).map_err(fail)?;
                    items.push(SyzArg::Struct(vec![base, SyzArg::Int(iov.len)]));
                }
                let at = self.alloc(16 * iovs.len().max(1) as u64, 8).map_err(fail)?;
                Ok(ptr(at, SyzArg::Array(items)))
            }
            (ParamType::Struct { name }, Arg::Struct(fields)) => {
                let mut vals = fields
                    .iter()
                    .map(|f| self.scalar(f).map(SyzArg::Int))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(fail)?;
                // Trailing zero fields are syzkaller's defaults; it leaves them out too.
                while vals.last() == Some(&SyzArg::Int(0)) {
                    vals.pop();
                }
                let size = self.target.struct_desc(name).map_or(8, |s| s.size() as u64);
                let at = self.alloc(size, 8).map_err(fail)?;
                Ok(ptr(at, SyzArg::Struct(vals)))
            }
            (_, Arg::Buf(BufRef::Nil)) => Ok(SyzArg::Int(0)),
            _ => self.scalar(a).map(SyzArg::Int).map_err(fail),
        }
    }

    fn map_addr(&self, map: ResId) -> Result<u64, String> {
        match self.vars.get(&map) {
            Some(Var::Map { addr }) => Ok(*addr),
            Some(Var::Gone(why)) => Err(format!("r{} {why}", map.0)),
            _ => Err(format!("r{} is not a mapping", map.0)),
        }
    }

    fn buf(&mut self, b: &BufRef, dir: Dir, len: u64) -> Result<SyzArg, String> {
        match b {
            BufRef::Nil => Ok(SyzArg::Int(0)),
            BufRef::Map { map, offset } => Ok(SyzArg::Ptr {
                addr: Some(self.map_addr(*map)? + offset),
                vma_size: None,
                // Data written in before the call would land in the mapping (and fault its
                // pages in); only an output buffer says its size.
                pointee: (dir == Dir::Out).then(|| {
                    Box::new(SyzArg::Data {
                        bytes: Vec::new(),
                        size: Some(len),
                    })
                }),
            }),
            BufRef::Scratch { size } => {
                let at = self.alloc(*size, PAGE)?;
                Ok(ptr(
                    at,
                    SyzArg::Data {
                        bytes: Vec::new(),
                        size: Some(*size),
                    },
                ))
            }
        }
    }

    fn vma(&self, b: &BufRef, size: u64) -> Result<SyzArg, String> {
        match b {
            BufRef::Map { map, offset } => Ok(vma(self.map_addr(*map)? + offset, size)),
            _ => Err("expects an address in a mapping".into()),
        }
    }

    /// A mapping at the next free place of the data area, PMD-aligned when it is that large
    /// (DAX maps huge pages only at aligned addresses).
    fn place(&mut self, len: u64) -> Result<u64, String> {
        let align = len.next_power_of_two().clamp(PAGE, PMD);
        self.alloc(len.div_ceil(PAGE) * PAGE, align)
    }

    fn mmap(&mut self, c: &Call, mut sc: SyzCall) -> Result<SyzCall, String> {
        let len = self.scalar(&c.args[1])?;
        let at = self.place(len)?;
        let anon = c.name == "mmap$anon";
        sc.name = "mmap".into();
        sc.args = vec![
            vma(at, len),
            SyzArg::Int(len),
            SyzArg::Int(self.scalar(&c.args[2])?),
            SyzArg::Int(self.scalar(&c.args[3])? | MAP_FIXED),
            if anon {
                SyzArg::Int(u64::MAX)
            } else {
                self.arg(c, 4, None)?
            },
            if anon {
                SyzArg::Int(0)
            } else {
                SyzArg::Int(self.scalar(&c.args[5])?)
            },
        ];
        if let Some(r) = c.ret {
            self.vars.insert(r, Var::Map { addr: at });
        }
        Ok(sc)
    }

    /// A moving mremap goes to a fixed new place (syzkaller has no other way to address
    /// it later); one that may not move stays where it is.
    fn mremap(&mut self, c: &Call, mut sc: SyzCall) -> Result<SyzCall, String> {
        let old_len = self.scalar(&c.args[1])?;
        let new_len = self.scalar(&c.args[2])?;
        let flags = self.scalar(&c.args[3])?;
        let old = self.arg(c, 0, None)?;
        let (new_at, flags, new_arg) = if flags & MREMAP_MAYMOVE != 0 {
            let at = self.place(new_len)?;
            (at, flags | MREMAP_FIXED, vma(at, new_len))
        } else {
            let Arg::Buf(BufRef::Map { map, offset }) = &c.args[0] else {
                return Err("argument 1 (addr) expects an address in a mapping".into());
            };
            (self.map_addr(*map)? + offset, flags, SyzArg::Int(0))
        };
        sc.name = "mremap".into();
        sc.args = vec![
            old,
            SyzArg::Int(old_len),
            SyzArg::Int(new_len),
            SyzArg::Int(flags),
            new_arg,
        ];
        if let Some(r) = c.ret {
            self.vars.insert(r, Var::Map { addr: new_at });
        }
        Ok(sc)
    }
}

fn ptr(at: u64, pointee: SyzArg) -> SyzArg {
    SyzArg::Ptr {
        addr: Some(at),
        vma_size: None,
        pointee: Some(Box::new(pointee)),
    }
}

fn vma(at: u64, size: u64) -> SyzArg {
    SyzArg::Ptr {
        addr: Some(at),
        vma_size: Some(size),
        pointee: Some(Box::new(SyzArg::Nil)),
    }
}
