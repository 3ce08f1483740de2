//! One C function per call: its arguments marshaled as the executor's interpreter does
//! (`harness/executor/src/run/interp.rs`), the syscall or pseudo-call, the result line.

use std::fmt::Write;

use super::{c_string, invalid_value, CsourceError};
use crate::target::{FileTarget, PipeEnd, Pseudo};
use crate::{program::Iovec, ThreadId};
use crate::{Arg, BufRef, CallDesc, CallKind, ParamType, Program, ResId, ResourceKind, Target};

/// The resource variables: `r<N>` (and `r<N>_rd`/`r<N>_wr` for pipes, `r<N>_ring` for rings).
pub(super) fn resources(target: &Target, prog: &Program) -> String {
    let mut out = String::from(
        "/* Resources, holding the executor's \"failed\" value until their call succeeds. */\n",
    );
    for call in &prog.calls {
        let (Some(r), Some(kind)) = (call.ret, ret_kind(target, &call.name)) else {
            continue;
        };
        let init = invalid_value(kind);
        match kind {
            ResourceKind::Pipe => {
                let _ = writeln!(out, "static long r{0}_rd __attribute__((unused)) = -1, r{0}_wr __attribute__((unused)) = -1;", r.0);
            }
            ResourceKind::Ring => {
                let _ = writeln!(out, "static long r{0} __attribute__((unused)) = {init};\nstatic struct ring r{0}_ring;", r.0);
            }
            _ => {
                let _ = writeln!(
                    out,
                    "static long r{} __attribute__((unused)) = {init};",
                    r.0
                );
            }
        }
    }
    out.push('\n');
    out
}

/// The ring of a call whose ring argument is not a ring resource (the executor: EBADF).
pub(super) fn no_ring() -> String {
    "static struct ring no_ring __attribute__((unused));\n\n".to_string()
}

fn ret_kind(target: &Target, name: &str) -> Option<ResourceKind> {
    target.call(name).and_then(|d| d.ret_kind)
}

/// The C function `call<idx>` for call `idx`.
pub(super) fn function(
    target: &Target,
    prog: &Program,
    idx: usize,
) -> Result<String, CsourceError> {
    let call = &prog.calls[idx];
    let desc = target
        .call(&call.name)
        .ok_or_else(|| CsourceError::UnknownCall {
            index: idx,
            name: call.name.clone(),
        })?;
    let mut m = Marshal {
        target,
        prog,
        idx,
        lines: Vec::new(),
        n: 0,
    };
    let args: Vec<String> = call
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| m.arg(desc, i, a))
        .collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_else(|| "0ul".to_string());
    let mut body = String::new();
    // Resources made on the other thread: wait for their producers, as the executor does.
    let mut waits: Vec<usize> = call
        .uses()
        .into_iter()
        .filter_map(|r| prog.producer(r))
        .filter(|&p| p < idx && prog.calls[p].thread != call.thread)
        .collect();
    waits.sort_unstable();
    waits.dedup();
    for p in waits {
        let _ = writeln!(body, "\twait_for(call_done, {p});");
    }
    body.push_str("\tint err = 0;\n\tlong rc;\n");
    for l in &m.lines {
        let _ = writeln!(body, "\t{l}");
    }
    let ret = call.ret.map(|r| r.0);
    match desc.kind {
        CallKind::Syscall { nr } => {
            let regs: Vec<String> = (0..6).map(a).collect();
            let _ = writeln!(
                body,
                "\trc = syscall({nr} /* {} */, {});",
                desc.base_name(),
                regs.join(", ")
            );
            body.push_str("\terr = rc == -1 ? errno : 0;\n");
            if let Some(r) = ret {
                let _ = writeln!(body, "\tif (!err)\n\t\tr{r} = rc;");
            }
        }
        CallKind::Pseudo(p) => body.push_str(&pseudo(prog, idx, p, ret, &a)),
    }
    let _ = writeln!(body, "\treport({idx}, {}, rc, err);", c_string(&call.name));
    let _ = writeln!(body, "\tmark(call_done, {idx});");
    Ok(format!(
        "/* {} */\nstatic void call{idx}(void)\n{{\n{body}}}\n\n",
        call.to_text().replace("*/", "* /")
    ))
}

fn ring_expr(prog: &Program, target: &Target, arg: Option<&Arg>) -> String {
    match arg {
        Some(Arg::Res(r)) => match prog.producer(*r) {
            Some(p) if ret_kind(target, &prog.calls[p].name) == Some(ResourceKind::Ring) => {
                format!("&r{}_ring", r.0)
            }
            _ => "&no_ring".to_string(),
        },
        _ => "&no_ring".to_string(),
    }
}

fn pseudo(
    prog: &Program,
    idx: usize,
    p: Pseudo,
    ret: Option<u32>,
    a: &dyn Fn(usize) -> String,
) -> String {
    let target = Target::builtin();
    let args = &prog.calls[idx].args;
    let store = |what: &str| match ret {
        Some(r) => format!("\tif (!err)\n\t\tr{r} = {what};\n"),
        None => String::new(),
    };
    match p {
        Pseudo::Evict => format!("\trc = evict({}, &err);\n", a(0)),
        Pseudo::DevdaxDisable => "\trc = devdax_toggle(\"disable-device\", &err);\n".into(),
        Pseudo::DevdaxEnable => "\trc = devdax_toggle(\"enable-device\", &err);\n".into(),
        Pseudo::NsReconfigure => format!("\trc = ns_reconfigure({}, &err);\n", a(0)),
        Pseudo::ForkTouch => format!(
            "\tlong child = 0;\n\trc = fork_touch({}, {}, {}, &child, &err);\n{}",
            a(0),
            a(1),
            a(2),
            store("child")
        ),
        Pseudo::Wait => format!("\trc = wait_child({}, &err);\n", a(0)),
        Pseudo::Sleep => format!(
            "\tunsigned long ms = {};\n\tusleep((ms < 10000 ? ms : 10000) * 1000);\n\trc = 0;\n",
            a(0)
        ),
        Pseudo::Barrier => {
            let mut s = String::new();
            for (j, c) in prog.calls.iter().enumerate().take(idx) {
                if c.thread != ThreadId::MAIN {
                    let _ = writeln!(s, "\twait_for(call_done, {j});");
                }
            }
            s.push_str("\trc = 0;\n");
            s
        }
        Pseudo::Pipe => {
            let mut s = format!(
                "\tint fds[2];\n\trc = pipe2(fds, {});\n\terr = rc == -1 ? errno : 0;\n",
                a(0)
            );
            if let Some(r) = ret {
                let _ = writeln!(
                    s,
                    "\tif (!err) {{\n\t\tr{r}_rd = fds[0];\n\t\tr{r}_wr = fds[1];\n\t}}"
                );
            }
            s
        }
        Pseudo::UringSetup => match ret {
            Some(r) => format!(
                "\trc = ring_setup(&r{r}_ring, {}, &err);\n{}",
                a(0),
                store("rc")
            ),
            None => format!(
                "\tstatic struct ring ring;\n\trc = ring_setup(&ring, {}, &err);\n",
                a(0)
            ),
        },
        Pseudo::UringRw => format!(
            "\trc = ring_rw({}, {}, {}, 0, {}, {}, {}, &err);\n",
            ring_expr(prog, target, args.first()),
            a(1),
            a(2),
            a(3),
            a(4),
            a(5)
        ),
        Pseudo::UringSubmit => format!(
            "\trc = ring_start({}, {}, {}, {}, {}, {}, &err);\n",
            ring_expr(prog, target, args.first()),
            a(1),
            a(2),
            a(3),
            a(4),
            a(5)
        ),
        Pseudo::UringWait => format!(
            "\trc = ring_wait({}, &err);\n",
            ring_expr(prog, target, args.first())
        ),
        Pseudo::AioSetup => format!(
            "\tunsigned long ctx = 0;\n\trc = aio_setup({}, &ctx, &err);\n{}",
            a(0),
            store("ctx")
        ),
        Pseudo::AioSubmit => format!(
            "\trc = aio_start({}, {}, {}, {}, {}, {}, &err);\n",
            a(0),
            a(1),
            a(2),
            a(3),
            a(4),
            a(5)
        ),
        Pseudo::AioWait => format!("\trc = aio_wait({}, &err);\n", a(0)),
        Pseudo::UringUpdateBuffers => format!(
            "\trc = ring_update_buffers({}, {}, {}, {}, &err);\n",
            ring_expr(prog, target, args.first()),
            a(2),
            a(3),
            a(4)
        ),
        Pseudo::UringRwFixed => format!(
            "\trc = ring_rw({}, {}, {}, {}, {}, {}, {}, &err);\n",
            ring_expr(prog, target, args.first()),
            a(2),
            a(3),
            a(4),
            a(5),
            a(6),
            a(7)
        ),
    }
}

/// Turns arguments into C expressions, with the statements (buffers, iovec arrays) they need.
struct Marshal<'a> {
    target: &'a Target,
    prog: &'a Program,
    idx: usize,
    lines: Vec<String>,
    n: usize,
}

impl Marshal<'_> {
    fn fresh(&mut self, stem: &str) -> String {
        self.n += 1;
        format!("{stem}{}", self.n - 1)
    }

    fn res(&self, r: ResId, kind: ResourceKind, end: Option<PipeEnd>) -> String {
        match self
            .prog
            .producer(r)
            .and_then(|p| ret_kind(self.target, &self.prog.calls[p].name))
        {
            Some(ResourceKind::Pipe) => {
                let e = if end == Some(PipeEnd::Write) {
                    "wr"
                } else {
                    "rd"
                };
                format!("(unsigned long)r{}_{e}", r.0)
            }
            Some(_) => format!("(unsigned long)r{}", r.0),
            None => format!("(unsigned long){}l", invalid_value(kind)),
        }
    }

    fn buf(&mut self, b: &BufRef) -> String {
        match b {
            BufRef::Map { map, offset } => {
                format!(
                    "({} + {offset:#x}ul)",
                    self.res(*map, ResourceKind::Map, None)
                )
            }
            BufRef::Scratch { size } => format!("scratch({size:#x}ul, {})", self.idx as u8),
            BufRef::Nil => "0ul".to_string(),
        }
    }

    fn iovecs(&mut self, iovs: &[Iovec]) -> String {
        if iovs.is_empty() {
            // The executor passes an allocated, empty array: a valid pointer.
            return "scratch(1, 0)".to_string();
        }
        let name = self.fresh("iov");
        self.lines
            .push(format!("static struct iovec {name}[{}];", iovs.len()));
        for (i, iov) in iovs.iter().enumerate() {
            let base = self.buf(&iov.base);
            self.lines
                .push(format!("{name}[{i}].iov_base = (void *){base};"));
            self.lines
                .push(format!("{name}[{i}].iov_len = {:#x}ul;", iov.len));
        }
        format!("(unsigned long){name}")
    }

    fn arg(&mut self, desc: &CallDesc, i: usize, arg: &Arg) -> String {
        let ty = desc.params.get(i).map(|p| &p.ty);
        match (ty, arg) {
            (_, Arg::Int(v)) => format!("{v:#x}ul"),
            (_, Arg::Flags(names)) => format!(
                "/* {} */ {:#x}ul",
                names.join("|"),
                self.target.flags_value(names).unwrap_or(0)
            ),
            (Some(ParamType::Resource { kind, pipe_end, .. }), Arg::Res(r)) => {
                self.res(*r, *kind, *pipe_end)
            }
            (_, Arg::Res(r)) => self.res(*r, ResourceKind::Map, None),
            (_, Arg::Path(name)) => {
                let f = match desc.file_target {
                    Some(FileTarget::Xfs) => "xfs_path",
                    Some(FileTarget::Devdax) => "devdax_path",
                    Some(FileTarget::Nodax) => "nodax_path",
                    Some(FileTarget::Blkdev) => "blkdev_path",
                    Some(FileTarget::Ext4) | None => "ext4_path",
                };
                format!("(unsigned long){f}({})", c_string(name))
            }
            (_, Arg::Buf(b)) => self.buf(b),
            (_, Arg::Iovecs(iovs)) => self.iovecs(iovs),
            (ty, Arg::Struct(fields)) => {
                let bytes = match ty {
                    Some(ParamType::Struct { name }) => self.target.struct_bytes(name, fields),
                    _ => None,
                }
                .unwrap_or_default();
                let name = self.fresh("st");
                let list: Vec<String> = bytes.iter().map(|b| format!("{b:#04x}")).collect();
                let list = if list.is_empty() {
                    "0".to_string()
                } else {
                    list.join(", ")
                };
                self.lines.push(format!(
                    "static const unsigned char {name}[{}] = {{{list}}};",
                    bytes.len().max(1)
                ));
                format!("bytes_at({name}, {})", bytes.len().max(1))
            }
        }
    }
}
