//! The hidden child modes: each does what the real binary's `main` does with the
//! library, except that it binds 127.0.0.1:0 and announces the address it got as the
//! first line of stdout (`LISTENING 127.0.0.1:40123`). It stops on SIGTERM, on ctrl-c
//! or when its stdin closes.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `bench __sandbox`: the simulated kintone and helpdesk with the default secrets.
pub async fn sandbox() -> anyhow::Result<()> {
    init_logs();
    let stop = stop_on_signal()?;
    let listener = bind_and_announce().await?;
    sandbox::Sandbox::serve(listener, sandbox::SandboxConfig::default(), async move {
        stop.cancelled().await
    })
    .await
}

/// `bench __ingest`: ingest with settings and rules from the environment.
pub async fn ingest() -> anyhow::Result<()> {
    init_logs();
    let stop = stop_on_signal()?;
    let settings = config::Settings::from_env()?;
    let rules = config::load_rules(&settings.rules_path)?;
    let ingest = ingest::Ingest::new(&settings, rules)?;
    let listener = bind_and_announce().await?;
    ingest.run(listener, stop).await.context("Failed to serve")
}

/// `bench __worker`: a worker with settings and rules from the environment; the
/// announced address is its admin API.
pub async fn worker() -> anyhow::Result<()> {
    init_logs();
    let stop = stop_on_signal()?;
    let settings = config::Settings::from_env()?;
    let rules = config::load_rules(&settings.rules_path)?;
    let worker = worker::Worker::new(settings, rules)?;
    let admin = bind_and_announce().await?;
    worker.run(Some(admin), stop).await
}

/// Logs go to stderr (stdout carries the address), filtered by `RUST_LOG`. When
/// `RECORDSYNC_BENCH_STATEMENTS_FILE` is set, every SQL statement the process sends
/// that sqlx reports is counted (`COMMIT` among them; sqlx reports no `BEGIN`, and no
/// pool ping, so round trips are more than statements), and the count is written to
/// that file every 100 ms.
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};

    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    let statements = std::env::var("RECORDSYNC_BENCH_STATEMENTS_FILE")
        .ok()
        .map(|path| {
            let count = Arc::new(AtomicU64::new(0));
            let written = Arc::clone(&count);
            std::thread::spawn(move || {
                loop {
                    let _ = std::fs::write(&path, written.load(Ordering::Relaxed).to_string());
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            Statements(count).with_filter(
                filter::Targets::new().with_target("sqlx::query", filter::LevelFilter::TRACE),
            )
        });
    tracing_subscriber::registry()
        .with(fmt)
        .with(statements)
        .init();
}

/// Counts sqlx's per-statement events.
struct Statements(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn bind_and_announce() -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("Failed to bind 127.0.0.1:0")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTENING {}", listener.local_addr()?)?;
    out.flush()?;
    Ok(listener)
}

/// A token cancelled on SIGTERM, on ctrl-c, or when stdin closes (the parent holds
/// its end, so a parent that dies even by SIGKILL does not leave us running). The
/// signal handlers are installed before it returns, so a SIGTERM right after the
/// announcement is not lost.
fn stop_on_signal() -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let stop = token.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("Failed to install the SIGTERM handler")?;
    let ctrl_c = tokio::signal::ctrl_c();
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
            _ = closed => {}
        }
        stop.cancel();
    });
    Ok(token)
}
