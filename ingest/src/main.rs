//! The `ingest` binary: settings and rules from the environment, then serve.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(env_filter())
        .init();
    let traces = config::telemetry::init_traces("recordsync-ingest").map_err(anyhow::Error::msg)?;
    let settings = config::Settings::from_env()?;
    let rules = config::load_rules(&settings.rules_path)?;
    let limits = ingest::IntakeLimits::from_env(settings.max_body_bytes)?;
    let ingest = ingest::Ingest::new(&settings, rules)?.with_limits(limits);
    let listener = tokio::net::TcpListener::bind(&settings.ingest_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", settings.ingest_listen))?;
    tracing::info!(listen = %settings.ingest_listen, limits = ?ingest.limits(), "ingest listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let served = ingest.run(listener, shutdown).await;
    // What is still batched goes out before the process ends.
    let _ = traces.shutdown();
    served.context("Failed to serve")?;
    Ok(())
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: finishing requests in flight");
    shutdown.cancel();
}
