//! Slow uploads against ingest: many unauthenticated clients each dribble a 1 MiB body.
//! Ingest holds at most its body budget of such bytes at once and refuses the rest
//! (503), so its memory grows by about the budget, not by what the clients send.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::Row;
use crate::stats::megabytes;

/// Clients at once.
pub const CLIENTS: usize = 250;
/// Each client's declared body.
pub const BODY_BYTES: usize = 1024 * 1024;
/// Each client sends its body in chunks of this size ...
const CHUNK: usize = 64 * 1024;
/// ... one per this interval (1 MiB in about 1.6 s, under ingest's body timeout).
const EVERY: Duration = Duration::from_millis(100);
/// Ingest's default body budget (`RECORDSYNC_INGEST_BODY_BUDGET_BYTES`).
const BUDGET_BYTES: u64 = 64 * 1024 * 1024;
/// What ingest may take beyond the budget: connection buffers and bookkeeping.
const SLACK_KIB: u64 = 32 * 1024;

/// What the phase measured.
pub struct Figures {
    /// Ingest's RSS before the uploads, in KiB.
    pub before_kib: u64,
    /// Its highest RSS sampled during them.
    pub peak_kib: u64,
    /// Its RSS two seconds after the last client finished.
    pub after_kib: u64,
    /// Answers by status code (0: the connection closed without one).
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// How long the phase took.
    pub took: Duration,
}

impl Figures {
    /// The report rows.
    pub fn rows(&self) -> Vec<Row> {
        let scenario = format!("ingest, {CLIENTS} slow 1 MiB uploads");
        let growth = self.peak_kib.saturating_sub(self.before_kib);
        let ceiling_kib = BUDGET_BYTES / 1024 + SLACK_KIB;
        let answers = self
            .statuses
            .iter()
            .map(|(code, n)| {
                format!(
                    "{n}× {}",
                    if *code == 0 {
                        "closed".to_owned()
                    } else {
                        code.to_string()
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            Row::plain(
                &scenario,
                "RSS growth at peak",
                format!("{:.1} MB", megabytes(growth)),
            )
            .ceiling(
                format!("{:.1} MB body budget", megabytes(BUDGET_BYTES / 1024)),
                format!(
                    "{:.0}%",
                    100.0 * growth as f64 / (BUDGET_BYTES / 1024) as f64
                ),
            )
            .target(
                &format!("≤ budget + {:.0} MB", megabytes(SLACK_KIB)),
                growth <= ceiling_kib,
            ),
            Row::plain(
                &scenario,
                "RSS before / peak / 2 s after",
                format!(
                    "{:.1} / {:.1} / {:.1} MB",
                    megabytes(self.before_kib),
                    megabytes(self.peak_kib),
                    megabytes(self.after_kib)
                ),
            ),
            Row::plain(
                &scenario,
                "answers",
                format!("{answers} in {:.1} s", self.took.as_secs_f64()),
            ),
        ]
    }
}

/// The `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/{pid}/status"))
}

/// Runs the clients against ingest at `addr` (process `pid`).
pub async fn run(addr: std::net::SocketAddr, pid: u32) -> anyhow::Result<Figures> {
    eprintln!("ingest: {CLIENTS} clients each sending a 1 MiB body slowly");
    let before_kib = rss_kib(pid)?;
    let started = Instant::now();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(upload(addr, i)))
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients {
        *statuses.entry(c.await??).or_insert(0) += 1;
    }
    let took = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.await?.max(before_kib);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Figures {
        before_kib,
        peak_kib,
        after_kib: rss_kib(pid)?,
        statuses,
        took,
    })
}

/// One client: a signed-looking request whose body arrives slowly; returns the status
/// ingest answered (0 when it closed the connection without an answer).
async fn upload(addr: std::net::SocketAddr, i: usize) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "POST /webhooks/helpdesk HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\nwebhook-id: slow-{i}\r\nwebhook-timestamp: {}\r\nwebhook-signature: v1,AAAA\r\nConnection: close\r\n\r\n",
        chrono::Utc::now().timestamp()
    );
    s.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; CHUNK];
    let mut sent = 0;
    while sent < BODY_BYTES {
        // Ingest answers and closes early when it refuses: the write then fails.
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        sent += CHUNK;
        tokio::time::sleep(EVERY).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    Ok(text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}
