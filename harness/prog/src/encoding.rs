//! The text form of programs: one call per line, syzkaller-like, and its parser.
//!
//! ```text
//! # a comment (kept, attached to the next call)
//! r0 = openat$ext4(AT_FDCWD, &"file0", O_RDWR|O_CREAT|O_DIRECT, 0x1b6)
//! ftruncate(r0, 0x200000)
//! r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)
//! pread64(r0, &r1+0x0, 0x1000, 0x0) [t1]
//! vmsplice(r2, [{&r1+0x1000, 0x1000}, {&buf[0x1000], 0x1000}], 0x2, 0x0)
//! ioctl$FS_IOC_FSSETXATTR(r0, FS_IOC_FSSETXATTR, &{FS_XFLAG_DAX, 0x0, 0x0, 0x0, 0x0, 0x0})
//! ```
//!
//! Arguments: `0x…` integers (always hex), `A|B` named constants, `rN` resources,
//! `&"name"` file names, `&rN+0x…` an address inside mapping `rN`, `&buf[0x…]` a scratch
//! buffer of that size, `nil`, `[{ptr, 0xlen}, …]` iovecs, `&{…}` a struct. A trailing
//! `[t1]` runs the call on the second thread (see [`ThreadId`]). Printing the result of
//! parsing canonical text (as printed) gives the same text back, byte for byte.

use std::fmt::Write as _;

use crate::program::{Arg, BufRef, Call, Iovec, Program, ResId, ThreadId};
use crate::target::Target;
use crate::validate::validate;

/// A syntax or validation error in the text form, located by 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// Where one call and its top-level arguments are in the text (1-based).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSpan {
    pub line: usize,
    /// Column of the call name.
    pub col: usize,
    /// Column of each top-level argument.
    pub args: Vec<usize>,
}

/// Where each call is in the text, for error reporting.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    pub calls: Vec<CallSpan>,
}

/// Parse and validate a program against the target.
pub fn parse(target: &Target, text: &str) -> Result<Program, ParseError> {
    let (prog, spans) = parse_syntax(text)?;
    if let Err(e) = validate(target, &prog) {
        let span = &spans.calls[e.call];
        let col = e
            .arg
            .and_then(|a| span.args.get(a).copied())
            .unwrap_or(span.col);
        return Err(ParseError {
            line: span.line,
            col,
            msg: e.kind.to_string(),
        });
    }
    Ok(prog)
}

/// Parse the text form without checking it against a target.
pub fn parse_syntax(text: &str) -> Result<(Program, Spans), ParseError> {
    let mut prog = Program::default();
    let mut spans = Spans::default();
    let mut pending = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            // `lines` takes one `\r` off a `\r\n` ending; more would come back one fewer
            // each time the program is printed and read again.
            pending.push(line.trim_end_matches('\r').to_string());
            continue;
        }
        let mut lx = Lexer::new(line, i + 1);
        let (mut call, span) = lx.call()?;
        call.comments = std::mem::take(&mut pending);
        prog.calls.push(call);
        spans.calls.push(span);
    }
    prog.trailer = pending;
    Ok((prog, spans))
}

impl Program {
    /// The text form: one call per line, each line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for call in &self.calls {
            for c in &call.comments {
                out.push_str(c);
                out.push('\n');
            }
            write_call(&mut out, call);
            out.push('\n');
        }
        for c in &self.trailer {
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl Call {
    /// This call as one line of the text form (without comments and newline).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        write_call(&mut s, self);
        s
    }
}

fn write_call(out: &mut String, call: &Call) {
    if let Some(r) = call.ret {
        let _ = write!(out, "r{} = ", r.0);
    }
    out.push_str(&call.name);
    out.push('(');
    for (i, a) in call.args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_arg(out, a);
    }
    out.push(')');
    if call.thread != ThreadId::MAIN {
        let _ = write!(out, " [t{}]", call.thread.0);
    }
}

fn write_buf(out: &mut String, b: &BufRef) {
    let _ = match b {
        BufRef::Map { map, offset } => write!(out, "&r{}+0x{:x}", map.0, offset),
        BufRef::Scratch { size } => write!(out, "&buf[0x{size:x}]"),
        BufRef::Nil => write!(out, "nil"),
    };
}

fn write_arg(out: &mut String, a: &Arg) {
    match a {
        Arg::Int(v) => {
            let _ = write!(out, "0x{v:x}");
        }
        Arg::Flags(names) => out.push_str(&names.join("|")),
        Arg::Res(r) => {
            let _ = write!(out, "r{}", r.0);
        }
        Arg::Path(p) => {
            let _ = write!(out, "&\"{p}\"");
        }
        Arg::Buf(b) => write_buf(out, b),
        Arg::Iovecs(iovs) => {
            out.push('[');
            for (i, iov) in iovs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('{');
                write_buf(out, &iov.base);
                let _ = write!(out, ", 0x{:x}}}", iov.len);
            }
            out.push(']');
        }
        Arg::Struct(fields) => {
            out.push_str("&{");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_arg(out, f);
            }
            out.push('}');
        }
    }
}

/// How deep `&{…}` arguments may nest. The descriptions only have structs of integer
/// fields (depth 1); the bound keeps the recursive parser off the end of the stack on
/// hostile or damaged text.
pub const MAX_NESTING: usize = 16;

/// A cursor over one line.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    /// `&{` arguments open around the cursor.
    depth: usize,
}

impl Lexer {
    fn new(src: &str, line: usize) -> Lexer {
        Lexer {
            chars: src.chars().collect(),
            pos: 0,
            line,
            depth: 0,
        }
    }

    fn col(&self) -> usize {
        self.pos + 1
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            col: self.col(),
            msg: msg.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        self.ws();
        if self.eat(c) {
            Ok(())
        } else {
            match self.peek() {
                Some(got) => self.err(format!("expected '{c}', found '{}'", got.escape_debug())),
                None => self.err(format!("expected '{c}' before end of line")),
            }
        }
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn call(&mut self) -> Result<(Call, CallSpan), ParseError> {
        self.ws();
        let mut ret = None;
        let save = self.pos;
        let first = self.word();
        self.ws();
        if self.peek() == Some('=') {
            match res_label(&first) {
                Some(r) => ret = Some(r),
                None => {
                    self.pos = save;
                    return self.err(format!("result label must be rN, found '{first}'"));
                }
            }
            self.pos += 1;
            self.ws();
        } else {
            self.pos = save;
        }
        let name_col = self.col();
        let name = self.word();
        if name.is_empty() {
            return self.err("expected a call name");
        }
        self.expect('(')?;
        let mut args = Vec::new();
        let mut cols = Vec::new();
        self.ws();
        if !self.eat(')') {
            loop {
                self.ws();
                cols.push(self.col());
                args.push(self.arg()?);
                self.ws();
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        self.ws();
        let mut thread = ThreadId::MAIN;
        if self.eat('[') {
            let col = self.col();
            if !self.eat('t') {
                return self.err("expected a thread marker such as [t1]");
            }
            let n = self.word();
            match n.parse::<u8>() {
                Ok(0) => {
                    self.pos = col - 1;
                    return self.err("[t0] is the default; leave the marker out");
                }
                Ok(t) => thread = ThreadId(t),
                Err(_) => return self.err(format!("bad thread number '{n}'")),
            }
            self.expect(']')?;
        }
        self.ws();
        if let Some(c) = self.peek() {
            return self.err(format!("unexpected '{}' after the call", c.escape_debug()));
        }
        let mut call = Call::new(name, args);
        call.ret = ret;
        call.thread = thread;
        let span = CallSpan {
            line: self.line,
            col: name_col,
            args: cols,
        };
        Ok((call, span))
    }

    fn int(&mut self) -> Result<u64, ParseError> {
        self.ws();
        let start = self.pos;
        let w = self.word();
        let Some(hex) = w.strip_prefix("0x") else {
            self.pos = start;
            return self.err(format!("expected an integer in hex (0x…), found '{w}'"));
        };
        u64::from_str_radix(hex, 16).or_else(|_| {
            self.pos = start;
            self.err(format!("bad hex integer '{w}'"))
        })
    }

    fn buf(&mut self) -> Result<BufRef, ParseError> {
        self.ws();
        let start = self.pos;
        if self.eat('&') {
            let w = self.word();
            if w == "buf" {
                self.expect('[')?;
                let size = self.int()?;
                self.expect(']')?;
                return Ok(BufRef::Scratch { size });
            }
            if let Some(map) = res_label(&w) {
                self.expect('+')?;
                let offset = self.int()?;
                return Ok(BufRef::Map { map, offset });
            }
        } else if self.word() == "nil" {
            return Ok(BufRef::Nil);
        }
        self.pos = start;
        self.err("expected a pointer: &rN+0x…, &buf[0x…] or nil")
    }

    /// The fields of a `&{…}` argument, after its `{` up to and including its `}`.
    fn fields(&mut self) -> Result<Vec<Arg>, ParseError> {
        let mut fields = Vec::new();
        self.ws();
        if !self.eat('}') {
            loop {
                self.ws();
                fields.push(self.arg()?);
                self.ws();
                if self.eat('}') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(fields)
    }

    fn arg(&mut self) -> Result<Arg, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some('&') => {
                self.pos += 1;
                match self.peek() {
                    Some('"') => {
                        self.pos += 1;
                        let s = self.pos;
                        while matches!(self.peek(), Some(c) if c != '"') {
                            self.pos += 1;
                        }
                        if self.peek().is_none() {
                            self.pos = start;
                            return self.err("unterminated file name");
                        }
                        let p: String = self.chars[s..self.pos].iter().collect();
                        self.pos += 1;
                        Ok(Arg::Path(p))
                    }
                    Some('{') => {
                        if self.depth == MAX_NESTING {
                            self.pos = start;
                            return self.err(format!(
                                "struct arguments nested deeper than {MAX_NESTING} levels"
                            ));
                        }
                        self.pos += 1;
                        self.depth += 1;
                        let fields = self.fields();
                        self.depth -= 1;
                        Ok(Arg::Struct(fields?))
                    }
                    _ => {
                        self.pos = start;
                        Ok(Arg::Buf(self.buf()?))
                    }
                }
            }
            Some('[') => {
                self.pos += 1;
                let mut iovs = Vec::new();
                self.ws();
                if !self.eat(']') {
                    loop {
                        self.expect('{')?;
                        let base = self.buf()?;
                        self.expect(',')?;
                        let len = self.int()?;
                        self.expect('}')?;
                        iovs.push(Iovec { base, len });
                        self.ws();
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(Arg::Iovecs(iovs))
            }
            Some(c) if c.is_ascii_digit() => Ok(Arg::Int(self.int()?)),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let w = self.word();
                if w == "nil" {
                    return Ok(Arg::Buf(BufRef::Nil));
                }
                if let Some(r) = res_label(&w) {
                    return Ok(Arg::Res(r));
                }
                let mut names = vec![w];
                while self.eat('|') {
                    let n = self.word();
                    if n.is_empty() {
                        return self.err("expected a constant name after '|'");
                    }
                    names.push(n);
                }
                Ok(Arg::Flags(names))
            }
            Some(c) => self.err(format!(
                "unexpected '{}' where an argument was expected",
                c.escape_debug()
            )),
            None => self.err("expected an argument before end of line"),
        }
    }
}

/// `r12` → `ResId(12)`.
fn res_label(w: &str) -> Option<ResId> {
    let digits = w.strip_prefix('r')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(ResId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate;
    use crate::rng::Rng;

    fn t() -> &'static Target {
        Target::builtin()
    }

    const GOOD: &str = "\
# pin then truncate
r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_CREAT|O_DIRECT, 0x1b6)
r1 = mmap(0x0, 0x200000, PROT_READ|PROT_WRITE, MAP_SHARED, r0, 0x0)
pread64(r0, &r1+0x1000, 0x1000, 0x0) [t1]
r2 = daxdiff_pipe(0x0)
vmsplice(r2, [{&r1+0x0, 0x1000}, {&buf[0x2000], 0x2000}, {nil, 0x0}], 0x3, 0x0)
ioctl$FS_IOC_FSSETXATTR(r0, FS_IOC_FSSETXATTR, &{FS_XFLAG_DAX, 0x0, 0x0, 0x0, 0x0, 0x0})
daxdiff_barrier()

# trailing note
";

    fn err(text: &str) -> ParseError {
        parse(t(), text).expect_err("must be rejected")
    }

    #[test]
    fn text_round_trips_exactly_with_comments_threads_and_every_arg_form() {
        let prog = parse(t(), GOOD).unwrap();
        assert_eq!(prog.to_text(), GOOD);
        assert_eq!(prog.calls[2].thread, ThreadId::SECOND);
        assert_eq!(
            prog.calls[0].comments,
            vec!["# pin then truncate".to_string()]
        );
        assert_eq!(
            prog.trailer,
            vec![String::new(), "# trailing note".to_string()]
        );
    }

    #[test]
    fn json_round_trips() {
        let prog = parse(t(), GOOD).unwrap();
        let json = serde_json::to_string_pretty(&prog).unwrap();
        let back: Program = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prog);
        assert_eq!(back.to_text(), GOOD);
    }

    #[test]
    fn generated_programs_round_trip_through_text_and_json() {
        for seed in 0..3000 {
            let prog = generate(t(), &mut Rng::new(seed));
            let text = prog.to_text();
            let back = parse(t(), &text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
            assert_eq!(back, prog, "seed {seed}");
            assert_eq!(back.to_text(), text, "seed {seed}");
            let json: Program =
                serde_json::from_str(&serde_json::to_string(&prog).unwrap()).unwrap();
            assert_eq!(json, prog, "seed {seed}");
        }
    }

    #[test]
    fn fixed_values_must_match() {
        let e = err("r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR, 0x0)\n");
        assert_eq!((e.line, e.col), (1, 46));
        assert!(e.msg.contains("mode is fixed to 0x1b6"), "{e}");
    }

    #[test]
    fn unknown_call_is_reported_at_its_name() {
        let e = err("r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\n  frobnicate(r0)\n");
        assert_eq!((e.line, e.col), (2, 3));
        assert!(e.msg.contains("unknown call frobnicate"), "{e}");
    }

    #[test]
    fn wrong_arity_is_reported() {
        let e = err("daxdiff_sleep(0x1, 0x2)\n");
        assert_eq!((e.line, e.col), (1, 1));
        assert!(e.msg.contains("takes 1 arguments, found 2"), "{e}");
    }

    #[test]
    fn undefined_resource_is_reported_at_the_argument() {
        let e = err("daxdiff_sleep(0x1)\nftruncate(r7, 0x1000)\n");
        assert_eq!((e.line, e.col), (2, 11));
        assert!(
            e.msg.contains("r7 is not produced by an earlier call"),
            "{e}"
        );
        // Use before definition is the same mistake.
        let e = err("close(r0)\nr0 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\n");
        assert_eq!((e.line, e.col), (1, 7));
    }

    #[test]
    fn bad_flag_name_is_reported_at_the_argument() {
        let e = err("r0 = openat$ext4(AT_FDCWD, &\"file0\", O_RDWR|O_BOGUS, 0x1b6)\n");
        assert_eq!((e.line, e.col), (1, 38));
        assert!(
            e.msg.contains("O_BOGUS is not in flag set open_flags"),
            "{e}"
        );
    }

    #[test]
    fn wrong_resource_type_is_reported() {
        let e = err("r0 = daxdiff_pipe(0x0)\nftruncate(r0, 0x0)\n");
        assert!(e.msg.contains("r0 is a pipe, but fd needs a fd_dax"), "{e}");
        let e =
            err("r0 = openat$xfs(AT_FDCWD, &\"file0\", O_RDWR, 0x1b6)\nmunmap(&r0+0x0, 0x1000)\n");
        assert!(e.msg.contains("needs a map"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = err("daxdiff_sleep(10)\n");
        assert_eq!((e.line, e.col), (1, 15));
        assert!(e.msg.contains("hex"), "{e}");
        let e = err("daxdiff_barrier()\ndaxdiff_sleep(0x1\n");
        assert_eq!(e.line, 2);
        let e = err("daxdiff_barrier() [t0]\n");
        assert!(e.msg.contains("default"), "{e}");
        let e = err("daxdiff_barrier() [t2]\n");
        assert!(e.msg.contains("only [t1]"), "{e}");
        let e = err("x = daxdiff_barrier()\n");
        assert_eq!((e.line, e.col), (1, 1));
    }

    #[test]
    fn out_of_range_and_unsafe_paths_are_rejected() {
        assert!(err("daxdiff_sleep(0x3e8)\n").msg.contains("outside"));
        let e = err("r0 = openat$ext4(AT_FDCWD, &\"../etc/passwd\", O_RDWR, 0x1b6)\n");
        assert!(e.msg.contains("must be relative"), "{e}");
        assert!(
            err("r0 = daxdiff_pipe(0x0)\nread$pipe(r0, &buf[0x40000000], 0x1)\n")
                .msg
                .contains("16 MiB")
        );
    }

    #[test]
    fn labels_must_be_unique_and_only_on_resource_calls() {
        let e = err("r0 = daxdiff_pipe(0x0)\nr0 = daxdiff_pipe(0x0)\n");
        assert!(e.msg.contains("produced twice"), "{e}");
        let e = err("r0 = daxdiff_barrier()\n");
        assert!(e.msg.contains("produces no resource"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_with_the_line() {
        let depth = 30_000;
        let text = format!(
            "# deep\nioctl$FS_IOC_FSSETXATTR(r0, FS_IOC_FSSETXATTR, {}0x0{})\n",
            "&{".repeat(depth),
            "}".repeat(depth)
        );
        let e = parse_syntax(&text).expect_err("must be refused");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.msg.contains("nested deeper than 16"), "{e}");
        // The limit itself is accepted by the syntax (the descriptions then refuse it).
        let ok = format!(
            "f({}0x0{})\n",
            "&{".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        let (prog, _) = parse_syntax(&ok).unwrap();
        assert_eq!(prog.to_text(), ok);
    }

    #[test]
    fn deep_json_is_refused_by_the_deserializer() {
        // serde_json stops at 128 levels of nesting; a struct argument is two of them
        // (`{"struct": [...]}`), so JSON cannot build a deep enough Arg to hurt.
        let depth = 30_000;
        let json = format!(
            r#"{{"calls":[{{"name":"f","args":[{}{{"int":0}}{}]}}]}}"#,
            r#"{"struct":["#.repeat(depth),
            "]}".repeat(depth)
        );
        let e = serde_json::from_str::<Program>(&json).unwrap_err();
        assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn comments_and_blank_lines_ending_in_carriage_returns_read_back_the_same() {
        for text in ["# x\r\r\ngetpid()\n", "getpid()\n\r", "\r\r\n# y\r\n"] {
            let (prog, _) = parse_syntax(text).unwrap();
            let (again, _) = parse_syntax(&prog.to_text()).unwrap();
            assert_eq!(again, prog, "{text:?}");
        }
        let e = parse_syntax("getpid()\r\r\n").unwrap_err();
        assert_eq!(e.msg, "unexpected '\\r' after the call");
    }
}
