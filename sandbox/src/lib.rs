//! An in-memory stand-in for the external systems that recordsync talks to.
//!
//! The sandbox serves three things from one HTTP listener:
//!
//! * a kintone-compatible REST API under `/k/v1` that sends kintone-shaped webhooks,
//! * a helpdesk REST API under `/api` that signs its webhooks with Standard Webhooks, whose
//!   tickets are also served in three more shapes modelled on public APIs: Zendesk Support
//!   under `/zendesk/api/v2/tickets`, HubSpot CRM v3 objects under
//!   `/hubspot/crm/v3/objects/tickets` and Freshdesk v2 under `/freshdesk/api/v2/tickets`
//!   (see the `dialects` module),
//! * an unauthenticated admin API under `/_admin` that tests use to seed data, inject faults,
//!   configure rate limits, read the request log and inspect webhook deliveries.
//!
//! Tests start it in-process with [`Sandbox::start`], which binds an ephemeral port on the
//! loopback interface; the binary uses [`Sandbox::serve`] with a listener of its own.

mod admin;
mod dialects;
mod faults;
mod gate;
mod helpdesk;
mod kintone;
mod log;
mod state;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::gate::Gate;
use crate::state::{Shared, System};

/// The kintone API token that [`SandboxConfig::default`] accepts.
pub const DEFAULT_KINTONE_API_TOKEN: &str = "kintone-token";

/// The helpdesk bearer token that [`SandboxConfig::default`] accepts.
pub const DEFAULT_HELPDESK_TOKEN: &str = "helpdesk-token";

/// The raw 32-byte key behind the default helpdesk webhook secret.
pub const DEFAULT_HELPDESK_WEBHOOK_KEY: &[u8; 32] = b"recordsync-sandbox-helpdesk-key!";

/// The credentials that the sandbox's two simulated systems accept and use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The value that the `X-Cybozu-API-Token` header must carry (one of its comma-separated
    /// tokens must match; this value may itself list several tokens separated by commas).
    pub kintone_api_token: String,
    /// The token that the helpdesk expects as `Authorization: Bearer <token>`.
    pub helpdesk_token: String,
    /// The Standard Webhooks secret, `whsec_` followed by the base64 of the signing key.
    pub helpdesk_webhook_secret: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            kintone_api_token: DEFAULT_KINTONE_API_TOKEN.to_owned(),
            helpdesk_token: DEFAULT_HELPDESK_TOKEN.to_owned(),
            helpdesk_webhook_secret: format!(
                "whsec_{}",
                STANDARD.encode(DEFAULT_HELPDESK_WEBHOOK_KEY)
            ),
        }
    }
}

/// A sandbox server running on a background task of the current Tokio runtime.
///
/// Dropping the value aborts the server task and its webhook delivery workers.
pub struct Sandbox {
    /// The server's base URL, for example `http://127.0.0.1:41234`.
    pub base_url: String,
    /// The address that the server listens on.
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Sandbox {
    /// Binds `127.0.0.1:0` and serves the sandbox on a spawned task until the value is dropped.
    pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding 127.0.0.1:0 for the sandbox")?;
        let addr = listener
            .local_addr()
            .context("reading the sandbox address")?;
        let prepared = Prepared::new(config)?;
        let handle = tokio::spawn(async move {
            if let Err(error) = prepared.run(listener, std::future::pending()).await {
                tracing::error!(error = %error, "the sandbox server stopped with an error");
            }
        });
        Ok(Sandbox {
            base_url: format!("http://{addr}"),
            addr,
            handle,
        })
    }

    /// Serves the sandbox on `listener` until `shutdown` completes.
    ///
    /// Webhook delivery workers run for as long as this future is alive and are aborted when it
    /// finishes or is dropped.
    pub async fn serve(
        listener: TcpListener,
        config: SandboxConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        Prepared::new(config)?.run(listener, shutdown).await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The validated configuration and shared state of a sandbox that has not started serving yet.
struct Prepared {
    shared: Arc<Shared>,
    receivers: webhooks::Receivers,
    client: reqwest::Client,
}

impl Prepared {
    fn new(config: SandboxConfig) -> anyhow::Result<Prepared> {
        let webhook_key = webhooks::decode_secret(&config.helpdesk_webhook_secret)?;
        let client = webhooks::http_client()?;
        let (hooks, receivers) = webhooks::channels();
        let shared = Arc::new(Shared::new(config, webhook_key, hooks));
        Ok(Prepared {
            shared,
            receivers,
            client,
        })
    }

    async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let _workers = AbortOnDrop(webhooks::spawn_workers(
            &self.shared,
            self.client,
            self.receivers,
        ));
        axum::serve(listener, router(self.shared))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the sandbox")
    }
}

/// Aborts the held tasks when dropped, so that workers never outlive their server.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let kintone = kintone::routes().layer(axum::middleware::from_fn_with_state(
        Gate::new(shared.clone(), System::Kintone),
        gate::gate,
    ));
    // The dialects pass through the helpdesk's gate: its request log, faults and rate limit.
    let helpdesk =
        helpdesk::routes()
            .merge(dialects::routes())
            .layer(axum::middleware::from_fn_with_state(
                Gate::new(shared.clone(), System::Helpdesk),
                gate::gate,
            ));
    Router::new()
        .merge(kintone)
        .merge(helpdesk)
        .merge(admin::routes())
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such endpoint in the sandbox"})),
    )
        .into_response()
}
