//! Every time option on the command line (`--budget 1h30m`, `--timeout 10s`): humantime's
//! durations, with a bare number read as seconds, as the options took before they had units.

use std::time::Duration;

/// A duration as the user wrote it: `90s`, `30m`, `1h30m`, `1.5h`, `2days`, `500ms`, or a
/// bare number of seconds (`45`, `2.5`). Zero is allowed (`--settle 0`); negative is not.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty duration: write e.g. 90s, 30m, 1h30m".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| {
            format!("`{t}` is not a duration in seconds: write e.g. 90s, 30m, 1h30m")
        });
    }
    if let Some(d) = fractional(t) {
        return d;
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("`{t}` is not a duration ({e}): write e.g. 90s, 30m, 1h30m, 1.5h or 2d")
    })
}

/// `1.5h`, `0.5d`: humantime takes whole numbers only, and a budget is often thought of in
/// fractions of an hour.
fn fractional(t: &str) -> Option<Result<Duration, String>> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    if !num.contains('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let per = match unit {
        "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    };
    Some(
        Duration::try_from_secs_f64(n * per)
            .map_err(|_| format!("`{t}` is out of range for a duration")),
    )
}

/// The way durations are printed back to the user (`1h 30m`, `10s`).
pub fn show(d: Duration) -> String {
    // Whole milliseconds: a status line has no use for nanoseconds.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn units_combine_as_people_write_them() {
        assert_eq!(parse("90s"), secs(90));
        assert_eq!(parse("30m"), secs(1800));
        assert_eq!(parse("8h"), secs(28800));
        assert_eq!(parse("2d"), secs(172800));
        assert_eq!(parse("1h30m"), secs(5400));
        assert_eq!(parse("1h 30m"), secs(5400));
        assert_eq!(parse("1.5h"), secs(5400));
        assert_eq!(parse("0.5d"), secs(43200));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10min"), secs(600));
    }

    #[test]
    fn a_bare_number_is_seconds_as_before() {
        assert_eq!(parse("45"), secs(45));
        assert_eq!(parse("0"), secs(0));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn nonsense_is_refused_with_an_example() {
        for bad in ["", "m", "5 weeks ago", "-3", "1.5x", "abc"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("e.g. 90s"), "{bad}: {e}");
        }
    }

    #[test]
    fn printed_back_readably() {
        assert_eq!(show(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(show(Duration::from_secs(10)), "10s");
    }
}
