//! The tail of the kernel log, quoted in failure details: a failed DAX mount says why only
//! there ("DAX unsupported by block device", "can't mount with dax and reflink", …).

/// The last `lines` lines of the kernel ring buffer, or a note saying why it is unreadable.
pub fn tail(lines: usize) -> String {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER ignores the buffer arguments.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size <= 0 {
        return format!(
            "(kernel log unreadable: {})",
            std::io::Error::last_os_error()
        );
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: buf has room for size bytes.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), size) };
    if n < 0 {
        return format!(
            "(kernel log unreadable: {})",
            std::io::Error::last_os_error()
        );
    }
    buf.truncate(n as usize);
    last_lines(&String::from_utf8_lossy(&buf), lines)
}

fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\n", 5), "a");
    }
}
