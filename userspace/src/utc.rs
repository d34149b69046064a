//! UTC calendar dates and `SystemTime`, both ways, for the mesh file's
//! date-times (`rotation_ends = 2026-12-04T18:00:00Z`) and for writing
//! them. Civil-day arithmetic on the proleptic Gregorian calendar (Howard
//! Hinnant's algorithms), so no date crate is needed for two conversions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A date and time at `offset_minutes` east of UTC, as a `SystemTime`.
/// `None` before 1970.
pub fn to_system_time(
    (year, month, day): (i64, i64, i64),
    (hour, minute, second, nanos): (i64, i64, i64, u32),
    offset_minutes: i64,
) -> Option<SystemTime> {
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos.into()))
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC of seconds since the epoch.
fn date_time(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// `t` as RFC 3339 in UTC, to the second: `2026-12-04T18:00:00Z`.
pub fn format(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format!("{}Z", date_time(secs))
}

/// RFC 3339 in UTC with milliseconds, from nanoseconds since the epoch
/// (log timestamps).
pub fn format_millis(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    format!("{}.{millis:03}Z", date_time(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_and_round_trips() {
        // date -u -d @1796407200 +%FT%TZ: 2026-12-04T18:00:00Z
        let t = to_system_time((2026, 12, 4), (18, 0, 0, 0), 0).unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_796_407_200));
        assert_eq!(format(t), "2026-12-04T18:00:00Z");
        // +02:00 is two hours earlier in UTC.
        let t2 = to_system_time((2026, 12, 4), (20, 0, 0, 0), 120).unwrap();
        assert_eq!(t2, t);
        // Leap day, year ends, the epoch.
        for secs in [
            0u64,
            951_782_400,
            1_709_164_800,
            1_798_761_599,
            4_102_444_800,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let text = format(t);
            let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
            let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
            let h: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
            assert_eq!(
                to_system_time((d[0], d[1], d[2]), (h[0], h[1], h[2], 0), 0),
                Some(t),
                "{text}"
            );
        }
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(to_system_time((1969, 12, 31), (23, 59, 59, 0), 0), None);
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_millis(1_709_251_199_123_000_000),
            "2024-02-29T23:59:59.123Z"
        );
    }
}
