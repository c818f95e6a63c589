//! The time window of `--since`.
//!
//! Accepted forms: a duration back from now (`90m`, `24h`, `7d`, `2w`, and
//! `s` for seconds), a date (`2026-01-09`, midnight UTC) or an RFC 3339
//! time (`2026-01-09T04:56:00Z`, any offset).

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::error::{Error, Result};

/// The start of the window that `--since SPEC` describes, as of `now`.
pub fn since(spec: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    // To the millisecond, as a BSON date holds it: a server compares with
    // the stored milliseconds, and a dump scan must draw the same line.
    parse_since(spec, now).map(|t| {
        let ms = t.timestamp_millis();
        DateTime::from_timestamp_millis(ms).unwrap_or(t)
    })
}

fn parse_since(spec: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let spec = spec.trim();
    if let Some(back) = parse_duration(spec) {
        return now
            .checked_sub_signed(back)
            .ok_or_else(|| Error::usage(format!("--since {spec}: too far back")));
    }
    if let Ok(date) = NaiveDate::parse_from_str(spec, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(midnight.and_utc());
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(spec) {
        return Ok(time.with_timezone(&Utc));
    }
    Err(Error::usage(format!(
        "--since {spec:?}: expected a duration such as 90m, 24h, 7d or 2w, \
         a date such as 2026-01-09, or an RFC 3339 time"
    )))
}

fn parse_duration(spec: &str) -> Option<Duration> {
    let unit = spec.chars().last()?;
    let digits = &spec[..spec.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        'w' => Duration::try_weeks(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-09T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_time_is_cut_to_the_millisecond_as_a_bson_date_holds_it() {
        let t = since("2026-01-09T03:40:00.0005Z", now()).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-09T03:40:00+00:00");
        let t = since("2026-01-09T03:40:00.0015Z", now()).unwrap();
        assert_eq!(t.timestamp_millis() % 1000, 1);
    }

    #[test]
    fn durations() {
        let at = |s| since(s, now()).unwrap().to_rfc3339();
        assert_eq!(at("90m"), "2026-01-09T10:30:00+00:00");
        assert_eq!(at("24h"), "2026-01-08T12:00:00+00:00");
        assert_eq!(at("7d"), "2026-01-02T12:00:00+00:00");
        assert_eq!(at("2w"), "2025-12-26T12:00:00+00:00");
    }

    #[test]
    fn dates_and_times() {
        let at = |s| since(s, now()).unwrap().to_rfc3339();
        assert_eq!(at("2026-01-01"), "2026-01-01T00:00:00+00:00");
        assert_eq!(at("2026-01-01T05:00:00+02:00"), "2026-01-01T03:00:00+00:00");
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "h", "24", "24x", "-3d", "yesterday", "99999999999999w"] {
            assert!(since(bad, now()).is_err(), "{bad}");
        }
    }
}
