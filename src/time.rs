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

    proptest! {
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
