//! Checking a program against the target: known calls, arity, argument forms, flag names,
//! and resources that exist, are produced earlier and have the right type.

use std::collections::HashMap;

use crate::program::{Arg, BufRef, Program, ResId, ThreadId};
use crate::target::{ParamType, ResourceKind, Target};

/// Largest scratch buffer a program may ask the executor for.
pub const MAX_SCRATCH: u64 = 16 << 20;
/// Most iovec elements in one argument.
pub const MAX_IOVECS: usize = 16;

/// A validation problem, located by call index and (when it is about one) argument index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call {call}: {kind}")]
pub struct ValidationError {
    pub call: usize,
    pub arg: Option<usize>,
    pub kind: Problem,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("unknown call {0}")]
    UnknownCall(String),
    #[error("{name} takes {expected} arguments, found {got}")]
    Arity {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("r{} is not produced by an earlier call", .0.0)]
    UndefinedResource(ResId),
    #[error("r{} is produced twice", .0.0)]
    DuplicateLabel(ResId),
    #[error("{0} produces no resource, so it cannot be labelled")]
    LabelOnVoidCall(String),
    #[error("r{} is a {got}, but {param} needs a {expected}", .res.0)]
    WrongResource {
        res: ResId,
        param: String,
        expected: String,
        got: String,
    },
    #[error("{name} is not in flag set {set}")]
    UnknownFlag { name: String, set: String },
    #[error("{param} is fixed to {expected}")]
    ConstMismatch { param: String, expected: String },
    #[error("{param} expects {expected}")]
    WrongForm {
        param: String,
        expected: &'static str,
    },
    #[error("{param}: 0x{value:x} is outside 0x{min:x}..=0x{max:x}")]
    OutOfRange {
        param: String,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("file name {0:?} must be relative, without '..', quotes or control characters")]
    BadPath(String),
    #[error("scratch buffer of 0x{0:x} bytes is larger than the 16 MiB limit")]
    ScratchTooLarge(u64),
    #[error("{0} iovecs are more than the limit of 16")]
    TooManyIovecs(usize),
    #[error("thread t{0} does not exist; only [t1] (the second thread) is available")]
    BadThread(u8),
}

/// Check `prog` against `target`; the first problem found is returned.
pub fn validate(target: &Target, prog: &Program) -> Result<(), ValidationError> {
    let mut produced: HashMap<ResId, String> = HashMap::new();
    for (ci, call) in prog.calls.iter().enumerate() {
        let fail = |arg: Option<usize>, kind: Problem| ValidationError {
            call: ci,
            arg,
            kind,
        };
        let desc = target
            .call(&call.name)
            .ok_or_else(|| fail(None, Problem::UnknownCall(call.name.clone())))?;
        if call.thread.0 >= ThreadId::COUNT {
            return Err(fail(None, Problem::BadThread(call.thread.0)));
        }
        if call.args.len() != desc.params.len() {
            return Err(fail(
                None,
                Problem::Arity {
                    name: call.name.clone(),
                    expected: desc.params.len(),
                    got: call.args.len(),
                },
            ));
        }
        let ctx = Ctx {
            target,
            produced: &produced,
        };
        for (ai, (arg, param)) in call.args.iter().zip(&desc.params).enumerate() {
            ctx.arg(arg, &param.name, &param.ty)
                .map_err(|k| fail(Some(ai), k))?;
        }
        if let Some(r) = call.ret {
            let Some(ty) = &desc.ret else {
                return Err(fail(None, Problem::LabelOnVoidCall(call.name.clone())));
            };
            if produced.insert(r, ty.clone()).is_some() {
                return Err(fail(None, Problem::DuplicateLabel(r)));
            }
        }
    }
    Ok(())
}

struct Ctx<'a> {
    target: &'a Target,
    produced: &'a HashMap<ResId, String>,
}

impl Ctx<'_> {
    fn arg(&self, arg: &Arg, pname: &str, ty: &ParamType) -> Result<(), Problem> {
        let wrong = |expected| {
            Err(Problem::WrongForm {
                param: pname.to_string(),
                expected,
            })
        };
        match (ty, arg) {
            (ParamType::Int { range, .. }, Arg::Int(v)) => match range {
                Some(r) if *v < r.min || *v > r.max => Err(Problem::OutOfRange {
                    param: pname.to_string(),
                    value: *v,
                    min: r.min,
                    max: r.max,
                }),
                _ => Ok(()),
            },
            (ParamType::Int { .. }, _) => wrong("an integer (0x…)"),
            (ParamType::Len { .. }, Arg::Int(_)) => Ok(()),
            (ParamType::Len { .. }, _) => wrong("a length (0x…)"),
            (ParamType::Const { value, name }, Arg::Int(_) | Arg::Flags(_)) => {
                if self.target.scalar_value(arg) == Some(*value) {
                    Ok(())
                } else {
                    Err(Problem::ConstMismatch {
                        param: pname.to_string(),
                        expected: name.clone().unwrap_or_else(|| format!("0x{value:x}")),
                    })
                }
            }
            (ParamType::Const { .. }, _) => wrong("a constant"),
            (ParamType::Flags { set }, Arg::Flags(names)) => {
                let fs = self.target.flag_set(set);
                for n in names {
                    let known =
                        fs.is_some_and(|s| s.values.iter().any(|(l, _)| l.as_deref() == Some(n)));
                    if !known {
                        return Err(Problem::UnknownFlag {
                            name: n.clone(),
                            set: set.clone(),
                        });
                    }
                }
                Ok(())
            }
            (ParamType::Flags { .. }, Arg::Int(_)) => Ok(()),
            (ParamType::Flags { .. }, _) => wrong("flags (A|B) or an integer"),
            (ParamType::Resource { name, .. }, Arg::Res(r)) => self.resource(*r, pname, name),
            (ParamType::Resource { .. }, Arg::Int(_)) => Ok(()),
            (ParamType::Resource { .. }, _) => wrong("a resource (rN) or an integer"),
            (ParamType::Path { .. }, Arg::Path(p)) => check_path(p),
            (ParamType::Path { .. }, _) => wrong("a file name (&\"name\")"),
            (ParamType::Buffer { .. }, Arg::Buf(b)) => self.buf(b, pname),
            (ParamType::Buffer { .. }, _) => wrong("a pointer (&rN+0x…, &buf[0x…] or nil)"),
            (ParamType::Vma, Arg::Buf(b @ BufRef::Map { .. })) => self.buf(b, pname),
            (ParamType::Vma, _) => wrong("an address in a mapping (&rN+0x…)"),
            (ParamType::Iovecs { .. }, Arg::Iovecs(iovs)) => {
                if iovs.len() > MAX_IOVECS {
                    return Err(Problem::TooManyIovecs(iovs.len()));
                }
                iovs.iter().try_for_each(|iov| self.buf(&iov.base, pname))
            }
            (ParamType::Iovecs { .. }, _) => wrong("iovecs ([{&rN+0x…, 0x…}, …])"),
            (ParamType::Struct { name }, Arg::Struct(fields)) => {
                let Some(sd) = self.target.struct_desc(name) else {
                    return wrong("a struct");
                };
                if sd.fields.len() != fields.len() {
                    return Err(Problem::Arity {
                        name: name.clone(),
                        expected: sd.fields.len(),
                        got: fields.len(),
                    });
                }
                for ((fname, _, fty), f) in sd.fields.iter().zip(fields) {
                    self.arg(f, fname, fty)?;
                }
                Ok(())
            }
            (ParamType::Struct { .. }, _) => wrong("a struct (&{…})"),
        }
    }

    fn resource(&self, r: ResId, pname: &str, wanted: &str) -> Result<(), Problem> {
        let got = self.produced.get(&r).ok_or(Problem::UndefinedResource(r))?;
        if self.target.res_compatible(got, wanted) {
            Ok(())
        } else {
            Err(Problem::WrongResource {
                res: r,
                param: pname.to_string(),
                expected: wanted.to_string(),
                got: got.clone(),
            })
        }
    }

    fn buf(&self, b: &BufRef, pname: &str) -> Result<(), Problem> {
        match b {
            BufRef::Map { map, .. } => self.resource(*map, pname, ResourceKind::Map.root_name()),
            BufRef::Scratch { size } if *size > MAX_SCRATCH => Err(Problem::ScratchTooLarge(*size)),
            BufRef::Scratch { .. } | BufRef::Nil => Ok(()),
        }
    }
}

fn check_path(p: &str) -> Result<(), Problem> {
    let ok = !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && !p.split('/').any(|c| c == ".." || c.is_empty())
        && !p.chars().any(|c| c == '"' || c == '\\' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Problem::BadPath(p.to_string()))
    }
}
