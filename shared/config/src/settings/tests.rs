//! The settings' layers, checks and listing.

use super::*;
use std::collections::HashMap;

#[test]
fn settings_defaults_and_overrides() {
    let s = Settings::from_lookup(|_| None).unwrap();
    assert_eq!(s, Settings::default());
    let env: HashMap<&str, &str> = [
        ("RECORDSYNC_QUEUE_PREFIX", "t-1"),
        ("RECORDSYNC_PREFETCH", "4"),
        ("RECORDSYNC_RETRY_DELAYS_MS", "10, 20"),
        ("RECORDSYNC_TIME_ZONE", "Asia/Tokyo"),
    ]
    .into();
    let s = Settings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(s.queue_prefix, "t-1");
    assert_eq!(s.prefetch, 4);
    assert_eq!(s.retry_delays_ms, vec![10, 20]);
    assert_eq!(s.time_zone, chrono_tz::Tz::Asia__Tokyo);
    assert_eq!(Settings::default().time_zone, chrono_tz::Tz::UTC);
    assert_eq!(s.retry_delay(2).as_millis(), 10);
    assert_eq!(s.retry_delay(3).as_millis(), 20);
    assert_eq!(s.retry_delay(9).as_millis(), 20);
    let e = Settings::from_lookup(|k| (k == "RECORDSYNC_PREFETCH").then(|| "many".to_string()))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "RECORDSYNC_PREFETCH=\"many\": not a valid number"
    );
    let e = Settings::from_lookup(|k| (k == "RECORDSYNC_QUEUE_PREFIX").then(|| "a b".to_string()))
        .unwrap_err();
    assert!(e.to_string().starts_with("RECORDSYNC_QUEUE_PREFIX=\"a b\""));
    let two = "amqp://a:b@node1:5672/%2f, amqp://a:b@node2:5672/%2f";
    let s =
        Settings::from_lookup(|k| (k == "RECORDSYNC_AMQP_URL").then(|| two.to_string())).unwrap();
    assert_eq!(s.amqp_url, two);
    let e = Settings::from_lookup(|k| {
        (k == "RECORDSYNC_AMQP_URL").then(|| "http://x:secret@h".to_string())
    })
    .unwrap_err();
    assert!(
        e.to_string().starts_with("RECORDSYNC_AMQP_URL=\"(hidden"),
        "{e}"
    );
    assert!(!e.to_string().contains("secret"));
    let e = Settings::from_lookup(|k| (k == "RECORDSYNC_TIME_ZONE").then(|| "JST".to_string()))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "RECORDSYNC_TIME_ZONE=\"JST\": \"JST\" is not an IANA time zone (e.g. UTC, Asia/Tokyo, Europe/Berlin)"
    );
}

#[test]
fn settings_come_in_layers_default_then_file_then_environment() {
    let file = "# recordsync settings\n\nRECORDSYNC_PREFETCH=32\nexport RECORDSYNC_QUEUE_PREFIX=\"from-file\"\nRECORDSYNC_AMQP_URL='amqp://u:hunter2@mq:5672/%2f'\n";
    let env: HashMap<&str, &str> = [("RECORDSYNC_PREFETCH", "8")].into();
    let loaded = Settings::layered(Some(("/etc/recordsync.env", file)), |k| {
        env.get(k).map(|v| v.to_string())
    })
    .unwrap();
    assert_eq!(loaded.settings.prefetch, 8, "the environment wins");
    assert_eq!(loaded.settings.queue_prefix, "from-file");
    assert_eq!(loaded.settings.amqp_url, "amqp://u:hunter2@mq:5672/%2f");
    let shown = |var: &str| loaded.shown.iter().find(|s| s.var == var).cloned().unwrap();
    assert_eq!(shown("RECORDSYNC_PREFETCH").source, Source::Env);
    assert_eq!(shown("RECORDSYNC_PREFETCH").value, "8");
    assert_eq!(
        shown("RECORDSYNC_QUEUE_PREFIX").source,
        Source::File {
            path: "/etc/recordsync.env".into(),
            line: 4
        }
    );
    assert_eq!(shown("RECORDSYNC_MAX_ATTEMPTS").source, Source::Default);
    assert_eq!(shown("RECORDSYNC_MAX_ATTEMPTS").value, "6");
    // A password is never shown.
    assert_eq!(
        shown("RECORDSYNC_AMQP_URL").value,
        "amqp://u:***@mq:5672/%2f"
    );
    assert!(loaded.shown.iter().all(|s| !s.value.contains("hunter2")));
    assert_eq!(loaded.shown.len(), FIELDS.len());
}

#[test]
fn a_bad_settings_file_names_its_line_and_the_variable() {
    let layered = |text: &str| {
        Settings::layered(Some(("s.env", text)), |_| None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        layered("RECORDSYNC_PREFETCH=4\nRECORDSYNC_LEASE_TTL_MS=100\n"),
        "RECORDSYNC_LEASE_TTL_MS (s.env:2)=\"100\": must be at least 300 (it is renewed every third of it)"
    );
    let typo = layered("RECORDSYNC_PREFECTH=4\n");
    assert!(
        typo.starts_with("RECORDSYNC_PREFECTH (s.env:1)=\"4\": not a setting; the settings are RECORDSYNC_AMQP_URL, "),
        "{typo}"
    );
    assert!(typo.contains("RECORDSYNC_PREFETCH"), "{typo}");
    // Admin access stays in the environment, with its secrets; the token is not echoed.
    let token = layered("RECORDSYNC_ADMIN_TOKENS=ops:admin:s3cret\n");
    assert!(
        token.starts_with("RECORDSYNC_ADMIN_TOKENS (s.env:1)=\"(hidden)\": admin access is read from the environment only"),
        "{token}"
    );
    assert!(!token.contains("s3cret"));
    assert_eq!(
        layered("\n# fine\nPREFETCH 4\n"),
        "s.env:3=\"PREFETCH 4\": not a NAME=value line"
    );
    // A URL's value is hidden in the error too.
    let url = layered("RECORDSYNC_AMQP_URL=http://u:hunter2@mq\n");
    assert!(
        url.starts_with("RECORDSYNC_AMQP_URL (s.env:1)=\"(hidden"),
        "{url}"
    );
    assert!(!url.contains("hunter2"));
    // The environment's value is checked as strictly, after the file's.
    let e = Settings::layered(Some(("s.env", "RECORDSYNC_PREFETCH=4\n")), |k| {
        (k == "RECORDSYNC_PREFETCH").then(|| "0".to_string())
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "RECORDSYNC_PREFETCH=\"0\": must be at least 1"
    );
    // A file that cannot be read is named by the variable that named it.
    let e = Settings::from_lookup(|k| {
        (k == SETTINGS_FILE_VAR).then(|| "/nonexistent/recordsync.env".to_string())
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("RECORDSYNC_SETTINGS=\"/nonexistent/recordsync.env\": cannot be read: "),
        "{e}"
    );
}

#[test]
fn each_setting_is_declared_once_and_sets_only_what_it_shows() {
    let names: std::collections::HashSet<&str> = FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(names.len(), FIELDS.len(), "a name declared twice");
    // A value unlike the default for every setting.
    let other: HashMap<&str, &str> = [
        ("AMQP_URL", "amqp://a:b@other:5672/%2f"),
        ("DATABASE_URL", "postgres://a:b@other/db"),
        ("QUEUE_PREFIX", "other"),
        ("RULES", "other.json"),
        ("INGEST_LISTEN", "0.0.0.0:1"),
        ("ADMIN_LISTEN", "0.0.0.0:2"),
        ("MAX_BODY_BYTES", "3"),
        ("PREFETCH", "4"),
        ("RETRY_DELAYS_MS", "5,6"),
        ("MAX_ATTEMPTS", "7"),
        ("DB_MAX_CONNECTIONS", "9"),
        ("LEASE_TTL_MS", "1000"),
        ("IN_DOUBT_SETTLE_MS", "11"),
        ("PUBLISH_TIMEOUT_MS", "12"),
        ("LEDGER_ROLLUP_MS", "1300"),
        ("RETAIN_EVENTS_SECS", "14"),
        ("RETAIN_OPERATIONS_SECS", "15"),
        ("PRUNE_EVERY_MS", "1600"),
        ("TIME_ZONE", "Asia/Tokyo"),
    ]
    .into();
    assert_eq!(other.len(), FIELDS.len(), "a setting without a value here");
    let defaults = Settings::default();
    let base = Settings::from_lookup(|k| {
        other
            .get(k.strip_prefix("RECORDSYNC_")?)
            .map(|v| v.to_string())
    })
    .unwrap();
    let shown = |s: &Settings| -> Vec<String> { FIELDS.iter().map(|f| (f.show)(s)).collect() };
    for (i, f) in FIELDS.iter().enumerate() {
        assert_ne!((f.show)(&base), (f.show)(&defaults), "{}", f.name);
        // Setting one field back to its default changes that field, and only it.
        let mut s = base.clone();
        (f.set)(&mut s, &(f.show)(&defaults).replace("***", "guest")).unwrap();
        let mut want = shown(&base);
        want[i] = (f.show)(&defaults);
        assert_eq!(shown(&s), want, "{}", f.name);
    }
}
