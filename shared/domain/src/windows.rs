//! Write windows: the times a target accepts writes. A window has days, a start and an
//! end in a time zone; an end at or before the start means the window crosses
//! midnight and ends the next day. The days name the day a window starts.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When a target accepts writes. Outside every window, writes are parked durably,
/// coalesced per record, and flushed in bulk when a window opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteWindows {
    /// An IANA time zone, e.g. `Asia/Tokyo`.
    pub time_zone: String,
    /// The windows; writes are allowed inside any of them.
    pub windows: Vec<Window>,
}

/// One recurring window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The days it starts on: `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Start, `HH:MM` or `HH:MM:SS`, local time.
    pub from: String,
    /// End, `HH:MM` or `HH:MM:SS`, local time; at or before `from`, it is the next day.
    pub to: String,
}

/// Why windows could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    /// Where, relative to the windows object, e.g. `windows[0].from`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

fn parse_day(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

impl WriteWindows {
    /// Every problem, each at its path.
    pub fn problems(&self) -> Vec<WindowError> {
        let mut out = vec![];
        if self.time_zone.parse::<Tz>().is_err() {
            out.push(WindowError {
                path: "time_zone".into(),
                message: format!(
                    "\"{}\" is not an IANA time zone (e.g. Asia/Tokyo)",
                    self.time_zone
                ),
            });
        }
        if self.windows.is_empty() {
            out.push(WindowError {
                path: "windows".into(),
                message: "name at least one window (leave write_windows out to write at any time)"
                    .into(),
            });
        }
        for (i, w) in self.windows.iter().enumerate() {
            for (k, v) in [("from", &w.from), ("to", &w.to)] {
                if parse_time(v).is_none() {
                    out.push(WindowError {
                        path: format!("windows[{i}].{k}"),
                        message: format!("\"{v}\" is not HH:MM or HH:MM:SS"),
                    });
                }
            }
            for (j, d) in w.days.iter().enumerate() {
                if parse_day(d).is_none() {
                    out.push(WindowError {
                        path: format!("windows[{i}].days[{j}]"),
                        message: format!("\"{d}\" is not one of mon, tue, wed, thu, fri, sat, sun"),
                    });
                }
            }
        }
        out
    }

    /// Whether writes are allowed at `now`. Windows that do not parse are never open
    /// (configuration validation refuses them before this is asked).
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let Ok(tz) = self.time_zone.parse::<Tz>() else {
            return false;
        };
        let local = now.with_timezone(&tz);
        // A window that started yesterday may still be open today.
        for start_day in [local.date_naive() - Duration::days(1), local.date_naive()] {
            for w in &self.windows {
                let (Some(from), Some(to)) = (parse_time(&w.from), parse_time(&w.to)) else {
                    continue;
                };
                let days: Vec<Weekday> = w.days.iter().filter_map(|d| parse_day(d)).collect();
                if !days.is_empty() && !days.contains(&start_day.weekday()) {
                    continue;
                }
                let end_day = if to <= from {
                    start_day + Duration::days(1)
                } else {
                    start_day
                };
                // Around a DST change a local time may not exist; such a bound is skipped.
                let (Some(start), Some(end)) = (
                    tz.from_local_datetime(&start_day.and_time(from)).earliest(),
                    tz.from_local_datetime(&end_day.and_time(to)).earliest(),
                ) else {
                    continue;
                };
                if start <= local && local < end {
                    return true;
                }
            }
        }
        false
    }

    /// [`WriteWindows::next_open`] in words: local time with its zone, then UTC, e.g.
    /// `2026-11-27 22:00 JST (2026-11-27T13:00:00Z)`.
    pub fn next_open_text(&self, now: DateTime<Utc>) -> Option<String> {
        let at = self.next_open(now)?;
        let tz = self.time_zone.parse::<Tz>().ok()?;
        Some(format!(
            "{} ({})",
            at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ))
    }

    /// When the next window opens after `now` (within a week), or `None` when none
    /// does (windows that do not parse). What a parked record waits for.
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.time_zone.parse::<Tz>().ok()?;
        let today = now.with_timezone(&tz).date_naive();
        let mut next: Option<DateTime<Utc>> = None;
        for offset in 0..=7 {
            let day = today + Duration::days(offset);
            for w in &self.windows {
                let Some(from) = parse_time(&w.from) else {
                    continue;
                };
                let days: Vec<Weekday> = w.days.iter().filter_map(|d| parse_day(d)).collect();
                if !days.is_empty() && !days.contains(&day.weekday()) {
                    continue;
                }
                let Some(start) = tz.from_local_datetime(&day.and_time(from)).earliest() else {
                    continue;
                };
                let start = start.with_timezone(&Utc);
                if start > now && next.is_none_or(|n| start < n) {
                    next = Some(start);
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_window_opens_at_its_next_start_in_its_time_zone() {
        // 22:00–02:00 Tokyo, weekdays: on Friday 2026-11-27 at 03:00 Tokyo (Thu 18:00
        // UTC), the next opens Friday 22:00 Tokyo (13:00 UTC).
        let w = ww(
            "Asia/Tokyo",
            &[(&["mon", "tue", "wed", "thu", "fri"], "22:00", "02:00")],
        );
        assert_eq!(
            w.next_open(at("2026-11-26T18:00:00Z")),
            Some(at("2026-11-27T13:00:00Z"))
        );
        // On Saturday night, none opens before Monday 22:00 Tokyo.
        assert_eq!(
            w.next_open(at("2026-11-28T14:00:00Z")),
            Some(at("2026-11-30T13:00:00Z"))
        );
        // Two windows: the earlier start wins.
        let two = ww("UTC", &[(&[], "18:00", "19:00"), (&[], "06:00", "07:00")]);
        assert_eq!(
            two.next_open(at("2026-11-26T05:00:00Z")),
            Some(at("2026-11-26T06:00:00Z"))
        );
        assert_eq!(
            two.next_open(at("2026-11-26T06:30:00Z")),
            Some(at("2026-11-26T18:00:00Z"))
        );
        assert_eq!(
            w.next_open_text(at("2026-11-26T18:00:00Z")).as_deref(),
            Some("2026-11-27 22:00 JST (2026-11-27T13:00:00Z)")
        );
        assert_eq!(
            ww("Nowhere/Land", &[(&[], "06:00", "07:00")]).next_open(at("2026-11-26T05:00:00Z")),
            None
        );
    }

    #[test]
    fn each_day_of_the_week_is_its_own_window() {
        // 2026-11-23 is a Monday; each one-day window opens on its day at 06:00 UTC.
        for (i, day) in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .into_iter()
            .enumerate()
        {
            let w = ww("UTC", &[(&[day], "06:00", "07:00")]);
            assert!(w.problems().is_empty(), "{day}");
            let opens = at("2026-11-23T06:00:00Z") + Duration::days(i as i64);
            assert_eq!(
                w.next_open(at("2026-11-23T00:00:00Z")),
                Some(opens),
                "{day}"
            );
            assert!(w.is_open(opens + Duration::minutes(30)), "{day}");
            assert!(
                !w.is_open(opens + Duration::days(1) + Duration::minutes(30)),
                "{day}"
            );
            // Written in capitals too.
            let upper = ww("UTC", &[(&[&day.to_uppercase()], "06:00", "07:00")]);
            assert!(upper.problems().is_empty(), "{day}");
        }
        assert_eq!(
            ww("UTC", &[(&["tues"], "06:00", "07:00")]).problems().len(),
            1
        );
    }

    #[test]
    fn a_window_opening_now_opens_next_on_its_next_day() {
        let w = ww("UTC", &[(&[], "06:00", "07:00")]);
        assert_eq!(
            w.next_open(at("2026-11-26T06:00:00Z")),
            Some(at("2026-11-27T06:00:00Z"))
        );
        assert_eq!(
            w.next_open(at("2026-11-26T05:59:59Z")),
            Some(at("2026-11-26T06:00:00Z"))
        );
    }

    fn ww(tz: &str, windows: &[(&[&str], &str, &str)]) -> WriteWindows {
        WriteWindows {
            time_zone: tz.into(),
            windows: windows
                .iter()
                .map(|(d, f, t)| Window {
                    days: d.iter().map(|s| s.to_string()).collect(),
                    from: f.to_string(),
                    to: t.to_string(),
                })
                .collect(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_daytime_window_in_a_time_zone() {
        // 09:00–17:00 in Tokyo (UTC+9) is 00:00–08:00 UTC.
        let w = ww("Asia/Tokyo", &[(&[], "09:00", "17:00")]);
        assert!(!w.is_open(at("2026-11-22T23:59:59Z")));
        assert!(w.is_open(at("2026-11-23T00:00:00Z")));
        assert!(w.is_open(at("2026-11-23T07:59:59Z")));
        assert!(!w.is_open(at("2026-11-23T08:00:00Z")));
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_its_start_day() {
        // Fridays 22:00 to Saturday 06:00, UTC. 2026-11-20 is a Friday.
        let w = ww("UTC", &[(&["fri"], "22:00", "06:00")]);
        assert!(!w.is_open(at("2026-11-20T21:59:00Z")));
        assert!(w.is_open(at("2026-11-20T22:00:00Z")));
        assert!(w.is_open(at("2026-11-21T05:59:59Z")));
        assert!(!w.is_open(at("2026-11-21T06:00:00Z")));
        // Saturday night is not Friday night.
        assert!(!w.is_open(at("2026-11-21T23:00:00Z")));
        // Thursday 23:00 is not in it either.
        assert!(!w.is_open(at("2026-11-19T23:00:00Z")));
    }

    #[test]
    fn daylight_saving_is_respected() {
        // 01:00–02:00 New York time: UTC-4 in July, UTC-5 in December.
        let w = ww("America/New_York", &[(&[], "01:00", "02:00")]);
        assert!(w.is_open(at("2026-07-01T05:30:00Z")));
        assert!(!w.is_open(at("2026-12-01T05:30:00Z")));
        assert!(w.is_open(at("2026-12-01T06:30:00Z")));
    }

    #[test]
    fn seconds_and_several_windows() {
        let w = ww(
            "UTC",
            &[
                (&["mon"], "08:00:30", "08:00:40"),
                (&["sun"], "10:00", "11:00"),
            ],
        );
        // 2026-11-23 is a Monday, 2026-11-22 a Sunday.
        assert!(w.is_open(at("2026-11-23T08:00:35Z")));
        assert!(!w.is_open(at("2026-11-23T08:00:41Z")));
        assert!(w.is_open(at("2026-11-22T10:30:00Z")));
    }

    #[test]
    fn problems_name_their_paths() {
        let w = ww("Mars/Olympus", &[(&["funday"], "25:00", "10:00")]);
        let p: Vec<String> = w.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            vec![
                "time_zone: \"Mars/Olympus\" is not an IANA time zone (e.g. Asia/Tokyo)",
                "windows[0].from: \"25:00\" is not HH:MM or HH:MM:SS",
                "windows[0].days[0]: \"funday\" is not one of mon, tue, wed, thu, fri, sat, sun",
            ]
        );
        assert!(!w.is_open(Utc::now()));
    }
}
