//! Webhook delivery and Standard Webhooks signing.
//!
//! Each simulated system has one unbounded queue drained by one background worker, so that
//! deliveries leave in the order in which the changes happened. Every delivery is recorded with
//! its payload, so that the admin API can list and redeliver it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::state::{Shared, System};

/// How many deliveries per system are remembered; older ones are forgotten first.
const MAX_DELIVERIES: usize = 1000;

/// How long one delivery attempt may take before it is recorded as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// Signs a webhook as Standard Webhooks does and returns the `webhook-signature` header value.
///
/// The signed content is `{msg_id}.{timestamp}.{body}` and the key is the base64-decoded secret
/// after the `whsec_` prefix.
pub fn sign_standard_webhook(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<String> {
    let key = decode_secret(secret)?;
    Ok(sign_with_key(&key, msg_id, &timestamp.to_string(), body))
}

/// Checks a `webhook-signature` header (one or more space-separated `v1,<base64>` entries) in
/// constant time against the signature of the given message.
pub fn verify_standard_webhook(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
) -> bool {
    let Ok(key) = decode_secret(secret) else {
        return false;
    };
    signature_header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|signature| {
            mac_for(&key, msg_id, timestamp, body)
                .verify_slice(&signature)
                .is_ok()
        })
}

/// Decodes a Standard Webhooks secret into its key bytes.
pub(crate) fn decode_secret(secret: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .context("the helpdesk webhook secret must be `whsec_` followed by base64")
}

fn sign_with_key(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let signature = mac_for(key, msg_id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(signature))
}

fn mac_for(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Builds the plain-HTTP client used for deliveries; it never uses a proxy.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    // The workspace builds reqwest without a built-in crypto provider, so one must be installed
    // before a client is built; an error only means that another one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DELIVERY_TIMEOUT)
        .build()
        .context("building the webhook HTTP client")
}

/// One queued delivery attempt.
pub(crate) struct Job {
    system: System,
    id: String,
    url: String,
    body: Vec<u8>,
}

/// The sending halves of the delivery queues and the count of attempts not yet finished.
pub(crate) struct Hooks {
    kintone: mpsc::UnboundedSender<Job>,
    helpdesk: mpsc::UnboundedSender<Job>,
    pending: watch::Sender<usize>,
}

/// The receiving halves of the delivery queues, consumed by [`spawn_workers`].
pub(crate) struct Receivers {
    kintone: mpsc::UnboundedReceiver<Job>,
    helpdesk: mpsc::UnboundedReceiver<Job>,
}

pub(crate) fn channels() -> (Hooks, Receivers) {
    let (kintone_tx, kintone_rx) = mpsc::unbounded_channel();
    let (helpdesk_tx, helpdesk_rx) = mpsc::unbounded_channel();
    let (pending, _) = watch::channel(0);
    (
        Hooks {
            kintone: kintone_tx,
            helpdesk: helpdesk_tx,
            pending,
        },
        Receivers {
            kintone: kintone_rx,
            helpdesk: helpdesk_rx,
        },
    )
}

impl Hooks {
    fn send(&self, job: Job) {
        self.pending.send_modify(|pending| *pending += 1);
        let sender = match job.system {
            System::Kintone => &self.kintone,
            System::Helpdesk => &self.helpdesk,
        };
        if sender.send(job).is_err() {
            self.finish_one();
        }
    }

    fn finish_one(&self) {
        self.pending
            .send_modify(|pending| *pending = pending.saturating_sub(1));
    }

    /// Waits until no delivery attempt is queued or in flight, or until `timeout` passes, and
    /// returns the number of attempts still pending.
    pub(crate) async fn flush(&self, timeout: Duration) -> usize {
        let mut receiver = self.pending.subscribe();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|pending| *pending == 0)).await;
        *self.pending.borrow()
    }
}

/// A recorded webhook delivery.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) record_id: Option<String>,
    pub(crate) app: Option<u64>,
    pub(crate) url: String,
    pub(crate) payload: Value,
    status: Option<u16>,
    error: Option<String>,
    attempts: u32,
    in_flight: u32,
}

impl Delivery {
    fn to_json(&self) -> Value {
        let mut value = json!({
            "id": self.id,
            "type": self.kind,
            "record_id": self.record_id,
            "status": self.status,
            "error": self.error,
            "attempts": self.attempts,
            "pending": self.in_flight > 0,
            "url": self.url,
        });
        if let Some(app) = self.app {
            value["app"] = json!(app);
        }
        value["payload"] = self.payload.clone();
        value
    }
}

/// The recorded deliveries of both systems, oldest first.
#[derive(Default)]
pub(crate) struct Deliveries {
    kintone: VecDeque<Delivery>,
    helpdesk: VecDeque<Delivery>,
    /// kintone's cap on notifications per rolling minute (the real one is 60 per
    /// domain): webhooks beyond it are dropped, as kintone drops them.
    kintone_per_minute: Option<u32>,
    kintone_sent: VecDeque<std::time::Instant>,
    kintone_dropped: u64,
}

impl Deliveries {
    /// Sets (or, with `None`, lifts) kintone's webhook cap per rolling minute.
    pub(crate) fn set_kintone_cap(&mut self, per_minute: Option<u32>) {
        self.kintone_per_minute = per_minute;
        self.kintone_sent.clear();
    }

    /// The cap and how many kintone webhooks it has dropped.
    pub(crate) fn kintone_cap_json(&self) -> Value {
        serde_json::json!({"per_minute": self.kintone_per_minute, "dropped": self.kintone_dropped})
    }

    /// Whether kintone's cap lets one more webhook out now (and counts it if so).
    fn kintone_allows(&mut self) -> bool {
        let Some(cap) = self.kintone_per_minute else {
            return true;
        };
        let now = std::time::Instant::now();
        while self
            .kintone_sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.kintone_sent.pop_front();
        }
        if self.kintone_sent.len() >= cap as usize {
            self.kintone_dropped += 1;
            return false;
        }
        self.kintone_sent.push_back(now);
        true
    }

    fn list_mut(&mut self, system: System) -> &mut VecDeque<Delivery> {
        match system {
            System::Kintone => &mut self.kintone,
            System::Helpdesk => &mut self.helpdesk,
        }
    }

    pub(crate) fn to_json(&self, system: System) -> Value {
        let list = match system {
            System::Kintone => &self.kintone,
            System::Helpdesk => &self.helpdesk,
        };
        Value::Array(list.iter().map(Delivery::to_json).collect())
    }

    pub(crate) fn find(&self, system: System, id: &str) -> Option<&Delivery> {
        let list = match system {
            System::Kintone => &self.kintone,
            System::Helpdesk => &self.helpdesk,
        };
        list.iter().find(|delivery| delivery.id == id)
    }

    fn find_mut(&mut self, system: System, id: &str) -> Option<&mut Delivery> {
        self.list_mut(system)
            .iter_mut()
            .find(|delivery| delivery.id == id)
    }
}

/// A delivery to record and queue.
pub(crate) struct NewDelivery {
    pub(crate) system: System,
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) record_id: Option<String>,
    pub(crate) app: Option<u64>,
    pub(crate) url: String,
    pub(crate) payload: Value,
}

/// Records a new delivery and queues its first attempt.
pub(crate) fn enqueue(hooks: &Hooks, deliveries: &mut Deliveries, new: NewDelivery) {
    if new.system == System::Kintone && !deliveries.kintone_allows() {
        return;
    }
    let body = serde_json::to_vec(&new.payload).unwrap_or_default();
    let job = Job {
        system: new.system,
        id: new.id.clone(),
        url: new.url.clone(),
        body,
    };
    let list = deliveries.list_mut(new.system);
    list.push_back(Delivery {
        id: new.id,
        kind: new.kind,
        record_id: new.record_id,
        app: new.app,
        url: new.url,
        payload: new.payload,
        status: None,
        error: None,
        attempts: 0,
        in_flight: 1,
    });
    while list.len() > MAX_DELIVERIES {
        list.pop_front();
    }
    hooks.send(job);
}

/// Queues another attempt of a recorded delivery with the same id and payload, to `url` when
/// given and to the original URL otherwise. Returns false when the delivery is unknown.
pub(crate) fn redeliver(
    hooks: &Hooks,
    deliveries: &mut Deliveries,
    system: System,
    id: &str,
    url: Option<String>,
) -> bool {
    let Some(delivery) = deliveries.find_mut(system, id) else {
        return false;
    };
    if let Some(url) = url {
        delivery.url = url;
    }
    delivery.in_flight += 1;
    let job = Job {
        system,
        id: delivery.id.clone(),
        url: delivery.url.clone(),
        body: serde_json::to_vec(&delivery.payload).unwrap_or_default(),
    };
    hooks.send(job);
    true
}

/// Spawns one delivery worker per system.
pub(crate) fn spawn_workers(
    shared: &Arc<Shared>,
    client: reqwest::Client,
    receivers: Receivers,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(worker(shared.clone(), client.clone(), receivers.kintone)),
        tokio::spawn(worker(shared.clone(), client, receivers.helpdesk)),
    ]
}

async fn worker(
    shared: Arc<Shared>,
    client: reqwest::Client,
    mut receiver: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = receiver.recv().await {
        let outcome = deliver(&shared, &client, &job).await;
        match &outcome {
            Ok(status) => tracing::info!(
                system = job.system.as_str(),
                webhook_id = %job.id,
                url = %redact_token(&job.url),
                status,
                "webhook delivered"
            ),
            Err(error) => tracing::warn!(
                system = job.system.as_str(),
                webhook_id = %job.id,
                url = %redact_token(&job.url),
                error = %error,
                "webhook delivery failed"
            ),
        }
        {
            let mut state = shared.lock();
            if let Some(delivery) = state.deliveries.find_mut(job.system, &job.id) {
                delivery.attempts += 1;
                delivery.in_flight = delivery.in_flight.saturating_sub(1);
                match outcome {
                    Ok(status) => {
                        delivery.status = Some(status);
                        delivery.error = None;
                    }
                    Err(error) => {
                        delivery.status = None;
                        delivery.error = Some(error);
                    }
                }
            }
        }
        shared.hooks.finish_one();
    }
}

async fn deliver(shared: &Shared, client: &reqwest::Client, job: &Job) -> Result<u16, String> {
    let mut request = client
        .post(&job.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, user_agent(job.system))
        .body(job.body.clone());
    if job.system == System::Helpdesk {
        let timestamp = Utc::now().timestamp().to_string();
        let signature = sign_with_key(&shared.webhook_key, &job.id, &timestamp, &job.body);
        request = request
            .header("webhook-id", &job.id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature);
    }
    match request.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(error) => Err(redact_token(&error_chain(&error))),
    }
}

/// A URL (or a message quoting one) with the value of its `token` query parameter
/// replaced: kintone webhook URLs carry the receiver's secret (`?token=`), which has
/// no place in a log.
pub(crate) fn redact_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = rest
            .match_indices("token=")
            .find(|(at, _)| *at == 0 || matches!(rest.as_bytes()[at - 1], b'?' | b'&' | b';'));
        let Some((at, _)) = found else {
            break;
        };
        let value_start = at + "token=".len();
        out.push_str(&rest[..value_start]);
        let len = rest[value_start..]
            .find(['&', '#', ' ', ')', '"'])
            .unwrap_or(rest.len() - value_start);
        if len > 0 {
            out.push_str("[redacted]");
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

fn user_agent(system: System) -> &'static str {
    match system {
        System::Kintone => "kintone-sandbox-webhook",
        System::Helpdesk => "helpdesk-sandbox-webhook",
    }
}

/// Formats an error with all of its sources, since reqwest's own message omits the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_tokens_are_redacted_from_logged_urls() {
        assert_eq!(
            redact_token(
                "error sending request for url (http://h:1/webhooks/kintone?token=abc): refused"
            ),
            "error sending request for url (http://h:1/webhooks/kintone?token=[redacted]): refused"
        );
        assert_eq!(
            redact_token("http://h/w?a=1&token=x&b=2"),
            "http://h/w?a=1&token=[redacted]&b=2"
        );
        assert_eq!(redact_token("http://h/w?mytoken=x"), "http://h/w?mytoken=x");
    }

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let signature = sign_standard_webhook(SPEC_SECRET, SPEC_ID, 1_614_265_330, SPEC_BODY)
            .expect("the secret is valid");
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn verification_accepts_the_test_vector_and_rejects_tampering() {
        assert!(verify_standard_webhook(
            SPEC_SECRET,
            SPEC_ID,
            "1614265330",
            SPEC_BODY,
            &format!("v1,bm90IGl0 {SPEC_SIGNATURE}"),
        ));
        assert!(!verify_standard_webhook(
            SPEC_SECRET,
            SPEC_ID,
            "1614265331",
            SPEC_BODY,
            SPEC_SIGNATURE,
        ));
        assert!(!verify_standard_webhook(
            SPEC_SECRET,
            SPEC_ID,
            "1614265330",
            br#"{"test": 2432232315}"#,
            SPEC_SIGNATURE,
        ));
    }

    #[test]
    fn secrets_without_valid_base64_are_rejected() {
        assert!(decode_secret("whsec_not base64!").is_err());
        assert_eq!(
            decode_secret("whsec_AAEC").expect("valid base64"),
            vec![0, 1, 2]
        );
    }
}
