//! The `Ingest` service: the secrets it reads at start-up, the state its handlers
//! share, its routes, and the accept loop that serves them within the intake limits.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use config::{ConfigError, Settings};
use domain::rules::{SyncRules, WebhookAuth};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use queue::{Broker, Topology};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::IntakeLimits;
use crate::handler::{metrics_text, readyz, webhook};
use crate::metrics::Metrics;
use crate::signature::parse_secret;

/// How a system's webhooks authenticate, with its secrets read.
#[derive(Clone)]
pub(crate) enum Auth {
    Token(String),
    Signed {
        keys: Vec<Vec<u8>>,
        tolerance_secs: i64,
    },
}

pub(crate) struct AppState {
    pub(crate) rules: SyncRules,
    pub(crate) auth: BTreeMap<String, Auth>,
    pub(crate) broker: Arc<Broker>,
    pub(crate) max_body: usize,
    /// Body bytes that may be buffered at once, across every request.
    pub(crate) body_budget: Arc<Semaphore>,
    pub(crate) metrics: Metrics,
}

/// The ingest service, ready to serve.
pub struct Ingest {
    pub(crate) state: Arc<AppState>,
    limits: IntakeLimits,
}

impl Ingest {
    /// Reads every webhook secret the rules name and prepares the broker handle.
    pub fn new(settings: &Settings, rules: SyncRules) -> Result<Ingest, ConfigError> {
        Ingest::with_secrets(settings, rules, config::secret)
    }

    /// As [`Ingest::new`], with secrets from `secret(path, var)`.
    pub fn with_secrets(
        settings: &Settings,
        rules: SyncRules,
        secret: impl Fn(&str, &str) -> Result<String, ConfigError>,
    ) -> Result<Ingest, ConfigError> {
        let mut auth = BTreeMap::new();
        for (name, sys) in &rules.systems {
            match &sys.webhook {
                Some(WebhookAuth::Token { token_env }) => {
                    let token = secret(&format!("systems.{name}.webhook.token_env"), token_env)?;
                    auth.insert(name.clone(), Auth::Token(token));
                }
                Some(WebhookAuth::StandardWebhooks {
                    secret_env,
                    tolerance_seconds,
                }) => {
                    let path = format!("systems.{name}.webhook.secret_env");
                    let raw = secret(&path, secret_env)?;
                    let keys: Option<Vec<Vec<u8>>> =
                        raw.split_whitespace().map(parse_secret).collect();
                    let keys = keys.filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::Invalid {
                        file: "environment".into(),
                        problems: vec![config::Problem {
                            path: path.clone(),
                            message: format!("{secret_env} must hold whsec_<base64> secrets separated by spaces"),
                        }],
                    })?;
                    let tolerance_secs =
                        i64::try_from(tolerance_seconds.unwrap_or(300)).unwrap_or(i64::MAX);
                    auth.insert(
                        name.clone(),
                        Auth::Signed {
                            keys,
                            tolerance_secs,
                        },
                    );
                }
                None => {}
            }
        }
        let topology = Topology::new(&settings.queue_prefix, settings.retry_delays_ms.clone());
        let broker = Broker::new(
            &settings.amqp_url,
            "recordsync-ingest",
            topology,
            Duration::from_millis(settings.publish_timeout_ms),
        );
        let limits = IntakeLimits::default();
        Ok(Ingest {
            state: Arc::new(AppState {
                rules,
                auth,
                broker,
                max_body: settings.max_body_bytes,
                body_budget: budget(&limits, settings.max_body_bytes),
                metrics: Metrics::default(),
            }),
            limits,
        })
    }

    /// Replaces the default [`IntakeLimits`].
    pub fn with_limits(mut self, limits: IntakeLimits) -> Ingest {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.body_budget = budget(&limits, state.max_body);
        }
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &IntakeLimits {
        &self.limits
    }

    /// The broker handle (tests wait on it).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.state.broker)
    }

    /// The HTTP routes, with the body-read timeout (between chunks) and the
    /// whole-request deadline.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/webhooks/{system}", post(webhook))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(Arc::clone(&self.state))
            .layer(RequestBodyTimeoutLayer::new(self.limits.body_timeout))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.limits.request_timeout,
            ))
    }

    /// Serves HTTP/1.1 until `shutdown`, within the [`IntakeLimits`]; keeps the broker
    /// connection alive meanwhile. On shutdown, requests in flight finish (each within
    /// the request deadline) and idle connections close.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let keeper = self.state.broker.spawn_keeper(shutdown.clone());
        let app = self.router();
        let limits = self.limits.clone();
        // axum::serve offers no header-read timeout, so connections are served with
        // hyper's HTTP/1 builder, and each holds a permit of the connection cap.
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app.clone());
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let stop = shutdown.clone();
            tokio::spawn(serve_connection(conn, stop, permit));
        }
        drop(listener);
        // Every connection gives its permit back when it ends.
        let _ = connections
            .acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX))
            .await;
        shutdown.cancel();
        let _ = keeper.await;
        Ok(())
    }
}

fn budget(limits: &IntakeLimits, max_body: usize) -> Arc<Semaphore> {
    let bytes = limits
        .body_budget_bytes
        .max(max_body)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(bytes))
}

async fn serve_connection<S>(
    conn: hyper::server::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, S>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as axum::body::HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
