//! The worker binary reads its settings in layers (defaults, the file named by
//! `RECORDSYNC_SETTINGS`, the environment) once at start, and names the variable and
//! the file's line of a bad value before it does anything else.

use std::process::{Command, Output};

fn worker(args: &[&str], file: &str, env: &[(&str, &str)]) -> Output {
    let dir = std::env::temp_dir().join(format!(
        "rs-settings-{}-{}",
        std::process::id(),
        args.join("-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("recordsync.env");
    std::fs::write(&path, file).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .env("RECORDSYNC_SETTINGS", &path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the worker binary runs");
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn settings_lists_each_value_and_where_it_came_from() {
    let out = worker(
        &["settings"],
        "# ours\nRECORDSYNC_PREFETCH=16\nRECORDSYNC_AMQP_URL=amqp://u:hunter2@mq:5672/%2f\nRECORDSYNC_MAX_ATTEMPTS=4\n",
        &[("RECORDSYNC_MAX_ATTEMPTS", "3")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |var: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(var))
            .unwrap_or_else(|| panic!("no {var} in:\n{stdout}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(line("RECORDSYNC_PREFETCH").starts_with("16 ("), "{stdout}");
    assert!(
        line("RECORDSYNC_PREFETCH").ends_with("recordsync.env:2)"),
        "{stdout}"
    );
    assert_eq!(line("RECORDSYNC_MAX_ATTEMPTS"), "3 (environment)");
    assert_eq!(line("RECORDSYNC_LEASE_TTL_MS"), "30000 (default)");
    assert!(line("RECORDSYNC_AMQP_URL").starts_with("amqp://u:***@mq:5672/%2f ("));
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn a_bad_setting_stops_the_worker_at_start_naming_the_variable_and_line() {
    // `run` (no command) reads the settings before it connects to anything.
    let out = worker(
        &[],
        "RECORDSYNC_PREFETCH=8\nRECORDSYNC_LEASE_TTL_MS=100\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started:\n{stderr}");
    assert!(
        stderr.contains("RECORDSYNC_LEASE_TTL_MS (")
            && stderr.contains("recordsync.env:2)=\"100\": must be at least 300"),
        "{stderr}"
    );
    // A misspelt name in the file is refused, not ignored.
    let out = worker(&["settings"], "RECORDSYNC_PREFECTH=8\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("RECORDSYNC_PREFECTH (") && stderr.contains("not a setting"),
        "{stderr}"
    );
}
