//! The program model: a sequence of typed calls whose results (resources) feed later calls.
//! Text and JSON forms live in `encoding`; checking against the descriptions lives in `validate`.

use serde::{Deserialize, Serialize};

/// Label of a resource produced by a call, printed `r3`.
///
/// Labels are names, not positions: a program may use any distinct labels, and the
/// printer keeps them as written. Generation and mutation renumber to `r0, r1, …` in
/// call order ([`Program::renumber`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResId(pub u32);

/// Which executor thread runs a call.
///
/// Calls on [`ThreadId::MAIN`] run in program order on the main thread. A call marked
/// [`ThreadId::SECOND`] (text form: a trailing `[t1]`) is handed to a second thread and the
/// main thread moves on at once, so it races whatever follows. The second thread runs its
/// calls in program order. A call that uses a resource produced on the other thread waits
/// for that call to finish; `daxdiff_barrier()` waits for all calls handed to the second
/// thread so far.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ThreadId(pub u8);

impl ThreadId {
    /// The main thread (no marker in the text form).
    pub const MAIN: ThreadId = ThreadId(0);
    /// The second thread (`[t1]` in the text form).
    pub const SECOND: ThreadId = ThreadId(1);
    /// Number of threads a program can use.
    pub const COUNT: u8 = 2;
}

/// A buffer a call reads from or writes to (a pointer argument).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufRef {
    /// `&r3+0x1000`: the address of mapping `map` (a `map` resource) plus `offset` bytes.
    /// This is how a program hands a DAX mapping to a pinning call.
    Map { map: ResId, offset: u64 },
    /// `&buf[0x1000]`: an anonymous, page-aligned scratch buffer of `size` bytes that the
    /// executor allocates for this argument (filled with a deterministic pattern for writes).
    Scratch { size: u64 },
    /// `nil`: the null pointer.
    Nil,
}

/// One element of an iovec array: `{&r3+0x0, 0x1000}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Iovec {
    pub base: BufRef,
    pub len: u64,
}

/// A call argument. Which variants a parameter accepts is given by its
/// [`crate::target::ParamType`]; `validate` checks it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arg {
    /// An integer, printed in hex: `0x200000`. Also allowed where a flag set or a resource
    /// is expected (a raw value, e.g. an invalid fd).
    Int(u64),
    /// Named constants or'ed together: `O_RDWR|O_DIRECT`, or a single `AT_FDCWD`.
    /// Names are kept as written so the text form round-trips; values come from
    /// [`crate::target::Target::flags_value`].
    Flags(Vec<String>),
    /// A resource produced by an earlier call: `r0`.
    Res(ResId),
    /// A file name, printed `&"file0"`. Relative to the directory the executor chose for
    /// the program on the mount selected by the call variant (`$ext4`, `$xfs`), or the
    /// device directory for `$devdax`.
    Path(String),
    /// A pointer argument: mapping address, scratch buffer or `nil`.
    Buf(BufRef),
    /// An iovec array: `[{&r3+0x0, 0x1000}, {&buf[0x1000], 0x1000}]`.
    Iovecs(Vec<Iovec>),
    /// A pointer to a struct of integer fields, in declaration order: `&{0x8000, 0x0}`.
    Struct(Vec<Arg>),
}

/// One call of a program.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Call {
    /// Full call name including the variant: `openat$ext4`, `daxdiff_evict`.
    pub name: String,
    pub args: Vec<Arg>,
    /// Label of the resource this call produces (`r0 = …`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<ResId>,
    #[serde(default, skip_serializing_if = "is_main")]
    pub thread: ThreadId,
    /// Comment and blank lines before the call in the text form, verbatim (without the
    /// newline). Kept so hand-written corpus programs round-trip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

fn is_main(t: &ThreadId) -> bool {
    *t == ThreadId::MAIN
}

impl Call {
    /// A call on the main thread without result label or comments.
    pub fn new(name: impl Into<String>, args: Vec<Arg>) -> Call {
        Call {
            name: name.into(),
            args,
            ret: None,
            thread: ThreadId::MAIN,
            comments: Vec::new(),
        }
    }

    /// The resource labels this call uses, in argument order (with repeats).
    pub fn uses(&self) -> Vec<ResId> {
        let mut out = Vec::new();
        for arg in &self.args {
            arg_uses(arg, &mut out);
        }
        out
    }

    /// The base syscall or pseudo-call name: `openat` for `openat$ext4`.
    pub fn base_name(&self) -> &str {
        self.name.split('$').next().unwrap_or(&self.name)
    }
}

fn arg_uses(arg: &Arg, out: &mut Vec<ResId>) {
    match arg {
        Arg::Res(r) => out.push(*r),
        Arg::Buf(BufRef::Map { map, .. }) => out.push(*map),
        Arg::Iovecs(iovs) => {
            for iov in iovs {
                if let BufRef::Map { map, .. } = iov.base {
                    out.push(map);
                }
            }
        }
        Arg::Struct(fields) => fields.iter().for_each(|f| arg_uses(f, out)),
        Arg::Int(_) | Arg::Flags(_) | Arg::Path(_) | Arg::Buf(_) => {}
    }
}

/// A program: calls in order, plus comment lines after the last call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Program {
    pub calls: Vec<Call>,
    /// Comment and blank lines after the last call, verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailer: Vec<String>,
}

impl Program {
    /// Index of the call that produces `res`, if any.
    pub fn producer(&self, res: ResId) -> Option<usize> {
        self.calls.iter().position(|c| c.ret == Some(res))
    }

    /// A label no call uses yet.
    pub fn fresh_res(&self) -> ResId {
        let max = self
            .calls
            .iter()
            .filter_map(|c| c.ret)
            .map(|r| r.0 + 1)
            .max();
        ResId(max.unwrap_or(0))
    }

    /// Relabel resources `r0, r1, …` in the order their producers appear.
    pub fn renumber(&mut self) {
        let mut map = std::collections::HashMap::new();
        for call in &mut self.calls {
            if let Some(r) = call.ret {
                let new = ResId(map.len() as u32);
                map.insert(r, new);
                call.ret = Some(new);
            }
        }
        for call in &mut self.calls {
            for arg in &mut call.args {
                relabel(arg, &map);
            }
        }
    }
}

fn relabel(arg: &mut Arg, map: &std::collections::HashMap<ResId, ResId>) {
    let fix = |r: &mut ResId| {
        if let Some(n) = map.get(r) {
            *r = *n;
        }
    };
    match arg {
        Arg::Res(r) => fix(r),
        Arg::Buf(BufRef::Map { map: m, .. }) => fix(m),
        Arg::Iovecs(iovs) => {
            for iov in iovs {
                if let BufRef::Map { map: m, .. } = &mut iov.base {
                    fix(m);
                }
            }
        }
        Arg::Struct(fields) => fields.iter_mut().for_each(|f| relabel(f, map)),
        Arg::Int(_) | Arg::Flags(_) | Arg::Path(_) | Arg::Buf(_) => {}
    }
}
