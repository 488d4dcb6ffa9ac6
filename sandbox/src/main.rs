//! The sandbox binary: serves the simulated kintone and helpdesk APIs for the demo.
//!
//! Configuration comes from the environment: `SANDBOX_LISTEN` (default `127.0.0.1:8090`),
//! `SANDBOX_KINTONE_TOKEN`, `SANDBOX_HELPDESK_TOKEN` and `SANDBOX_HELPDESK_WEBHOOK_SECRET`
//! (defaults as in `SandboxConfig::default`). Logs are JSON lines filtered by `RUST_LOG`.

use anyhow::Context;
use sandbox::{Sandbox, SandboxConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn env_or(name: &str, default: String) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let defaults = SandboxConfig::default();
    let config = SandboxConfig {
        kintone_api_token: env_or("SANDBOX_KINTONE_TOKEN", defaults.kintone_api_token),
        helpdesk_token: env_or("SANDBOX_HELPDESK_TOKEN", defaults.helpdesk_token),
        helpdesk_webhook_secret: env_or(
            "SANDBOX_HELPDESK_WEBHOOK_SECRET",
            defaults.helpdesk_webhook_secret,
        ),
    };
    let listen = env_or("SANDBOX_LISTEN", "127.0.0.1:8090".to_owned());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "sandbox listening");
    Sandbox::serve(listener, config, shutdown_signal()).await?;
    tracing::info!("sandbox stopped");
    Ok(())
}

/// Completes on ctrl-c or, on Unix, on SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
