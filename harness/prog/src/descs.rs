//! Loading syzlang descriptions into a [`Target`]: each statement is parsed on its own by
//! `syzlang-parser` (guarded against its panics) so every problem is reported as file:line.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use syzlang_parser::parser::{
    Arch, ArgOpt, ArgType, Argument, Consts, Direction, Function, Statement, Value,
};

use crate::target::{
    CallDesc, CallKind, Dir, FileTarget, FlagSet, IntRange, Param, ParamType, PipeEnd, Pseudo,
    ResourceDesc, ResourceKind, StructDesc, Target,
};

/// A problem in the descriptions, located by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct DescError {
    pub file: String,
    /// 1-based line of the statement the problem is in.
    pub line: usize,
    pub msg: String,
}

/// Where a statement came from.
#[derive(Clone, Debug)]
struct Loc {
    file: String,
    line: usize,
}

impl Loc {
    fn err(&self, msg: impl Into<String>) -> DescError {
        DescError {
            file: self.file.clone(),
            line: self.line,
            msg: msg.into(),
        }
    }
}

/// Run a parser step that may panic on syntax it does not know, turning both its errors
/// and its panics into a message.
fn guarded<T>(f: impl FnOnce() -> Result<T, syzlang_parser::Error>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!(
            "syntax error: {}",
            without_src_locations(&e.to_string())
        )),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown");
            Err(format!(
                "syntax the parser does not support (it panicked: {what})"
            ))
        }
    }
}

/// The parser's messages embed its own source locations (`…/parser.rs:3003:`); they say
/// nothing about the description, so drop them.
fn without_src_locations(msg: &str) -> String {
    msg.split_whitespace()
        .filter(|w| !w.contains(".rs:") && *w != "error:")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Build a target from `(file name, text)` sources; `.const` files first, then syzlang.
pub(crate) fn load(sources: &[(&str, &str)]) -> Result<Target, DescError> {
    let mut consts = HashMap::new();
    for (file, text) in sources.iter().filter(|(f, _)| f.ends_with(".const")) {
        load_consts(file, text, &mut consts)?;
    }
    let mut stmts = Vec::new();
    for (file, text) in sources.iter().filter(|(f, _)| !f.ends_with(".const")) {
        for (line, chunk) in statement_chunks(text) {
            let loc = Loc {
                file: file.to_string(),
                line,
            };
            let parsed = guarded(|| Statement::parse_from_str(&chunk)).map_err(|m| loc.err(m))?;
            stmts.extend(parsed.into_iter().map(|s| (s, loc.clone())));
        }
    }
    Builder::new(consts).build(stmts)
}

fn load_consts(file: &str, text: &str, out: &mut HashMap<String, u64>) -> Result<(), DescError> {
    for (i, raw) in text.lines().enumerate() {
        let loc = Loc {
            file: file.to_string(),
            line: i + 1,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("arches") {
            if !rest.split([',', '=', ' ']).any(|a| a.trim() == "amd64") {
                return Err(loc.err("const file does not cover amd64"));
            }
            continue;
        }
        let parsed = guarded(|| Consts::create_from_str(line, Some(Arch::X86_64)))
            .map_err(|m| loc.err(m))?;
        let c = parsed
            .iter()
            .find(|c| c.is_for_arch(&Arch::X86_64))
            .ok_or_else(|| loc.err("no amd64 value"))?;
        let Value::Int(v) = c.value else {
            return Err(loc.err(format!("{}: value is not an integer", c.name)));
        };
        if let Some(old) = out.insert(c.name.clone(), v as u64) {
            if old != v as u64 {
                return Err(loc.err(format!("{} redefined with a different value", c.name)));
            }
        }
    }
    Ok(())
}

/// Split syzlang text into top-level statements with their 1-based first line. A statement
/// starts on a non-comment line outside any bracket and runs until its brackets close.
fn statement_chunks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    let mut depth: i32 = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let chunk = cur.get_or_insert_with(|| (i + 1, String::new()));
        chunk.1.push_str(line);
        chunk.1.push('\n');
        depth += bracket_delta(line);
        if depth <= 0 {
            out.extend(cur.take());
            depth = 0;
        }
    }
    out.extend(cur);
    out
}

fn bracket_delta(line: &str) -> i32 {
    let mut d = 0;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => d += 1,
            ')' | ']' | '}' if !quoted => d -= 1,
            _ => {}
        }
    }
    d
}

/// Interprets parsed statements into target tables.
struct Builder {
    consts: HashMap<String, u64>,
    resources: Vec<ResourceDesc>,
    flag_sets: Vec<FlagSet>,
    string_sets: HashMap<String, Vec<String>>,
    struct_stmts: Vec<(syzlang_parser::parser::Struct, Loc)>,
    structs: Vec<StructDesc>,
    iovec_dirs: HashMap<String, Dir>,
}

impl Builder {
    fn new(consts: HashMap<String, u64>) -> Builder {
        Builder {
            consts,
            resources: Vec::new(),
            flag_sets: Vec::new(),
            string_sets: HashMap::new(),
            struct_stmts: Vec::new(),
            structs: Vec::new(),
            iovec_dirs: HashMap::new(),
        }
    }

    fn build(mut self, stmts: Vec<(Statement, Loc)>) -> Result<Target, DescError> {
        let mut funcs = Vec::new();
        let mut resources = Vec::new();
        for (stmt, loc) in stmts {
            match stmt {
                Statement::Define(d) => self.define(&d, &loc)?,
                Statement::Flag(f) => self.flag(&f, &loc)?,
                Statement::Resource(r) => resources.push((r, loc)),
                Statement::Struct(s) => self.struct_stmts.push((s, loc)),
                Statement::Function(f) => funcs.push((f, loc)),
                Statement::Union(u) => {
                    return Err(loc.err(format!("union {}: not supported", u.identifier().name)))
                }
                Statement::Include(_) => return Err(loc.err("include/incdir: not supported")),
                Statement::TypeAlias(_) | Statement::TypeRaw(_) => {
                    return Err(loc.err("type aliases and templates: not supported"))
                }
            }
        }
        for (r, loc) in &resources {
            self.resource(r, loc)?;
        }
        for (r, loc) in &resources {
            self.resource_kind(&r.name.name, loc)?;
        }
        let struct_stmts = std::mem::take(&mut self.struct_stmts);
        for (s, loc) in &struct_stmts {
            self.structure(s, loc)?;
        }
        let mut calls: Vec<CallDesc> = Vec::new();
        for (f, loc) in &funcs {
            let call = self.function(f, loc)?;
            if calls.iter().any(|c| c.name == call.name) {
                return Err(loc.err(format!("call {} defined twice", call.name)));
            }
            calls.push(call);
        }
        Ok(Target {
            calls,
            resources: self.resources,
            flag_sets: self.flag_sets,
            structs: self.structs,
            consts: self.consts,
            ..Target::default()
        })
    }

    fn define(&mut self, d: &syzlang_parser::parser::Define, loc: &Loc) -> Result<(), DescError> {
        let toks: Vec<_> = d.tokens().collect();
        let value = match toks.as_slice() {
            [tok] => Value::try_from(*tok).ok().and_then(|v| self.value(&v)),
            _ => None,
        };
        let v = value.ok_or_else(|| {
            loc.err(format!(
                "define {}: only a single integer or known constant is supported",
                d.name()
            ))
        })?;
        self.consts.insert(d.name().to_string(), v);
        Ok(())
    }

    fn value(&self, v: &Value) -> Option<u64> {
        match v {
            Value::Int(i) => Some(*i as u64),
            Value::Ident(id) => self.consts.get(&id.name).copied(),
            _ => None,
        }
    }

    fn flag(&mut self, f: &syzlang_parser::parser::Flag, loc: &Loc) -> Result<(), DescError> {
        let name = f.name.name.clone();
        if self.flag_sets.iter().any(|s| s.name == name) || self.string_sets.contains_key(&name) {
            return Err(loc.err(format!("flag set {name} defined twice")));
        }
        if f.args.iter().all(|v| matches!(v, Value::String(_))) && !f.args.is_empty() {
            let strs = f.args.iter().filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            });
            self.string_sets.insert(name, strs.collect());
            return Ok(());
        }
        let mut values = Vec::new();
        for v in &f.args {
            let (label, val) = match v {
                Value::Int(i) => (None, *i as u64),
                Value::Ident(id) => {
                    let val = self.consts.get(&id.name).copied().ok_or_else(|| {
                        loc.err(format!(
                            "flag set {name}: unknown constant {}; add it to a .const file",
                            id.name
                        ))
                    })?;
                    (Some(id.name.clone()), val)
                }
                other => {
                    return Err(loc.err(format!("flag set {name}: unsupported value {other:?}")))
                }
            };
            values.push((label, val));
        }
        if values.is_empty() {
            return Err(loc.err(format!("flag set {name} has no values")));
        }
        let bitmask = name.ends_with("_flags");
        self.flag_sets.push(FlagSet {
            name,
            values,
            bitmask,
        });
        Ok(())
    }

    fn resource(
        &mut self,
        r: &syzlang_parser::parser::Resource,
        loc: &Loc,
    ) -> Result<(), DescError> {
        let name = r.name.name.clone();
        if self.resources.iter().any(|x| x.name == name) {
            return Err(loc.err(format!("resource {name} defined twice")));
        }
        let parent = match &r.atype {
            ArgType::Ident(p) => Some(p.name.clone()),
            t if t.is_int() => None,
            t => return Err(loc.err(format!("resource {name}: base type {t:?} is not an int"))),
        };
        let mut specials = Vec::new();
        for v in &r.consts {
            specials.push(
                self.value(v)
                    .ok_or_else(|| loc.err(format!("resource {name}: bad special value {v:?}")))?,
            );
        }
        self.resources.push(ResourceDesc {
            name,
            parent,
            kind: ResourceKind::Fd,
            specials,
        });
        Ok(())
    }

    /// Resolve a resource's kind: the nearest ancestor (or itself) that is a root name.
    fn resource_kind(&mut self, name: &str, loc: &Loc) -> Result<(), DescError> {
        let mut cur = name.to_string();
        let mut seen = 0;
        let kind = loop {
            if let Some(k) = ResourceKind::from_root_name(&cur) {
                break k;
            }
            let r = self.resources.iter().find(|r| r.name == cur);
            match r.and_then(|r| r.parent.clone()) {
                Some(p) if seen < 32 => cur = p,
                _ => {
                    return Err(loc.err(format!(
                        "resource {name} does not derive from a known root ({})",
                        ResourceKind::ALL.map(|k| k.root_name()).join(", ")
                    )))
                }
            }
            seen += 1;
        };
        if let Some(r) = self.resources.iter_mut().find(|r| r.name == name) {
            r.kind = kind;
        }
        Ok(())
    }

    fn structure(
        &mut self,
        s: &syzlang_parser::parser::Struct,
        loc: &Loc,
    ) -> Result<(), DescError> {
        let name = s.identifier().name.clone();
        if let Some(dir) = name.strip_prefix("iovec_") {
            let dir = match dir {
                "in" => Dir::In,
                "out" => Dir::Out,
                "inout" => Dir::InOut,
                _ => return Err(loc.err(format!("struct {name}: iovec_ must end in in/out/inout"))),
            };
            self.iovec_dirs.insert(name, dir);
            return Ok(());
        }
        let mut fields = Vec::new();
        for a in s.args() {
            let ty = self.param_type(a, &[], loc)?;
            let bytes = match &ty {
                ParamType::Int { bytes, .. } => *bytes,
                ParamType::Flags { .. } | ParamType::Const { .. } => int_bytes(inner_int(a))
                    .ok_or_else(|| {
                        loc.err(format!(
                            "struct {name}: field {} needs an int type",
                            a.name.name
                        ))
                    })?,
                _ => {
                    return Err(loc.err(format!(
                        "struct {name}: field {} must be an integer, flags or const",
                        a.name.name
                    )))
                }
            };
            fields.push((a.name.name.clone(), bytes, ty));
        }
        self.structs.push(StructDesc { name, fields });
        Ok(())
    }

    fn function(&self, f: &Function, loc: &Loc) -> Result<CallDesc, DescError> {
        let base = f.name.name.clone();
        let name = std::iter::once(base.clone())
            .chain(f.name.subname.iter().cloned())
            .collect::<Vec<_>>()
            .join("$");
        let kind = if base.starts_with("daxdiff_") {
            CallKind::Pseudo(Pseudo::from_call_name(&base).ok_or_else(|| {
                loc.err(format!("{name}: unknown pseudo-call (see target::Pseudo)"))
            })?)
        } else {
            let nr = self.consts.get(&format!("__NR_{base}")).ok_or_else(|| {
                loc.err(format!(
                    "{name}: no syscall number __NR_{base} in the .const files"
                ))
            })?;
            CallKind::Syscall { nr: *nr }
        };
        let names: Vec<&str> = f.args.iter().map(|a| a.name.name.as_str()).collect();
        let mut params = Vec::new();
        for a in &f.args {
            let ty = self
                .param_type(a, &names, loc)
                .map_err(|e| loc.err(format!("{name}: {}", e.msg)))?;
            params.push(Param {
                name: a.name.name.clone(),
                ty,
            });
        }
        let (ret, ret_kind) = match &f.output {
            ArgType::Void => (None, None),
            ArgType::Ident(id) => {
                let r = self.resources.iter().find(|r| r.name == id.name);
                let r = r.ok_or_else(|| {
                    loc.err(format!("{name}: returns unknown resource {}", id.name))
                })?;
                (Some(r.name.clone()), Some(r.kind))
            }
            other => return Err(loc.err(format!("{name}: unsupported return type {other:?}"))),
        };
        let file_target = f
            .name
            .subname
            .iter()
            .find_map(|s| FileTarget::ALL.into_iter().find(|t| t.suffix() == s));
        Ok(CallDesc {
            name,
            kind,
            params,
            ret,
            ret_kind,
            file_target,
            source: format!("{}:{}", loc.file, loc.line),
        })
    }

    fn param_type(&self, a: &Argument, names: &[&str], loc: &Loc) -> Result<ParamType, DescError> {
        let pname = a.name.name.as_str();
        let bad = |what: String| loc.err(format!("parameter {pname}: {what}"));
        let ty = match &a.argtype {
            t if t.is_int() => {
                let range = a.opts.iter().find_map(|o| match o {
                    ArgOpt::Range(min, max, step) => Some((min, max, step)),
                    _ => None,
                });
                let range = match range {
                    None => None,
                    Some((min, max, step)) => Some(IntRange {
                        min: self.value(min).ok_or_else(|| bad("bad range".into()))?,
                        max: self.value(max).ok_or_else(|| bad("bad range".into()))?,
                        step: self.value(step).unwrap_or(1).max(1),
                    }),
                };
                ParamType::Int {
                    bytes: int_bytes(t).unwrap_or(8),
                    range,
                }
            }
            ArgType::Const => {
                let v = a.opts.iter().find_map(|o| match o {
                    ArgOpt::Value(v) => Some(v),
                    _ => None,
                });
                let v = v.ok_or_else(|| bad("const without a value".into()))?;
                let value = self.value(v).ok_or_else(|| {
                    bad(format!("unknown constant {v:?}; add it to a .const file"))
                })?;
                let name = match v {
                    Value::Ident(id) => Some(id.name.clone()),
                    _ => None,
                };
                ParamType::Const { value, name }
            }
            ArgType::Flags => {
                let set = ident_opt(a).ok_or_else(|| bad("flags without a set".into()))?;
                if self.flag_sets.iter().all(|s| s.name != set) {
                    return Err(bad(format!("unknown flag set {set}")));
                }
                ParamType::Flags { set }
            }
            ArgType::Len => {
                let of = ident_opt(a).ok_or_else(|| bad("len without a target".into()))?;
                let idx = names.iter().position(|n| *n == of);
                ParamType::Len {
                    of: idx.ok_or_else(|| bad(format!("len of unknown parameter {of}")))?,
                }
            }
            ArgType::Vma | ArgType::Vma64 => ParamType::Vma,
            ArgType::Ident(id) if id.name == "buffer" => ParamType::Buffer {
                dir: token_dir(a).ok_or_else(|| bad("buffer needs in/out/inout".into()))?,
            },
            ArgType::Ident(id) => {
                let r = self.resources.iter().find(|r| r.name == id.name);
                let r = r.ok_or_else(|| bad(format!("unknown type or resource {}", id.name)))?;
                let pipe_end = (r.kind == ResourceKind::Pipe).then(|| {
                    if pname == "wfd" {
                        PipeEnd::Write
                    } else {
                        PipeEnd::Read
                    }
                });
                ParamType::Resource {
                    name: r.name.clone(),
                    kind: r.kind,
                    pipe_end,
                }
            }
            ArgType::Ptr | ArgType::Ptr64 => self.pointer(a, loc).map_err(|e| bad(e.msg))?,
            other => return Err(bad(format!("unsupported type {other:?}"))),
        };
        Ok(ty)
    }

    fn pointer(&self, a: &Argument, loc: &Loc) -> Result<ParamType, DescError> {
        let dir = a.opts.iter().find_map(|o| match o {
            ArgOpt::Dir(d) => Some(map_dir(*d)),
            _ => None,
        });
        let inner = ArgOpt::get_subarg(&a.opts).ok_or_else(|| loc.err("ptr without a type"))?;
        match &inner.argtype {
            ArgType::Ident(id) if id.name == "filename" => Ok(ParamType::Path { names: vec![] }),
            ArgType::String => {
                let names = match inner.opts.iter().find_map(|o| match o {
                    ArgOpt::Value(v) => Some(v),
                    _ => None,
                }) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Ident(id)) => self
                        .string_sets
                        .get(&id.name)
                        .cloned()
                        .ok_or_else(|| loc.err(format!("unknown string set {}", id.name)))?,
                    _ => vec![],
                };
                Ok(ParamType::Path { names })
            }
            ArgType::Array => {
                let elem = ArgOpt::get_subarg(&inner.opts)
                    .ok_or_else(|| loc.err("array without an element type"))?;
                match &elem.argtype {
                    ArgType::Int8 => Ok(ParamType::Buffer {
                        dir: dir.unwrap_or(Dir::In),
                    }),
                    ArgType::Ident(id) if self.iovec_dirs.contains_key(&id.name) => {
                        Ok(ParamType::Iovecs {
                            dir: self.iovec_dirs[&id.name],
                        })
                    }
                    other => Err(loc.err(format!("unsupported array element {other:?}"))),
                }
            }
            ArgType::Ident(id) if self.structs.iter().any(|s| s.name == id.name) => {
                Ok(ParamType::Struct {
                    name: id.name.clone(),
                })
            }
            other => Err(loc.err(format!("unsupported pointee {other:?}"))),
        }
    }
}

fn map_dir(d: Direction) -> Dir {
    match d {
        Direction::In => Dir::In,
        Direction::Out => Dir::Out,
        Direction::InOut => Dir::InOut,
    }
}

fn ident_opt(a: &Argument) -> Option<String> {
    a.opts.iter().find_map(|o| match o {
        ArgOpt::Ident(id) => Some(id.name.clone()),
        _ => None,
    })
}

fn token_dir(a: &Argument) -> Option<Dir> {
    a.opts.iter().find_map(|o| match o {
        ArgOpt::Tokens(t) => match t.first()?.to_name().ok()?.as_str() {
            "in" => Some(Dir::In),
            "out" => Some(Dir::Out),
            "inout" => Some(Dir::InOut),
            _ => None,
        },
        _ => None,
    })
}

/// The int type a flags/const field is stored as (`flags[set, int32]`).
fn inner_int(a: &Argument) -> &ArgType {
    ArgOpt::get_subarg(&a.opts)
        .map(|s| &s.argtype)
        .unwrap_or(&ArgType::Intptr)
}

fn int_bytes(t: &ArgType) -> Option<u8> {
    match t {
        ArgType::Int8 => Some(1),
        ArgType::Int16 | ArgType::Int16be => Some(2),
        ArgType::Int32 | ArgType::Int32be => Some(4),
        ArgType::Int64 | ArgType::Int64be | ArgType::Intptr => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::BUILTIN_DESCS;

    const CONSTS: (&str, &str) = (
        "x_amd64.const",
        "arches = amd64\n__NR_close = 3\nO_RDWR = 2\n",
    );

    fn load_one(text: &str) -> Result<Target, DescError> {
        Target::from_sources(&[CONSTS, ("x.txt", text)])
    }

    #[test]
    fn builtin_descriptions_give_syscall_numbers_and_pseudo_kinds() {
        let t = Target::builtin();
        let nr = |n: &str| t.call(n).map(|c| c.kind);
        assert_eq!(nr("openat$ext4"), Some(CallKind::Syscall { nr: 257 }));
        assert_eq!(
            nr("io_uring_register$REGISTER_BUFFERS"),
            Some(CallKind::Syscall { nr: 427 })
        );
        assert_eq!(nr("vmsplice"), Some(CallKind::Syscall { nr: 278 }));
        assert_eq!(nr("daxdiff_evict"), Some(CallKind::Pseudo(Pseudo::Evict)));
        assert_eq!(
            nr("daxdiff_uring_rw$iov"),
            Some(CallKind::Pseudo(Pseudo::UringRw))
        );
        assert_eq!(
            t.call("openat$xfs").unwrap().file_target,
            Some(FileTarget::Xfs)
        );
        assert_eq!(
            t.call("openat$devdax").unwrap().ret.as_deref(),
            Some("fd_devdax")
        );
        assert_eq!(t.consts["O_DIRECT"], 0x4000);
        assert_eq!(t.consts["AT_FDCWD"], (-100i64) as u64);
        assert_eq!(t.consts["FS_IOC_FSSETXATTR"], 0x401c5820);
        assert_eq!(t.struct_desc("fsxattr").unwrap().size(), 28);
    }

    #[test]
    fn every_pseudo_call_kind_is_described() {
        let t = Target::builtin();
        for p in Pseudo::ALL {
            assert!(
                t.calls.iter().any(|c| c.kind == CallKind::Pseudo(p)),
                "{} has no description",
                p.call_name()
            );
        }
    }

    #[test]
    fn builtin_covers_the_dax_surface() {
        let t = Target::builtin();
        for name in [
            "open$ext4",
            "creat$xfs",
            "ftruncate",
            "fallocate",
            "pread64",
            "pwritev",
            "mmap",
            "munmap",
            "mremap",
            "madvise",
            "mprotect",
            "msync",
            "mlock",
            "vmsplice",
            "splice$pipe_to_file",
            "process_vm_readv",
            "process_vm_writev",
            "io_uring_register$UNREGISTER_BUFFERS",
            "daxdiff_uring_update_buffers",
            "unlink$ext4",
            "rename$xfs",
            "fsync",
            "fdatasync",
            "syncfs",
            "daxdiff_fork_touch",
            "ioctl$FS_IOC_FSSETXATTR",
            "daxdiff_sleep",
        ] {
            assert!(t.call(name).is_some(), "{name} missing");
        }
        assert!(BUILTIN_DESCS.len() >= 6);
    }

    #[test]
    fn resources_derive_and_are_compatible_upwards_only() {
        let t = Target::builtin();
        assert!(t.res_compatible("fd_ext4", "fd_dax"));
        assert!(t.res_compatible("ring", "fd"));
        assert!(!t.res_compatible("fd", "fd_ext4"));
        assert_eq!(t.resource("child").unwrap().kind, ResourceKind::Child);
        assert_eq!(t.resource("fd_xfs").unwrap().kind, ResourceKind::Fd);
    }

    #[test]
    fn unknown_constant_is_reported_with_file_and_line() {
        let e = load_one("# header\n\nbad_flags = O_RDWR, O_NOPE\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("x.txt", 3));
        assert!(e.msg.contains("unknown constant O_NOPE"), "{e}");
        assert!(e.to_string().starts_with("x.txt:3: "), "{e}");
    }

    #[test]
    fn parser_panics_become_errors_with_file_and_line() {
        let e = load_one("close(fd int32)\n\nfoo(a int32 xyz)\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.msg.contains("not support"), "{e}");
    }

    #[test]
    fn parser_errors_name_the_statement_line_not_the_parser_source() {
        let e = load_one("close(fd int32)\nx {\n\ta int32\n\tb ptr[in]\n}\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(!e.msg.contains(".rs:"), "{e}");
    }

    #[test]
    fn defines_are_substituted_only_when_simple() {
        let t = load_one("define FOUR 4\nclose(fd const[FOUR])\n").unwrap();
        assert_eq!(
            t.call("close").unwrap().params[0].ty,
            ParamType::Const {
                value: 4,
                name: Some("FOUR".into())
            }
        );
        let e = load_one("define X (1 << 3)\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.msg.contains("define X"), "{e}");
    }

    #[test]
    fn semantic_problems_are_located() {
        let e = load_one("close(fd int32)\nclose(fd int32)\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = load_one("frob(fd int32)\n").unwrap_err();
        assert!(e.msg.contains("__NR_frob"), "{e}");
        let e = load_one("daxdiff_frob()\n").unwrap_err();
        assert!(e.msg.contains("unknown pseudo-call"), "{e}");
        let e = load_one("resource widget[int32]\n").unwrap_err();
        assert!(e.msg.contains("known root"), "{e}");
        let e = load_one("close(fd gizmo)\n").unwrap_err();
        assert!(e.msg.contains("unknown type or resource gizmo"), "{e}");
        let e = load_one("close(fd len[nothing])\n").unwrap_err();
        assert!(e.msg.contains("len of unknown parameter nothing"), "{e}");
        let e = Target::from_sources(&[("y.const", "arches = amd64\nX = 1\nX = 2\n")]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("y.const", 3));
    }
}
