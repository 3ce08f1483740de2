//! syzkaller's program text as untyped data: the parser of what syzbot shows and its printer.
//! Types come later from daxdiff's descriptions ([`super::import`]); this layer knows syntax only.

use std::fmt::Write as _;

use super::SyzError;

/// A syzkaller program: calls in order and the comment lines after the last one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyzProgram {
    pub calls: Vec<SyzCall>,
    pub trailer: Vec<String>,
}

/// One call line: `r0 = openat(…) (async) # note`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyzCall {
    /// 1-based line of the call (its first line, when a mail client wrapped it).
    pub line: usize,
    /// Comment and blank lines before the call, verbatim; a comment after the call on its
    /// own line comes last.
    pub comments: Vec<String>,
    pub ret: Option<String>,
    /// Full name with variant: `io_uring_register$IORING_REGISTER_BUFFERS`.
    pub name: String,
    pub args: Vec<SyzArg>,
    /// Call properties after the arguments: `(async, fail_nth: 2)`.
    pub props: Vec<SyzProp>,
}

impl SyzCall {
    /// The base syscall name: `openat` for `openat$dir`.
    pub fn base_name(&self) -> &str {
        self.name.split('$').next().unwrap_or(&self.name)
    }
}

/// A call property: `async` (no value) or `fail_nth: 2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyzProp {
    pub name: String,
    pub value: Option<i64>,
}

/// An argument as written; what it means depends on the parameter it is passed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyzArg {
    /// `0x42` (or decimal): integers, flags, raw resource values, special pointers.
    Int(u64),
    /// `r3`: the result of an earlier call (or an inner `<r3=>` definition).
    Res(String),
    /// `&(0x7f0000000040/0x1000)=…`: `addr` is the absolute address as written (`None`
    /// for `&AUTO`), `vma_size` the `/size` of a vma pointer, `pointee` what follows `=`.
    Ptr {
        addr: Option<u64>,
        vma_size: Option<u64>,
        pointee: Option<Box<SyzArg>>,
    },
    /// `"0a0b"` or `'./file0\x00'`, optionally with `/size` (`""/4096` is an output buffer).
    Data {
        bytes: Vec<u8>,
        size: Option<u64>,
    },
    /// `{…}` struct fields, as many as written.
    Struct(Vec<SyzArg>),
    /// `[…]` array elements.
    Array(Vec<SyzArg>),
    /// `@field=value` (or `@field` alone).
    Union {
        field: String,
        value: Option<Box<SyzArg>>,
    },
    /// `<r1=>0x0`: an inner resource the call writes and later calls use.
    Def {
        name: String,
        value: Box<SyzArg>,
    },
    Nil,
    /// `AUTO`: a length or constant syzkaller computes.
    Auto,
}

/// Start of syzkaller's data area in its text form: every address is written as this base
/// plus an offset into the area (syz-executor maps the area elsewhere, e.g. 0x20000000).
pub const ADDR_BASE: u64 = 0x7f00_0000_0000;
/// Size of the data area on amd64 (4096 pages); addresses past it are clamped by syzkaller.
pub const DATA_SIZE: u64 = 16 << 20;
/// How deep groups may nest; bounds the recursive parser on damaged text.
const MAX_NESTING: usize = 32;

/// Parse syzkaller program text. Calls split across lines by a mail client (an argument
/// list still open at the end of a line) are joined again.
pub fn parse(text: &str) -> Result<SyzProgram, SyzError> {
    let mut prog = SyzProgram::default();
    let mut pending = Vec::new();
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut i = 0;
    while i < lines.len() {
        let first = i;
        let trimmed = lines[i].trim();
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            pending.push(lines[first].trim_end().to_string());
            continue;
        }
        let mut joined = lines[first].to_string();
        while open_parens(&joined) > 0 && i < lines.len() {
            joined.push(' ');
            joined.push_str(lines[i].trim());
            i += 1;
        }
        let mut call = Cursor::new(&joined, first + 1).call()?;
        let trailing = call.comments.pop();
        call.comments = std::mem::take(&mut pending);
        call.comments.extend(trailing);
        prog.calls.push(call);
    }
    prog.trailer = pending;
    Ok(prog)
}

/// Parentheses still open at the end of `s`, outside quoted data.
fn open_parens(s: &str) -> i64 {
    let mut depth = 0;
    let mut quote = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                '#' => break,
                _ => {}
            },
        }
    }
    depth
}

struct Cursor {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    depth: usize,
}

impl Cursor {
    fn new(s: &str, line: usize) -> Cursor {
        Cursor {
            chars: s.chars().collect(),
            pos: 0,
            line,
            depth: 0,
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, SyzError> {
        Err(SyzError::Syntax {
            line: self.line,
            col: self.pos + 1,
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
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            self.ws();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SyzError> {
        if self.eat(c) {
            return Ok(());
        }
        match self.peek() {
            Some(got) => self.err(format!("expected '{c}', found '{}'", got.escape_debug())),
            None => self.err(format!("expected '{c}' before the end of the line")),
        }
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            self.pos += 1;
        }
        let s = self.chars[start..self.pos].iter().collect();
        self.ws();
        s
    }

    fn number(&mut self) -> Result<u64, SyzError> {
        let start = self.pos;
        let w = self.ident();
        parse_number(&w).map_or_else(
            || {
                self.pos = start;
                self.err(format!("bad number '{w}'"))
            },
            Ok,
        )
    }

    fn call(&mut self) -> Result<SyzCall, SyzError> {
        let mut call = SyzCall {
            line: self.line,
            ..SyzCall::default()
        };
        let first = self.ident();
        if self.eat('=') {
            call.ret = Some(first);
            call.name = self.ident();
        } else {
            call.name = first;
        }
        if call.name.is_empty() {
            return self.err("expected a call name");
        }
        self.expect('(')?;
        if !self.eat(')') {
            loop {
                call.args.push(self.arg()?);
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        if self.eat('(') {
            while !self.eat(')') {
                let name = self.ident();
                if name.is_empty() {
                    return self.err("expected a call property such as async or fail_nth: 1");
                }
                let value = if self.eat(':') {
                    let start = self.pos;
                    let w = self.ident();
                    match w
                        .parse::<i64>()
                        .ok()
                        .or_else(|| parse_number(&w).map(|v| v as i64))
                    {
                        Some(v) => Some(v),
                        None => {
                            self.pos = start;
                            return self.err(format!("bad value '{w}' of call property {name}"));
                        }
                    }
                } else {
                    None
                };
                call.props.push(SyzProp { name, value });
                if !self.eat(',') && self.peek() != Some(')') {
                    self.expect(')')?;
                    break;
                }
            }
        }
        self.ws();
        match self.peek() {
            None => {}
            Some('#') => call
                .comments
                .push(self.chars[self.pos..].iter().collect::<String>()),
            Some(c) => {
                return self.err(format!("unexpected '{}' after the call", c.escape_debug()))
            }
        }
        Ok(call)
    }

    fn arg(&mut self) -> Result<SyzArg, SyzError> {
        self.ws();
        if self.depth == MAX_NESTING {
            return self.err(format!("arguments nested deeper than {MAX_NESTING} levels"));
        }
        self.depth += 1;
        let arg = self.arg_inner();
        self.depth -= 1;
        arg
    }

    fn arg_inner(&mut self) -> Result<SyzArg, SyzError> {
        if self.eat('<') {
            let name = self.ident();
            self.expect('=')?;
            self.expect('>')?;
            let value = Box::new(self.arg()?);
            return Ok(SyzArg::Def { name, value });
        }
        match self.peek() {
            Some(c) if c.is_ascii_digit() => Ok(SyzArg::Int(self.number()?)),
            Some('r') => {
                let name = self.ident();
                if matches!(self.peek(), Some('/' | '+')) {
                    return self.err(format!(
                        "{name} with an operation (/div or +add) is not supported"
                    ));
                }
                Ok(SyzArg::Res(name))
            }
            Some('&') => {
                self.pos += 1;
                self.ws();
                let (addr, vma_size) = if self.peek() == Some('A') {
                    self.keyword("AUTO")?;
                    (None, None)
                } else {
                    self.addr()?
                };
                let pointee = if self.eat('=') {
                    if self.peek() == Some('A')
                        && self.chars[self.pos..].starts_with(&['A', 'N', 'Y'])
                    {
                        self.keyword("ANY")?;
                        self.expect('=')?;
                    }
                    Some(Box::new(self.arg()?))
                } else {
                    None
                };
                Ok(SyzArg::Ptr {
                    addr,
                    vma_size,
                    pointee,
                })
            }
            Some('"') => {
                self.pos += 1;
                if self.peek() == Some('$') {
                    return self
                        .err("compressed data (\"$…\", a filesystem image) is not supported");
                }
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_hexdigit()) {
                    self.pos += 1;
                }
                let hex: String = self.chars[start..self.pos].iter().collect();
                if self.peek() != Some('"') || !hex.len().is_multiple_of(2) {
                    return self.err("hex data must be an even number of hex digits in \"…\"");
                }
                self.pos += 1;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
                    .collect();
                self.data(bytes)
            }
            Some('\'') => {
                self.pos += 1;
                let bytes = self.readable()?;
                self.data(bytes)
            }
            Some('{') | Some('[') => {
                let open = self.peek() == Some('{');
                let close = if open { '}' } else { ']' };
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat(close) {
                    loop {
                        items.push(self.arg()?);
                        if self.eat(close) {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(if open {
                    SyzArg::Struct(items)
                } else {
                    SyzArg::Array(items)
                })
            }
            Some('@') => {
                self.pos += 1;
                let field = self.ident();
                let value = if self.eat('=') {
                    Some(Box::new(self.arg()?))
                } else {
                    None
                };
                Ok(SyzArg::Union { field, value })
            }
            Some('n') => {
                self.keyword("nil")?;
                Ok(SyzArg::Nil)
            }
            Some('A') => {
                self.keyword("AUTO")?;
                Ok(SyzArg::Auto)
            }
            Some(c) => self.err(format!(
                "unexpected '{}' where an argument was expected",
                c.escape_debug()
            )),
            None => self.err("expected an argument before the end of the line"),
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), SyzError> {
        let start = self.pos;
        let w = self.ident();
        if w == kw {
            Ok(())
        } else {
            self.pos = start;
            self.err(format!("expected {kw}, found '{w}'"))
        }
    }

    /// `(0x7f0000000000[+off][/size])`.
    fn addr(&mut self) -> Result<(Option<u64>, Option<u64>), SyzError> {
        self.expect('(')?;
        let mut addr = self.number()?;
        if self.eat('+') {
            addr = addr.wrapping_add(self.number()?);
        } else if self.eat('-') {
            addr = addr.wrapping_sub(self.number()?);
        }
        let size = if self.eat('/') {
            Some(self.number()?)
        } else {
            None
        };
        self.expect(')')?;
        Ok((Some(addr), size))
    }

    fn data(&mut self, bytes: Vec<u8>) -> Result<SyzArg, SyzError> {
        let size = if self.eat('/') {
            Some(self.number()?)
        } else {
            None
        };
        self.ws();
        Ok(SyzArg::Data { bytes, size })
    }

    /// The body of `'…'` after the opening quote, through the closing one.
    fn readable(&mut self) -> Result<Vec<u8>, SyzError> {
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated '…' data");
            };
            self.pos += 1;
            match c {
                '\'' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape in '…' data");
                    };
                    self.pos += 1;
                    let b = match e {
                        'x' => {
                            let hex: String = self
                                .chars
                                .get(self.pos..self.pos + 2)
                                .map_or(String::new(), |h| h.iter().collect());
                            let Ok(b) = u8::from_str_radix(&hex, 16) else {
                                return self.err(format!("bad escape \\x{hex}"));
                            };
                            self.pos += 2;
                            b
                        }
                        'a' => 7,
                        'b' => 8,
                        'f' => 12,
                        'n' => b'\n',
                        'r' => b'\r',
                        't' => b'\t',
                        'v' => 11,
                        '\'' | '"' | '\\' => e as u8,
                        other => return self.err(format!("bad escape \\{other}")),
                    };
                    out.push(b);
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

/// `0x1f`, `0o17`, `0b11`, `017` (octal) or `31`, as syzkaller reads numbers.
pub fn parse_number(w: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = w.strip_prefix("0x").or(w.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(o) = w.strip_prefix("0o") {
        (o, 8)
    } else if let Some(b) = w.strip_prefix("0b") {
        (b, 2)
    } else if w.len() > 1 && w.starts_with('0') {
        (&w[1..], 8)
    } else {
        (w, 10)
    };
    u64::from_str_radix(digits, radix).ok()
}

impl SyzProgram {
    /// The text form, one call per line, as syzkaller prints it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for call in &self.calls {
            for c in &call.comments {
                out.push_str(c);
                out.push('\n');
            }
            if let Some(r) = &call.ret {
                let _ = write!(out, "{r} = ");
            }
            out.push_str(&call.name);
            out.push('(');
            for (i, a) in call.args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_arg(&mut out, a);
            }
            out.push(')');
            if !call.props.is_empty() {
                let props: Vec<String> = call
                    .props
                    .iter()
                    .map(|p| match p.value {
                        Some(v) => format!("{}: {v}", p.name),
                        None => p.name.clone(),
                    })
                    .collect();
                let _ = write!(out, " ({})", props.join(", "));
            }
            out.push('\n');
        }
        for c in &self.trailer {
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

fn write_arg(out: &mut String, a: &SyzArg) {
    let list = |out: &mut String, items: &[SyzArg], open: char, close: char| {
        out.push(open);
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_arg(out, x);
        }
        out.push(close);
    };
    match a {
        SyzArg::Int(v) => {
            let _ = write!(out, "0x{v:x}");
        }
        SyzArg::Res(r) => out.push_str(r),
        SyzArg::Ptr {
            addr,
            vma_size,
            pointee,
        } => {
            match addr {
                Some(a) => {
                    let _ = write!(out, "&(0x{a:x}");
                    if let Some(s) = vma_size {
                        let _ = write!(out, "/0x{s:x}");
                    }
                    out.push(')');
                }
                None => out.push_str("&AUTO"),
            }
            if let Some(p) = pointee {
                out.push('=');
                write_arg(out, p);
            }
        }
        SyzArg::Data { bytes, size } => {
            write_data(out, bytes);
            if let Some(s) = size {
                let _ = write!(out, "/{s}");
            }
        }
        SyzArg::Struct(items) => list(out, items, '{', '}'),
        SyzArg::Array(items) => list(out, items, '[', ']'),
        SyzArg::Union { field, value } => {
            let _ = write!(out, "@{field}");
            if let Some(v) = value {
                out.push('=');
                write_arg(out, v);
            }
        }
        SyzArg::Def { name, value } => {
            let _ = write!(out, "<{name}=>");
            write_arg(out, value);
        }
        SyzArg::Nil => out.push_str("nil"),
        SyzArg::Auto => out.push_str("AUTO"),
    }
}

/// Readable text (file names) in `'…'` with escapes, anything else as hex in `"…"`.
fn write_data(out: &mut String, bytes: &[u8]) {
    let readable = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || matches!(b, 0 | 7..=13));
    if !readable {
        out.push('"');
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
        out.push('"');
        return;
    }
    out.push('\'');
    for &b in bytes {
        match b {
            b'\'' | b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_FORM: &str = "\
# every argument form syzkaller prints
r0 = openat(0xffffffffffffff9c, &(0x7f0000000040)='./file0\\x00', 0x42, 0x0)
mmap(&(0x7f0000000000/0x2000)=nil, 0x2000, 0x3, 0x11, r0, 0x0)
pipe2(&(0x7f0000000080)={<r1=>0xffffffffffffffff, <r2=>0xffffffffffffffff}, 0x0)
vmsplice(r2, &(0x7f00000000c0)=[{&(0x7f0000000000)=\"0102ff\", 0x3}, {&(0x7f0000001000)=\"\"/4096, 0x1000}], 0x2, 0x0) (async)
ioctl$FOO(r0, 0x1, &AUTO=@opt=[{0x1, AUTO}, @empty], nil) (fail_nth: 3, async)
";

    #[test]
    fn every_argument_form_parses_and_prints_back() {
        let p = parse(EVERY_FORM).unwrap();
        assert_eq!(p.calls.len(), 5);
        assert_eq!(p.calls[0].ret.as_deref(), Some("r0"));
        assert_eq!(
            p.calls[0].args[1],
            SyzArg::Ptr {
                addr: Some(0x7f0000000040),
                vma_size: None,
                pointee: Some(Box::new(SyzArg::Data {
                    bytes: b"./file0\0".to_vec(),
                    size: None
                })),
            }
        );
        assert_eq!(p.calls[3].props[0].name, "async");
        assert_eq!(p.calls[4].props[0].value, Some(3));
        assert_eq!(p.to_text(), EVERY_FORM);
    }

    #[test]
    fn numbers_comments_and_wrapped_lines() {
        let text = "getpid() # mine\nmunmap(&(0x7f0000000000/0x1000)=nil,\n  4096)\n# end\n";
        let p = parse(text).unwrap();
        assert_eq!(p.calls[0].comments, vec!["# mine".to_string()]);
        assert_eq!(p.calls[1].line, 2);
        assert_eq!(p.calls[1].args[1], SyzArg::Int(4096));
        assert_eq!(p.trailer, vec!["# end".to_string()]);
        assert_eq!(parse_number("010"), Some(8));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse("getpid()\nmmap(&(0x7f0000000000/0x1000)=nil, 0x1000 0x3)\n").unwrap_err();
        assert!(
            matches!(
                e,
                SyzError::Syntax {
                    line: 2,
                    col: 43,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("write(r0, &(0x7f0000000000)=\"$eJw=\", 0x1)\n").unwrap_err();
        assert!(e.to_string().contains("compressed"), "{e}");
        let e = parse("close(r0/2)\n").unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let deep = format!("f({}0x0{})\n", "{".repeat(100), "}".repeat(100));
        assert!(parse(&deep).unwrap_err().to_string().contains("nested"));
    }
}
