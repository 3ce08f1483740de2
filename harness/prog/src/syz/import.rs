//! syzkaller text → a daxdiff program that validates against the descriptions, in canonical
//! text form: calls resolved to daxdiff's variants, numbers turned into named flags.

use std::collections::HashMap;

use super::text::{self, SyzArg, SyzCall};
use super::{file_target, Refusal, SyzError, TARGET_HINT};
use crate::program::{Arg, BufRef, Call, Iovec, Program, ResId, ThreadId};
use crate::target::{CallKind, FileTarget, Param, ParamType, PipeEnd, ResourceKind, Target};
use crate::validate::validate;

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The mount relative file names live on (`openat$ext4` …); devdax paths pick `$devdax`.
    pub target: FileTarget,
    /// Drop the calls that cannot be converted (listed in [`Imported::skipped`]) instead of
    /// refusing the program.
    pub skip_unknown: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            target: FileTarget::Ext4,
            skip_unknown: false,
        }
    }
}

/// An imported program and what the import left out or changed.
#[derive(Clone, Debug)]
pub struct Imported {
    pub program: Program,
    /// Calls dropped (only with `skip_unknown`), each with the reason.
    pub skipped: Vec<Refusal>,
    /// Calls converted with a caveat (buffer contents not carried, ring mappings absorbed).
    pub notes: Vec<Refusal>,
}

const AT_FDCWD: u64 = (-100i64) as u64;
const PAGE: u64 = 0x1000;
/// Placement flags syzkaller needs for its fixed layout; daxdiff lets the kernel place.
const MAP_FIXED: u64 = 0x10;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MAP_ANONYMOUS: u64 = 0x20;
const MREMAP_FIXED: u64 = 0x2;
const F_SETFL: u64 = 4;

/// Import syzkaller program text against `target`.
pub fn import(target: &Target, text: &str, opts: &ImportOptions) -> Result<Imported, SyzError> {
    let syz = text::parse(text)?;
    let mut im = Importer {
        target,
        opts,
        prog: Program::default(),
        vars: HashMap::new(),
        maps: Vec::new(),
        refused: Vec::new(),
        notes: Vec::new(),
    };
    let mut pending = Vec::new();
    for call in &syz.calls {
        let mut comments = std::mem::take(&mut pending);
        let mut hint = None;
        for c in &call.comments {
            match c.trim().strip_prefix(TARGET_HINT) {
                Some(name) => match file_target(name) {
                    Some(t) => hint = Some(t),
                    None => im.refused.push(Refusal {
                        line: call.line,
                        call: call.name.clone(),
                        why: format!(
                            "unknown mount '{}' in \"{TARGET_HINT}\" (ext4, xfs, devdax, nodax, blkdev)",
                            name.trim()
                        ),
                    }),
                },
                None => comments.push(c.clone()),
            }
        }
        match im.call(call, hint) {
            Ok(Some(mut c)) => {
                c.comments = comments;
                im.prog.calls.push(c);
            }
            Ok(None) => pending = comments,
            Err(why) => {
                im.forget(
                    call,
                    &format!("comes from line {}, which was not imported", call.line),
                );
                im.refused.push(Refusal {
                    line: call.line,
                    call: call.name.clone(),
                    why,
                });
                pending = comments;
            }
        }
    }
    if !im.refused.is_empty() && !opts.skip_unknown {
        return Err(SyzError::Refused(im.refused));
    }
    let mut program = im.prog;
    program.trailer = pending;
    program.trailer.extend(syz.trailer);
    Ok(Imported {
        program,
        skipped: im.refused,
        notes: im.notes,
    })
}

/// What a syzkaller resource name stands for on the daxdiff side.
#[derive(Clone, Debug)]
enum Var {
    Res {
        id: ResId,
        end: Option<PipeEnd>,
    },
    /// Produced by a call that was not imported, or a value daxdiff does not keep.
    Gone(String),
}

struct Mapping {
    start: u64,
    len: u64,
    res: ResId,
}

/// A syzkaller call resolved to a daxdiff call whose arguments are still syzkaller's.
struct Plan {
    name: String,
    /// One per daxdiff parameter; `Auto` where daxdiff fixes the value.
    args: Vec<SyzArg>,
    /// Syzkaller names bound to the call's result (a pipe binds both ends).
    defs: Vec<(String, Option<PipeEnd>)>,
    /// Address range the result maps, and the range it unmaps.
    maps: Option<(u64, u64)>,
    unmaps: Option<(u64, u64)>,
}

impl Plan {
    fn new(name: impl Into<String>, args: Vec<SyzArg>) -> Plan {
        Plan {
            name: name.into(),
            args,
            defs: Vec::new(),
            maps: None,
            unmaps: None,
        }
    }
}

struct Importer<'a> {
    target: &'a Target,
    opts: &'a ImportOptions,
    prog: Program,
    vars: HashMap<String, Var>,
    maps: Vec<Mapping>,
    refused: Vec<Refusal>,
    notes: Vec<Refusal>,
}

fn need(a: &[SyzArg], n: usize) -> Result<(), String> {
    if a.len() == n {
        Ok(())
    } else {
        Err(format!("takes {n} arguments, found {}", a.len()))
    }
}

fn int(a: &SyzArg) -> Option<u64> {
    match a {
        SyzArg::Int(v) => Some(*v),
        SyzArg::Nil => Some(0),
        SyzArg::Def { value, .. } => int(value),
        _ => None,
    }
}

/// The address a pointer argument points at, if it has a fixed one.
fn addr(a: &SyzArg) -> Option<u64> {
    match a {
        SyzArg::Ptr { addr, .. } => *addr,
        _ => None,
    }
}

fn pointee(a: &SyzArg) -> Option<&SyzArg> {
    match a {
        SyzArg::Ptr { pointee, .. } => pointee.as_deref(),
        _ => None,
    }
}

/// Every inner `<rN=>` name under `a`.
fn inner_defs<'s>(a: &'s SyzArg, out: &mut Vec<&'s str>) {
    match a {
        SyzArg::Def { name, value } => {
            out.push(name);
            inner_defs(value, out);
        }
        SyzArg::Ptr {
            pointee: Some(p), ..
        } => inner_defs(p, out),
        SyzArg::Union { value: Some(v), .. } => inner_defs(v, out),
        SyzArg::Struct(items) | SyzArg::Array(items) => {
            items.iter().for_each(|i| inner_defs(i, out))
        }
        _ => {}
    }
}

impl Importer<'_> {
    /// Mark every name `call` defines as gone, so later uses say where it came from.
    fn forget(&mut self, call: &SyzCall, why: &str) {
        let mut names: Vec<&str> = call.ret.iter().map(String::as_str).collect();
        call.args.iter().for_each(|a| inner_defs(a, &mut names));
        for n in names {
            self.vars.insert(n.to_string(), Var::Gone(why.to_string()));
        }
    }

    fn note(&mut self, call: &SyzCall, why: impl Into<String>) {
        self.notes.push(Refusal {
            line: call.line,
            call: call.name.clone(),
            why: why.into(),
        });
    }

    fn pipe_end(&self, a: &SyzArg) -> Option<PipeEnd> {
        match a {
            SyzArg::Res(n) => match self.vars.get(n) {
                Some(Var::Res { end, .. }) => *end,
                _ => None,
            },
            _ => None,
        }
    }

    /// The mount a path argument's file is on.
    fn path_target(&self, a: &SyzArg, hint: FileTarget) -> Result<FileTarget, String> {
        let p = path_of(a)?;
        if p.starts_with("/dev/dax") {
            Ok(FileTarget::Devdax)
        } else if p.starts_with('/') {
            Err(format!(
                "absolute path {p} is outside daxdiff's DAX mounts; use a relative name \
                 (./file0, on the --target mount) or /dev/daxN.M"
            ))
        } else {
            Ok(hint)
        }
    }

    /// Convert one call: `Ok(None)` when daxdiff does its work elsewhere.
    fn call(&mut self, call: &SyzCall, hint: Option<FileTarget>) -> Result<Option<Call>, String> {
        let mut thread = ThreadId::MAIN;
        for p in &call.props {
            let why = match p.name.as_str() {
                "async" => {
                    thread = ThreadId::SECOND;
                    continue;
                }
                "fail_nth" => "fault injection (fail_nth) has no daxdiff counterpart; remove it to run the call plainly",
                "rerun" => "rerun has no daxdiff counterpart; repeat the call instead",
                _ => "this call property has no daxdiff counterpart",
            };
            if !self.opts.skip_unknown {
                return Err(format!("({}): {why}", p.name));
            }
            self.note(call, format!("({}) dropped: {why}", p.name));
        }
        let Some(plan) = self.plan(call, hint.unwrap_or(self.opts.target))? else {
            return Ok(None);
        };
        let desc = self
            .target
            .call(&plan.name)
            .ok_or_else(|| format!("daxdiff describes no {}", plan.name))?;
        if plan.args.len() != desc.params.len() {
            return Err(format!(
                "takes {} arguments as {}, found {}",
                desc.params.len(),
                plan.name,
                plan.args.len()
            ));
        }
        let mut args = Vec::new();
        for (i, (a, p)) in plan.args.iter().zip(&desc.params).enumerate() {
            let arg = self
                .arg(call, a, i, &plan.args, &desc.params)
                .map_err(|e| format!("argument {} ({}): {e}", i + 1, p.name))?;
            args.push(arg);
        }
        let mut out = Call::new(plan.name.clone(), args);
        out.thread = thread;
        let id = ResId(self.prog.fresh_res().0);
        if desc.ret.is_some() {
            out.ret = Some(id);
        }
        self.prog.calls.push(out);
        if let Err(e) = validate(self.target, &self.prog) {
            self.prog.calls.pop();
            return Err(match e.arg {
                Some(i) => format!("argument {} ({}): {}", i + 1, desc.params[i].name, e.kind),
                None => e.kind.to_string(),
            });
        }
        let made = self.prog.calls.pop();
        // Names the call defines and daxdiff keeps no value for.
        self.forget(
            call,
            &format!("is an output of {} that daxdiff does not keep", call.name),
        );
        if let (Some(r), true) = (&call.ret, desc.ret.is_some()) {
            self.vars.insert(r.clone(), Var::Res { id, end: None });
        }
        for (n, end) in plan.defs {
            self.vars.insert(n, Var::Res { id, end });
        }
        if let Some((start, len)) = plan.unmaps {
            self.maps
                .retain(|m| !(m.start >= start && m.start + m.len <= start + len));
        }
        if let Some((start, len)) = plan.maps {
            self.maps.push(Mapping {
                start,
                len: len.div_ceil(PAGE) * PAGE,
                res: id,
            });
        }
        Ok(made)
    }

    /// Which daxdiff call a syzkaller call is, with its arguments lined up.
    fn plan(&mut self, call: &SyzCall, ft: FileTarget) -> Result<Option<Plan>, String> {
        let a = &call.args;
        let base = call.base_name();
        let fs_only = |t: FileTarget, what: &str| {
            if t.is_fsdax() {
                Ok(format!("{what}${}", t.suffix()))
            } else {
                Err(format!(
                    "daxdiff describes {what} on the ext4 and xfs DAX mounts only, not {}",
                    t.suffix()
                ))
            }
        };
        let plan = match base {
            "openat" => {
                need(a, 4)?;
                if int(&a[0]) != Some(AT_FDCWD) {
                    return Err(
                        "dirfd must be AT_FDCWD (0xffffffffffffff9c): daxdiff opens \
                                files in the program's own directory"
                            .into(),
                    );
                }
                let t = self.path_target(&a[1], ft)?;
                Plan::new(
                    format!("openat${}", t.suffix()),
                    vec![SyzArg::Auto, a[1].clone(), a[2].clone(), SyzArg::Auto],
                )
            }
            "open" => {
                need(a, 3)?;
                match self.path_target(&a[0], ft)? {
                    FileTarget::Devdax => Plan::new(
                        "openat$devdax",
                        vec![SyzArg::Auto, a[0].clone(), a[1].clone(), SyzArg::Auto],
                    ),
                    t => Plan::new(
                        fs_only(t, "open")?,
                        vec![a[0].clone(), a[1].clone(), SyzArg::Auto],
                    ),
                }
            }
            "creat" => {
                need(a, 2)?;
                let t = self.path_target(&a[0], ft)?;
                Plan::new(fs_only(t, "creat")?, vec![a[0].clone(), SyzArg::Auto])
            }
            "truncate" | "unlink" | "rename" => {
                let t = self.path_target(&a[0], ft)?;
                Plan::new(fs_only(t, base)?, a.clone())
            }
            "mmap" if call.name.starts_with("mmap$IORING_OFF") => {
                self.note(call, "left out: daxdiff_uring_setup maps the ring itself");
                return Ok(None);
            }
            "mmap" => {
                need(a, 6)?;
                let flags = int(&a[3]).ok_or("flags must be a number")?;
                let kept = SyzArg::Int(flags & !(MAP_FIXED | MAP_FIXED_NOREPLACE));
                let len = int(&a[1]).ok_or("len must be a number")?;
                let mut plan = if flags & MAP_ANONYMOUS != 0 {
                    let args = vec![
                        SyzArg::Auto,
                        a[1].clone(),
                        a[2].clone(),
                        kept,
                        SyzArg::Auto,
                        SyzArg::Auto,
                    ];
                    Plan::new("mmap$anon", args)
                } else {
                    let args = vec![
                        SyzArg::Auto,
                        a[1].clone(),
                        a[2].clone(),
                        kept,
                        a[4].clone(),
                        a[5].clone(),
                    ];
                    Plan::new("mmap", args)
                };
                plan.maps = addr(&a[0]).map(|s| (s, len));
                plan
            }
            "mremap" => {
                need(a, 5)?;
                let flags = int(&a[3]).ok_or("flags must be a number")?;
                let old = addr(&a[0]);
                let new_start = if flags & MREMAP_FIXED != 0 {
                    addr(&a[4])
                } else {
                    old
                };
                let new_len = int(&a[2]).ok_or("new_len must be a number")?;
                let old_len = int(&a[1]).unwrap_or(0);
                let mut plan = Plan::new(
                    "mremap",
                    vec![
                        a[0].clone(),
                        a[1].clone(),
                        a[2].clone(),
                        SyzArg::Int(flags & !MREMAP_FIXED),
                        SyzArg::Auto,
                    ],
                );
                plan.unmaps = old.map(|s| (s, old_len));
                plan.maps = new_start.map(|s| (s, new_len));
                plan
            }
            "close" => {
                need(a, 1)?;
                match self.pipe_end(&a[0]) {
                    Some(PipeEnd::Read) => Plan::new("close$pipe_r", a.clone()),
                    Some(PipeEnd::Write) => Plan::new("close$pipe_w", a.clone()),
                    None => Plan::new("close", a.clone()),
                }
            }
            "read" if a.first().and_then(|x| self.pipe_end(x)).is_some() => {
                Plan::new("read$pipe", a.clone())
            }
            "splice" => {
                need(a, 6)?;
                if int(&a[1]) != Some(0) || int(&a[3]) != Some(0) {
                    return Err(
                        "splice offsets (off_in, off_out) must be 0: daxdiff splices at \
                                the file position"
                            .into(),
                    );
                }
                let name = match (self.pipe_end(&a[0]), self.pipe_end(&a[2])) {
                    (Some(_), _) => "splice$pipe_to_file",
                    (_, Some(_)) => "splice$file_to_pipe",
                    _ => {
                        return Err("daxdiff describes splice between a pipe and a file only".into())
                    }
                };
                let mut args = a.clone();
                args[1] = SyzArg::Auto;
                args[3] = SyzArg::Auto;
                Plan::new(name, args)
            }
            "pipe" | "pipe2" => {
                let flags = a.get(1).cloned().unwrap_or(SyzArg::Int(0));
                let mut plan = Plan::new("daxdiff_pipe", vec![flags]);
                if let Some(SyzArg::Struct(ends)) = a.first().and_then(pointee) {
                    for (item, end) in ends.iter().zip([PipeEnd::Read, PipeEnd::Write]) {
                        if let SyzArg::Def { name, .. } = item {
                            plan.defs.push((name.clone(), Some(end)));
                        }
                    }
                }
                plan
            }
            "io_uring_setup" => {
                need(a, 2)?;
                if let Some(SyzArg::Struct(f)) = pointee(&a[1]) {
                    if let Some(flags) = f.get(2).and_then(int).filter(|&v| v != 0) {
                        return Err(format!(
                            "setup flags 0x{flags:x} in io_uring_params: daxdiff_uring_setup \
                             makes a ring without flags"
                        ));
                    }
                }
                Plan::new("daxdiff_uring_setup", vec![a[0].clone()])
            }
            "io_uring_register" => {
                need(a, 4)?;
                let name = match int(&a[1]) {
                    Some(0) => "io_uring_register$REGISTER_BUFFERS",
                    Some(1) => "io_uring_register$UNREGISTER_BUFFERS",
                    op => {
                        return Err(format!(
                            "opcode {}: daxdiff describes IORING_REGISTER_BUFFERS (0x0) and \
                             IORING_UNREGISTER_BUFFERS (0x1) only",
                            op.map_or("?".into(), |v| format!("0x{v:x}"))
                        ))
                    }
                };
                Plan::new(name, a.clone())
            }
            "fcntl" => {
                need(a, 3)?;
                if int(&a[1]) != Some(F_SETFL) {
                    return Err("daxdiff describes fcntl F_SETFL (0x4) only".into());
                }
                Plan::new("fcntl$setfl", a.clone())
            }
            "ioctl" => {
                need(a, 3)?;
                let req = int(&a[1]);
                let name = ["FS_IOC_FSSETXATTR", "FS_IOC_FSGETXATTR"]
                    .into_iter()
                    .find(|n| self.target.consts.get(*n).copied() == req)
                    .ok_or(
                        "daxdiff describes the FS_IOC_FSSETXATTR and FS_IOC_FSGETXATTR ioctls only",
                    )?;
                Plan::new(format!("ioctl${name}"), a.clone())
            }
            _ if base.starts_with("syz_") => {
                return Err(
                    "a syzkaller pseudo-call (an executor helper); daxdiff has no \
                            counterpart"
                        .into(),
                )
            }
            _ if base.starts_with("daxdiff_") => {
                return Err(
                    "daxdiff's own pseudo-calls have no syzkaller form; write them in \
                            daxdiff's text form"
                        .into(),
                )
            }
            _ => match self.target.call(base) {
                Some(d) if matches!(d.kind, CallKind::Syscall { .. }) => Plan::new(base, a.clone()),
                _ => {
                    return Err(format!(
                        "daxdiff does not describe {base} (syscall-descs/ lists the calls it does)"
                    ))
                }
            },
        };
        Ok(Some(plan))
    }

    /// One argument for daxdiff parameter `params[i]`.
    fn arg(
        &mut self,
        call: &SyzCall,
        a: &SyzArg,
        i: usize,
        args: &[SyzArg],
        params: &[Param],
    ) -> Result<Arg, String> {
        let a = match a {
            SyzArg::Def { value, .. } => value.as_ref(),
            other => other,
        };
        match &params[i].ty {
            ParamType::Int { .. } => int(a).map(Arg::Int).ok_or("expects an integer".into()),
            ParamType::Const { value, name } => {
                let canon = name
                    .clone()
                    .map_or(Arg::Int(*value), |n| Arg::Flags(vec![n]));
                match (a, int(a)) {
                    (SyzArg::Auto, _) => Ok(canon),
                    (_, Some(v)) if v == *value => Ok(canon),
                    (_, Some(v)) => Err(format!(
                        "daxdiff fixes it to {}, found 0x{v:x}",
                        name.clone().unwrap_or_else(|| format!("0x{value:x}"))
                    )),
                    _ => Err("expects a constant".into()),
                }
            }
            ParamType::Flags { set } => int(a)
                .map(|v| self.flags(set, v))
                .ok_or("expects a number".into()),
            ParamType::Len { of } => match a {
                SyzArg::Auto => Ok(Arg::Int(auto_len(&args[*of]))),
                _ => int(a).map(Arg::Int).ok_or("expects a length".into()),
            },
            ParamType::Resource { kind, pipe_end, .. } => match a {
                SyzArg::Res(n) => self.res(n, *kind, *pipe_end),
                _ => int(a)
                    .map(Arg::Int)
                    .ok_or("expects a resource (rN) or a number".into()),
            },
            ParamType::Path { .. } => {
                let p = path_of(a)?;
                let name = p
                    .strip_prefix("/dev/")
                    .or(p.strip_prefix("./"))
                    .unwrap_or(&p);
                Ok(Arg::Path(name.to_string()))
            }
            ParamType::Buffer { .. } => {
                let len = params.iter().zip(args).find_map(|(p, x)| match p.ty {
                    ParamType::Len { of } if of == i => int(x),
                    _ => None,
                });
                self.buf(call, a, len).map(Arg::Buf)
            }
            ParamType::Vma => self.vma(a).map(Arg::Buf),
            ParamType::Iovecs { .. } => match a {
                SyzArg::Ptr { pointee: None, .. } => Ok(Arg::Iovecs(Vec::new())),
                SyzArg::Ptr {
                    pointee: Some(p), ..
                } => match p.as_ref() {
                    SyzArg::Array(items) => items
                        .iter()
                        .map(|it| self.iovec(call, it))
                        .collect::<Result<_, _>>()
                        .map(Arg::Iovecs),
                    _ => Err("expects an iovec array (&(…)=[{…}, …])".into()),
                },
                _ => Err("a NULL iovec array cannot be expressed; daxdiff passes an array".into()),
            },
            ParamType::Struct { name } => self.strukt(name, a),
        }
    }

    /// A number in a flag set, by names where the set names every bit of it.
    fn flags(&self, set: &str, v: u64) -> Arg {
        let Some(fs) = self.target.flag_set(set) else {
            return Arg::Int(v);
        };
        let named = || {
            fs.values
                .iter()
                .filter_map(|(n, x)| n.as_ref().map(|n| (n, *x)))
        };
        if !fs.bitmask || v == 0 {
            return named()
                .find(|(_, x)| *x == v)
                .map_or(Arg::Int(v), |(n, _)| Arg::Flags(vec![n.clone()]));
        }
        // Widest flags first, so MAP_SHARED_VALIDATE wins over MAP_SHARED|MAP_PRIVATE.
        let mut by_width: Vec<_> = named().filter(|(_, x)| *x != 0).collect();
        by_width.sort_by_key(|(_, x)| std::cmp::Reverse(x.count_ones()));
        let mut rest = v;
        let mut chosen = Vec::new();
        for (n, x) in by_width {
            if rest & x == x {
                rest &= !x;
                chosen.push(n.clone());
            }
        }
        if rest != 0 {
            return Arg::Int(v);
        }
        // Printed in the set's order, as the corpus writes them.
        let names = named()
            .map(|(n, _)| n.clone())
            .filter(|n| chosen.contains(n))
            .collect();
        Arg::Flags(names)
    }

    fn res(&self, n: &str, kind: ResourceKind, want: Option<PipeEnd>) -> Result<Arg, String> {
        match self.vars.get(n) {
            None => Err(format!("{n} is not defined by an earlier call")),
            Some(Var::Gone(why)) => Err(format!("{n} {why}")),
            Some(Var::Res { id, end }) => match (kind, *end) {
                (ResourceKind::Pipe, Some(e)) if want.is_some() && Some(e) != want => Err(format!(
                    "{n} is the pipe's {} end, but this takes its {} end",
                    end_name(e),
                    want.map_or("", end_name)
                )),
                (k, Some(_)) if k != ResourceKind::Pipe => Err(format!(
                    "{n} is a pipe end, which daxdiff passes only to pipe calls (vmsplice, \
                     splice, read, close)"
                )),
                _ => Ok(Arg::Res(*id)),
            },
        }
    }

    /// The mapping and offset an address falls in, the latest mapping first.
    fn lookup(&self, addr: u64) -> Option<BufRef> {
        self.maps
            .iter()
            .rev()
            .find(|m| addr >= m.start && addr - m.start < m.len)
            .map(|m| BufRef::Map {
                map: m.res,
                offset: addr - m.start,
            })
    }

    fn buf(&mut self, call: &SyzCall, a: &SyzArg, len: Option<u64>) -> Result<BufRef, String> {
        match a {
            SyzArg::Nil | SyzArg::Int(0) => Ok(BufRef::Nil),
            SyzArg::Int(v) => Err(format!(
                "special pointer 0x{v:x} cannot be expressed (daxdiff passes nil, a mapping or \
                 a scratch buffer)"
            )),
            SyzArg::Ptr { addr, pointee, .. } => {
                if let Some(SyzArg::Data { bytes, .. }) = pointee.as_deref() {
                    if bytes.iter().any(|&b| b != 0) {
                        self.note(
                            call,
                            "buffer contents not carried: daxdiff fills buffers itself",
                        );
                    }
                }
                if let Some(m) = addr.and_then(|x| self.lookup(x)) {
                    return Ok(m);
                }
                let data = match pointee.as_deref() {
                    Some(SyzArg::Data { bytes, size }) => Some(size.unwrap_or(bytes.len() as u64)),
                    _ => None,
                };
                let size = data.filter(|&s| s > 0).or(len).filter(|&s| s > 0);
                Ok(BufRef::Scratch {
                    size: size.unwrap_or(PAGE),
                })
            }
            _ => Err("expects a pointer".into()),
        }
    }

    fn vma(&self, a: &SyzArg) -> Result<BufRef, String> {
        let at = match a {
            SyzArg::Ptr { addr: Some(x), .. } => *x,
            SyzArg::Int(x) => *x,
            _ => return Err("expects an address in a mapping (&(0x…/0x…)=nil)".into()),
        };
        self.lookup(at).ok_or_else(|| {
            format!(
                "0x{at:x} is not inside a mapping an earlier mmap of this program made; \
                 daxdiff addresses only the program's own mappings"
            )
        })
    }

    fn iovec(&mut self, call: &SyzCall, it: &SyzArg) -> Result<Iovec, String> {
        let SyzArg::Struct(f) = it else {
            return Err("expects iovecs ({ptr, len})".into());
        };
        let len = match f.get(1) {
            None => 0,
            Some(SyzArg::Auto) => f.first().map_or(0, auto_len),
            Some(x) => int(x).ok_or("an iovec length must be a number")?,
        };
        let base = match f.first() {
            None => BufRef::Nil,
            Some(b) => self.buf(call, b, Some(len))?,
        };
        Ok(Iovec { base, len })
    }

    fn strukt(&self, name: &str, a: &SyzArg) -> Result<Arg, String> {
        let sd = self
            .target
            .struct_desc(name)
            .ok_or_else(|| format!("no struct {name} in the descriptions"))?;
        let items: &[SyzArg] = match pointee(a) {
            Some(SyzArg::Struct(items)) => items,
            None if matches!(a, SyzArg::Ptr { .. }) => &[],
            _ => return Err(format!("expects a pointer to struct {name} (&(…)={{…}})")),
        };
        let value = |x: &SyzArg| match x {
            SyzArg::Auto => Some(0),
            SyzArg::Data { bytes, .. } if bytes.iter().all(|&b| b == 0) => Some(0),
            _ => int(x),
        };
        if let Some(extra) = items
            .iter()
            .skip(sd.fields.len())
            .find(|x| value(x) != Some(0))
        {
            return Err(format!(
                "struct {name} has {} fields in daxdiff's description; a further field is {extra:?}",
                sd.fields.len()
            ));
        }
        let mut fields = Vec::new();
        for (k, (fname, _, fty)) in sd.fields.iter().enumerate() {
            let v = match items.get(k) {
                None => 0,
                Some(x) => value(x).ok_or_else(|| format!("field {fname} must be a number"))?,
            };
            fields.push(match fty {
                ParamType::Flags { set } => self.flags(set, v),
                ParamType::Const {
                    value,
                    name: Some(n),
                } if *value == v => Arg::Flags(vec![n.clone()]),
                _ => Arg::Int(v),
            });
        }
        Ok(Arg::Struct(fields))
    }
}

fn end_name(e: PipeEnd) -> &'static str {
    match e {
        PipeEnd::Read => "read",
        PipeEnd::Write => "write",
    }
}

/// What syzkaller computes for `AUTO` in a length: elements of an array, bytes of data.
fn auto_len(of: &SyzArg) -> u64 {
    match pointee(of) {
        Some(SyzArg::Array(items)) => items.len() as u64,
        Some(SyzArg::Data { bytes, size }) => size.unwrap_or(bytes.len() as u64),
        _ => 0,
    }
}

/// The file name a path argument points at, without its terminating NULs.
fn path_of(a: &SyzArg) -> Result<String, String> {
    match pointee(a) {
        Some(SyzArg::Data { bytes, .. }) => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes[..end].to_vec())
                .map_err(|_| "the file name is not UTF-8".to_string())
        }
        _ => Err("expects a file name (&(0x…)='./file0\\x00')".into()),
    }
}
