//! Where the CPU time goes: per-process CPU time from `/proc/<pid>/stat`, grouped (our
//! children, RabbitMQ, PostgreSQL, the bench itself), and how busy the machine was
//! from `/proc/stat`.

use std::time::{Duration, Instant};

use crate::stats::thousands;

/// `/proc` counts CPU time in clock ticks of 1/100 s (USER_HZ, fixed by the ABI).
const TICKS_PER_S: f64 = 100.0;

/// Which processes make up a group.
#[derive(Debug, Clone)]
pub enum Members {
    /// These process ids.
    Pids(Vec<u32>),
    /// Every process whose command name is this (e.g. `beam.smp`).
    Command(&'static str),
    /// PostgreSQL's background processes and its backends serving this database; the
    /// backends of other databases (other test runs) are left out.
    Postgres {
        /// The database name.
        database: String,
        /// Backends counted elsewhere (the bench's own reader).
        except: Vec<u32>,
    },
}

/// A named group of processes.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name in the report.
    pub name: &'static str,
    /// Its processes.
    pub members: Members,
}

/// CPU counters at one moment.
pub struct Snapshot {
    at: Instant,
    ticks: Vec<u64>,
    machine_busy: u64,
}

/// Takes snapshots of a set of groups.
pub struct Watch {
    groups: Vec<Group>,
}

impl Watch {
    /// Watches `groups`.
    pub fn new(groups: Vec<Group>) -> Watch {
        Watch { groups }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let processes = processes();
        let ticks = self
            .groups
            .iter()
            .map(|g| {
                processes
                    .iter()
                    .filter(|p| g.members.contains(p))
                    .map(|p| p.ticks)
                    .sum()
            })
            .collect();
        Snapshot {
            at: Instant::now(),
            ticks,
            machine_busy: machine_busy_ticks().unwrap_or(0),
        }
    }

    /// The CPU time group `index` used between two snapshots.
    pub fn seconds(&self, index: usize, before: &Snapshot, after: &Snapshot) -> Duration {
        let ticks = after.ticks[index].saturating_sub(before.ticks[index]);
        Duration::from_secs_f64(ticks as f64 / TICKS_PER_S)
    }

    /// A line saying how much CPU each group used per operation between two
    /// snapshots, and how many cores the whole machine kept busy meanwhile.
    pub fn describe(
        &self,
        unit: &str,
        what: &str,
        ops: usize,
        before: &Snapshot,
        after: &Snapshot,
    ) -> String {
        let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let per_op = |ticks: u64| ticks as f64 / TICKS_PER_S / ops.max(1) as f64;
        let mut parts: Vec<(f64, &str)> = self
            .groups
            .iter()
            .zip(before.ticks.iter().zip(&after.ticks))
            .map(|(g, (b, a))| (per_op(a.saturating_sub(*b)), g.name))
            .collect();
        parts.sort_by(|x, y| y.0.total_cmp(&x.0));
        let total: f64 = parts.iter().map(|(s, _)| s).sum();
        let busy =
            after.machine_busy.saturating_sub(before.machine_busy) as f64 / TICKS_PER_S / seconds;
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        format!(
            "CPU per {unit}, {what} ({} in {seconds:.1} s, machine {busy:.1} of {cores} cores busy): {} — total {}",
            thousands(ops as u64),
            parts
                .iter()
                .map(|(s, name)| format!("{name} {}", micros(*s)))
                .collect::<Vec<_>>()
                .join(", "),
            micros(total),
        )
    }
}

fn micros(seconds: f64) -> String {
    format!("{:.0} µs", seconds * 1e6)
}

impl Members {
    fn contains(&self, p: &Process) -> bool {
        match self {
            Members::Pids(pids) => pids.contains(&p.pid),
            Members::Command(name) => p.command == *name,
            Members::Postgres { database, except } => {
                // A client backend's title is `postgres: user db host(port) state`;
                // background processes carry no client address.
                p.command == "postgres"
                    && !except.contains(&p.pid)
                    && (p.title.contains(database.as_str()) || !p.title.contains('('))
            }
        }
    }
}

struct Process {
    pid: u32,
    command: String,
    title: String,
    ticks: u64,
}

/// Every process we may read, with its user + system CPU ticks.
fn processes() -> Vec<Process> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (command, ticks) = parse_stat(&stat)?;
        let title = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        Some(Process {
            pid,
            command,
            title,
            ticks,
        })
    })
    .collect()
}

/// The command name and utime + stime of a `/proc/<pid>/stat` line. The name is in
/// parentheses and may itself contain spaces or parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (field 3) … utime (field 14), stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((command, utime + stime))
}

/// Busy ticks of all CPUs together (everything but idle and iowait).
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?)
}

fn parse_machine_busy(cpu_line: &str) -> Option<u64> {
    let values: Vec<u64> = cpu_line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = values.iter().take(8).enumerate();
    Some(
        busy.filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 4 0 123 4096 100 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(("my (odd) cmd".to_owned(), 325)));
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let line = "cpu  100 10 50 1000 20 5 5 1 0 0";
        assert_eq!(parse_machine_busy(line), Some(100 + 10 + 50 + 5 + 5 + 1));
    }

    #[test]
    fn postgres_members() {
        let pg = Members::Postgres {
            database: "rs_test_a".into(),
            except: vec![7],
        };
        let p = |title: &str| Process {
            pid: 1,
            command: "postgres".into(),
            title: title.into(),
            ticks: 0,
        };
        assert!(pg.contains(&p("postgres: walwriter ")));
        assert!(pg.contains(&p("postgres: postgres rs_test_a 127.0.0.1(5000) idle")));
        assert!(!pg.contains(&p("postgres: postgres rs_test_b 127.0.0.1(5001) idle")));
        let watcher = Process {
            pid: 7,
            ..p("postgres: postgres rs_test_a 127.0.0.1(5002) idle")
        };
        assert!(!pg.contains(&watcher), "a backend counted elsewhere");
    }

    #[test]
    fn sees_itself() {
        let watch = Watch::new(vec![Group {
            name: "bench",
            members: Members::Pids(vec![std::process::id()]),
        }]);
        let before = watch.snapshot();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = watch.snapshot();
        assert!(after.ticks[0] >= before.ticks[0]);
        assert!(
            watch
                .describe("loop", "test", 1, &before, &after)
                .contains("bench")
        );
    }
}
