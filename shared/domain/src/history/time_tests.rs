//! Times rendered in a person's time zone, and an unknown zone named.

use super::*;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[test]
fn times_render_in_the_zone_with_its_offset_at_that_moment() {
    let tokyo = time_zone("Asia/Tokyo").unwrap();
    assert_eq!(
        local_time(at("2026-11-30T12:31:45.987Z"), tokyo),
        "2026-11-30T21:31:45+09:00"
    );
    let utc = time_zone("UTC").unwrap();
    assert_eq!(
        local_time(at("2026-11-30T12:31:45Z"), utc),
        "2026-11-30T12:31:45Z"
    );
    // Berlin's offset follows daylight saving time: +01:00 in winter, +02:00 in summer.
    let berlin = time_zone(" Europe/Berlin ").unwrap();
    assert_eq!(
        local_time(at("2026-01-15T12:00:00Z"), berlin),
        "2026-01-15T13:00:00+01:00"
    );
    assert_eq!(
        local_time(at("2026-07-15T12:00:00Z"), berlin),
        "2026-07-15T14:00:00+02:00"
    );
    // Crossing midnight changes the date.
    assert_eq!(
        local_time(at("2026-11-30T15:00:00Z"), tokyo),
        "2026-12-01T00:00:00+09:00"
    );
}

#[test]
fn an_unknown_zone_is_named() {
    let e = time_zone("Mars/Olympus").unwrap_err();
    assert!(
        e.contains("\"Mars/Olympus\" is not an IANA time zone"),
        "{e}"
    );
    assert!(time_zone("").is_err());
}
