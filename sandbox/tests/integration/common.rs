//! Helpers shared by the integration tests: a running sandbox with an HTTP client, and a tiny
//! webhook receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use reqwest::{Method, RequestBuilder, Response};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running sandbox and a client for it.
pub struct Env {
    pub sandbox: Sandbox,
    pub client: reqwest::Client,
    pub config: SandboxConfig,
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default crypto provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("the HTTP client builds")
}

impl Env {
    pub async fn start() -> Env {
        let config = SandboxConfig::default();
        let sandbox = Sandbox::start(config.clone())
            .await
            .expect("the sandbox starts");
        Env {
            sandbox,
            client: client(),
            config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url)
    }

    /// A kintone API request carrying the configured API token.
    pub fn kintone(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Cybozu-API-Token", &self.config.kintone_api_token)
    }

    /// A helpdesk API request carrying the configured bearer token.
    pub fn helpdesk(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.config.helpdesk_token)
    }

    /// Sends an admin request and returns its JSON body, failing the test on a non-2xx status.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the admin request is sent");
        let status = response.status();
        let body: Value = response.json().await.expect("the admin body is JSON");
        assert!(
            status.is_success(),
            "admin {path} failed with {status}: {body}"
        );
        body
    }

    /// Creates the app used by the kintone tests.
    pub async fn create_app(&self, app: u64, webhook_url: Option<&str>) {
        self.admin(
            Method::POST,
            "/_admin/kintone/apps",
            Some(json!({
                "app": app,
                "name": "Work orders",
                "fields": {
                    "件名": "SINGLE_LINE_TEXT",
                    "詳細": "MULTI_LINE_TEXT",
                    "金額": "NUMBER",
                    "タグ": "CHECK_BOX",
                    "状態": "DROP_DOWN",
                },
                "title_field": "件名",
                "webhook_url": webhook_url,
            })),
        )
        .await;
    }

    /// Seeds a kintone record through the admin API and returns its id.
    pub async fn seed(&self, app: u64, record: Value) -> String {
        let body = self
            .admin(
                Method::POST,
                &format!("/_admin/kintone/apps/{app}/records"),
                Some(json!({ "record": record })),
            )
            .await;
        body["id"].as_str().expect("an id").to_owned()
    }

    /// Waits until every queued webhook delivery has finished.
    pub async fn flush(&self) {
        let body = self
            .admin(Method::POST, "/_admin/webhooks/flush", Some(json!({})))
            .await;
        assert_eq!(body["pending"], json!(0));
    }
}

/// Reads a response's status and JSON body.
pub async fn status_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// One request received by the webhook receiver.
#[derive(Clone, Debug)]
pub struct Received {
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

/// A webhook receiver on an ephemeral port that records every request and answers 200.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    handle: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(
                |State(store): State<Arc<Mutex<Vec<Received>>>>,
                 uri: Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    store.lock().expect("not poisoned").push(Received {
                        uri: uri.to_string(),
                        headers,
                        body: body.to_vec(),
                    });
                    StatusCode::OK
                },
            )
            .with_state(received.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the receiver binds");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let handle = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Receiver {
            url,
            received,
            handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
