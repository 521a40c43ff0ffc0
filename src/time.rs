//! Time as a value. The core never reads a clock: drivers pass `now` in.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC). A plain integer keeps traces
/// serialisable and lets the simulator run on virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn saturating_add(self, duration_ms: u64) -> Millis {
        Millis(self.0.saturating_add(duration_ms))
    }

    pub fn saturating_sub(self, other: Millis) -> u64 {
        self.0.saturating_sub(other.0)
    }

    /// Calendar fields in UTC: (year, month 1-12, day 1-31, hour, minute, second, millisecond).
    pub fn to_utc(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let total_seconds = (self.0 / 1000) as i64;
        let millisecond = (self.0 % 1000) as u32;
        let days = total_seconds.div_euclid(86_400);
        let second_of_day = total_seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        (year, month, day, second_of_day / 3600, (second_of_day / 60) % 60, second_of_day % 60, millisecond)
    }

    /// Inverse of [`Millis::to_utc`]; `None` for fields out of range or before 1970.
    pub fn from_utc(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        millisecond: u32,
    ) -> Option<Millis> {
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 59
            || millisecond > 999
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        if civil_from_days(days) != (year, month, day) {
            return None;
        }
        let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
        let milliseconds = u64::try_from(seconds).ok()?.checked_mul(1000)?;
        Some(Millis(milliseconds + u64::from(millisecond)))
    }

    /// RFC 3339 with milliseconds, e.g. `2026-11-25T23:32:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let (year, month, day, hour, minute, second, millisecond) = self.to_utc();
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millisecond:03}Z")
    }

    /// Parses RFC 3339 as an operator types it: `2026-11-25T23:32:00Z`, with
    /// optional fractional seconds (milliseconds kept) and a `Z` or `±HH:MM`
    /// offset; `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Millis> {
        let bytes = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let slice = bytes.get(range)?;
            if slice.is_empty() || !slice.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(slice.iter().fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0')))
        };
        let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
        if separators.iter().any(|(index, byte)| bytes.get(*index) != Some(byte))
            || !matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        {
            return None;
        }
        let mut index = 19;
        let mut millisecond = 0u32;
        if bytes.get(index) == Some(&b'.') {
            let start = index + 1;
            let mut end = start;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            for position in 0..3 {
                let digit = if start + position < end { digits(start + position..start + position + 1)? } else { 0 };
                millisecond = millisecond * 10 + digit;
            }
            index = end;
        }
        let offset_minutes: i64 = match bytes.get(index) {
            Some(b'Z' | b'z') if bytes.len() == index + 1 => 0,
            Some(sign @ (b'+' | b'-')) if bytes.len() == index + 6 && bytes.get(index + 3) == Some(&b':') => {
                let hours = i64::from(digits(index + 1..index + 3)?);
                let minutes = i64::from(digits(index + 4..index + 6)?);
                if hours > 23 || minutes > 59 {
                    return None;
                }
                (if *sign == b'+' { 1 } else { -1 }) * (hours * 60 + minutes)
            }
            _ => return None,
        };
        let local = Millis::from_utc(
            i64::from(digits(0..4)?),
            digits(5..7)?,
            digits(8..10)?,
            digits(11..13)?,
            digits(14..16)?,
            digits(17..19)?,
            millisecond,
        )?;
        let shifted = i128::from(local.0) - i128::from(offset_minutes) * 60_000;
        u64::try_from(shifted).ok().map(Millis)
    }
}

// Howard Hinnant's proleptic Gregorian calendar algorithms (public domain):
// days since 1970-01-01 to and from (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Millis(1_795_649_520_123).to_rfc3339(), "2026-11-25T23:32:00.123Z");
        assert_eq!(Millis(951_782_400_000).to_rfc3339(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_operators_type() {
        let at = |text| Millis::parse_rfc3339(text).map(Millis::to_rfc3339);
        assert_eq!(at("2026-11-25T23:32:00Z").as_deref(), Some("2026-11-25T23:32:00.000Z"));
        assert_eq!(at("2026-11-25T23:32:00.1234Z").as_deref(), Some("2026-11-25T23:32:00.123Z"));
        assert_eq!(at("2026-11-25T23:32:00.5Z").as_deref(), Some("2026-11-25T23:32:00.500Z"));
        assert_eq!(at("2026-11-26T01:02:00+01:30").as_deref(), Some("2026-11-25T23:32:00.000Z"));
        assert_eq!(at("2026-11-25T20:32:00-03:00").as_deref(), Some("2026-11-25T23:32:00.000Z"));
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T23:32:00",
            "2026-13-25T23:32:00Z",
            "2026-11-25T23:32:00.Z",
            "2026-11-25T23:32:00+1:00",
            "2026-11-25T23:32:00Zjunk",
            "2026-11-25T23:32:60Z",
            "é026-11-25T23:32:00Z",
        ] {
            assert_eq!(Millis::parse_rfc3339(bad), None, "{bad} parsed");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_as_a_time_or_is_refused(text in ".{0,40}") {
            let _ = Millis::parse_rfc3339(&text);
        }

        #[test]
        fn printed_times_parse_back(milliseconds in 0u64..32_503_680_000_000) {
            prop_assert_eq!(Millis::parse_rfc3339(&Millis(milliseconds).to_rfc3339()), Some(Millis(milliseconds)));
        }

        #[test]
        fn utc_round_trips(milliseconds in 0u64..32_503_680_000_000) {
            let (year, month, day, hour, minute, second, millisecond) = Millis(milliseconds).to_utc();
            prop_assert_eq!(
                Millis::from_utc(year, month, day, hour, minute, second, millisecond),
                Some(Millis(milliseconds))
            );
        }
    }
}
