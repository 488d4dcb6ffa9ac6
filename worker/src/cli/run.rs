//! The `run` command (the default): the worker consumes and processes events and serves
//! its admin API until SIGINT or SIGTERM, then finishes what is in flight.

use super::Context;
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// `run`: logs as JSON, traces exported, the rules and their secrets checked and the
/// admin listener refused before anything is consumed if it would be open without
/// tokens.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let traces = config::telemetry::init_traces("recordsync-worker").map_err(anyhow::Error::msg)?;
    let settings = ctx.settings()?;
    ctx.use_rules(worker::check_config(&settings.rules_path)?);
    // An admin API without tokens is served on loopback only: refuse before listening.
    let auth = worker::auth::Auth::from_env()?;
    let addresses = tokio::net::lookup_host(&settings.admin_listen)
        .await
        .with_context(|| {
            format!(
                "RECORDSYNC_ADMIN_LISTEN={} is not an address",
                settings.admin_listen
            )
        })?;
    for addr in addresses {
        auth.check_listener(addr)?;
    }
    let admin = tokio::net::TcpListener::bind(&settings.admin_listen)
        .await
        .with_context(|| format!("Failed to listen on {}", settings.admin_listen))?;
    let worker = ctx.into_worker()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // The binary's target, as before the command line had modules.
        tracing::info!(target: "worker", "stopping: finishing events in flight");
        stop.cancel();
    });
    let ran = worker.run(Some(admin), shutdown).await;
    // What is still batched goes out before the process ends.
    let _ = traces.shutdown();
    ran
}
