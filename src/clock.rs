//! Wall-clock time for `ts`, and whether that clock can be trusted.
//!
//! Durations never come from here: they come from `Instant`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When this binary was built (seconds since the epoch), from build.rs.
const BUILD_EPOCH: &str = env!("WSPROBE_BUILD_EPOCH");

/// True when `now` is before the build time: the clock has not been set
/// since boot, so `ts` is not to be trusted (durations still are).
pub fn is_unsynced(now: SystemTime) -> bool {
    let built = BUILD_EPOCH.parse::<u64>().unwrap_or(0);
    now < UNIX_EPOCH + Duration::from_secs(built)
}

/// RFC 3339 in UTC with milliseconds: `2026-11-25T07:40:29.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    // A clock before 1970 is printed as the epoch itself; it is flagged
    // unsynced anyway.
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, which is exact for every day this agent will see).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(at(951_782_400, 7)),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            rfc3339_millis(at(1_795_592_429, 123)),
            "2026-11-25T07:40:29.123Z"
        );
        assert_eq!(
            rfc3339_millis(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
    }

    #[test]
    fn a_clock_from_1970_is_unsynced_and_now_is_not() {
        assert!(is_unsynced(at(3600, 0)));
        assert!(!is_unsynced(SystemTime::now()));
    }
}
