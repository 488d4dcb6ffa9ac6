//! The admin API's credentials: bearer tokens with their names and roles, the metrics
//! token, the extra host names the API answers to, and the rule that an API without
//! tokens only listens on loopback.
//!
//! Tokens come from `RECORDSYNC_ADMIN_TOKENS` (comma-separated `name:role:token`)
//! and/or the file named by `RECORDSYNC_ADMIN_TOKENS_FILE` (one `name:role:token` per
//! line, `#` starts a comment line). Several tokens may be valid at once, so that a
//! token can be rotated without downtime. A presented token is hashed and compared in
//! constant time with every configured token's hash.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The variable holding comma-separated `name:role:token` entries.
pub const TOKENS_VAR: &str = "RECORDSYNC_ADMIN_TOKENS";
/// The variable naming a file of `name:role:token` lines.
pub const TOKENS_FILE_VAR: &str = "RECORDSYNC_ADMIN_TOKENS_FILE";
/// The variable holding the bearer token `/metrics` asks for, when set.
pub const METRICS_TOKEN_VAR: &str = "RECORDSYNC_METRICS_TOKEN";
/// The variable holding extra host names the admin API answers to, comma-separated.
pub const HOSTS_VAR: &str = "RECORDSYNC_ADMIN_HOSTS";
/// The shortest token accepted, in characters: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token name accepted, in characters.
const MAX_NAME_LEN: usize = 64;

/// What a token may do. The roles are ordered: each one may do what the ones before
/// it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: records, timelines, conflicts, dead letters, issues, what is paused.
    Viewer,
    /// Also pauses, resumes, rehydrates, replays dead letters, resolves and dismisses
    /// conflicts.
    Operator,
    /// Also purges dead letters.
    Admin,
}

impl Role {
    /// The role's name as it is written in a token entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role \"{other}\" (use viewer, operator or admin)"
            )),
        }
    }
}

/// Who made an authenticated request: the token's name and role. The middleware puts
/// it in the request's extensions; handlers record the name as the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, recorded as the actor in the history.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

/// Why the admin access configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A token entry is malformed. The message never contains a token.
    #[error(
        "{origin}: {message} (an entry is name:role:token, the role viewer, operator or admin)"
    )]
    Malformed {
        /// Where the entry is: the variable and the entry's position, or the file and
        /// the line.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokens file could not be read.
    #[error("cannot read {TOKENS_FILE_VAR}={path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics token is too short.
    #[error("{METRICS_TOKEN_VAR} must be at least {MIN_TOKEN_LEN} visible ASCII characters")]
    WeakMetricsToken,
    /// No tokens are configured and the listener is reachable from the network.
    #[error(
        "refusing to serve the admin API on {addr} without tokens: set {TOKENS_VAR} (or {TOKENS_FILE_VAR}) to name:role:token entries, or listen on a loopback address such as 127.0.0.1:8081"
    )]
    OpenOnNetwork {
        /// The listener's address.
        addr: SocketAddr,
    },
}

/// One configured token: who it is, and the SHA-256 of its value (the value itself is
/// not kept).
#[derive(Clone)]
pub(super) struct Token {
    pub(super) principal: Principal,
    pub(super) digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.principal.name)
            .field("role", &self.principal.role)
            .finish_non_exhaustive()
    }
}

pub(super) fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The admin API's credentials and accepted host names. The default has no tokens:
/// the API is then open, which [`Access::new`] allows only on a loopback listener.
#[derive(Clone, Default)]
pub struct Auth {
    pub(super) tokens: Vec<Token>,
    pub(super) metrics: Option<[u8; 32]>,
    hosts: Vec<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens)
            .field("metrics_token", &self.metrics.is_some())
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Auth {
    /// Tokens from a comma-separated `name:role:token` list, as `RECORDSYNC_ADMIN_TOKENS`
    /// holds them. Empty entries are skipped.
    pub fn from_spec(spec: &str) -> Result<Auth, AuthError> {
        let mut auth = Auth::default();
        auth.add_entries(
            spec.split(',')
                .enumerate()
                .map(|(i, e)| (format!("{TOKENS_VAR} entry {}", i + 1), e)),
        )?;
        Ok(auth)
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests):
    /// `RECORDSYNC_ADMIN_TOKENS`, `RECORDSYNC_ADMIN_TOKENS_FILE`,
    /// `RECORDSYNC_METRICS_TOKEN` and `RECORDSYNC_ADMIN_HOSTS`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Auth, AuthError> {
        let mut auth = match lookup(TOKENS_VAR) {
            Some(spec) => Auth::from_spec(&spec)?,
            None => Auth::default(),
        };
        if let Some(path) = lookup(TOKENS_FILE_VAR).filter(|p| !p.trim().is_empty()) {
            let text = std::fs::read_to_string(path.trim()).map_err(|source| AuthError::File {
                path: path.clone(),
                source,
            })?;
            auth.add_entries(
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim_start().starts_with('#'))
                    .map(|(i, l)| (format!("{TOKENS_FILE_VAR}={path} line {}", i + 1), l)),
            )?;
        }
        if let Some(token) = lookup(METRICS_TOKEN_VAR).filter(|t| !t.is_empty()) {
            auth = auth.with_metrics_token(&token)?;
        }
        if let Some(hosts) = lookup(HOSTS_VAR) {
            auth = auth.with_hosts(hosts.split(','));
        }
        Ok(auth)
    }

    /// Reads the settings from the process environment (see [`Auth::from_lookup`]).
    pub fn from_env() -> Result<Auth, AuthError> {
        Auth::from_lookup(|k| std::env::var(k).ok())
    }

    /// Puts `/metrics` behind this bearer token.
    pub fn with_metrics_token(mut self, token: &str) -> Result<Auth, AuthError> {
        if !is_token(token) {
            return Err(AuthError::WeakMetricsToken);
        }
        self.metrics = Some(digest(token));
        Ok(self)
    }

    /// Adds host names the admin API answers to, besides loopback names and the
    /// listener's own address (a port, if given, is ignored).
    pub fn with_hosts<S: AsRef<str>>(mut self, hosts: impl IntoIterator<Item = S>) -> Auth {
        self.hosts.extend(
            hosts
                .into_iter()
                .map(|h| host_name(h.as_ref()))
                .filter(|h| !h.is_empty()),
        );
        self
    }

    /// Whether no token is configured (the API is then open, on loopback only).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The names and roles of the configured tokens, in order.
    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.tokens.iter().map(|t| &t.principal)
    }

    /// Who a presented token belongs to, if anyone. Every configured token is compared,
    /// in constant time, with the presented one: how long this takes says nothing
    /// about how close the guess was.
    pub fn authenticate(&self, presented: &str) -> Option<&Principal> {
        let presented = digest(presented);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.as_slice().ct_eq(presented.as_slice())) {
                found = Some(&t.principal);
            }
        }
        found
    }

    /// Whether a presented token is the metrics token (compared in constant time).
    pub(super) fn is_metrics_token(&self, presented: &str) -> bool {
        self.metrics
            .is_some_and(|m| bool::from(m.as_slice().ct_eq(digest(presented).as_slice())))
    }

    /// Refuses to serve without tokens on a listener other than loopback.
    pub fn check_listener(&self, addr: SocketAddr) -> Result<(), AuthError> {
        if self.is_open() && !addr.ip().to_canonical().is_loopback() {
            return Err(AuthError::OpenOnNetwork { addr });
        }
        Ok(())
    }

    /// Whether the admin API answers to a `Host` header value: a loopback name or
    /// address, the listener's own address (unless it is the unspecified address),
    /// or a configured name.
    pub fn host_allowed(&self, host: &str, local: SocketAddr) -> bool {
        let name = host_name(host);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            let own = local.ip().to_canonical();
            if ip.is_loopback() || (ip == own && !own.is_unspecified()) {
                return true;
            }
        }
        self.hosts.contains(&name)
    }

    fn add_entries<'a>(
        &mut self,
        entries: impl Iterator<Item = (String, &'a str)>,
    ) -> Result<(), AuthError> {
        for (origin, entry) in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let token = parse_entry(entry).map_err(|message| AuthError::Malformed {
                origin: origin.clone(),
                message,
            })?;
            if let Some(same) = self.tokens.iter().find(|t| t.digest == token.digest) {
                return Err(AuthError::Malformed {
                    origin,
                    message: format!(
                        "the token of \"{}\" is also the token of \"{}\"; give each name its own",
                        token.principal.name, same.principal.name
                    ),
                });
            }
            self.tokens.push(token);
        }
        Ok(())
    }
}

/// Whether a token is long enough and made of visible ASCII characters only (what an
/// `Authorization` header can carry).
fn is_token(token: &str) -> bool {
    token.len() >= MIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses `name:role:token`. The token may itself contain `:`. The error never
/// repeats the token.
fn parse_entry(entry: &str) -> Result<Token, String> {
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected three parts separated by ':'".into());
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(format!("a token name has 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || " -_.@".contains(c))
    {
        return Err(format!(
            "the name \"{name}\" may hold letters, digits, spaces and - _ . @ only"
        ));
    }
    let role: Role = role.trim().parse()?;
    let token = token.trim();
    if !is_token(token) {
        return Err(format!(
            "the token of \"{name}\" must be at least {MIN_TOKEN_LEN} visible ASCII characters"
        ));
    }
    Ok(Token {
        principal: Principal {
            name: name.to_owned(),
            role,
        },
        digest: digest(token),
    })
}

/// The host part of a `Host` header value or a configured name: without the port and
/// the IPv6 brackets, without a trailing dot, in lower case.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if host.parse::<IpAddr>().is_ok() {
        host
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaa-1";
    const B: &str = "bbbbbbbbbbbbbbbb-2";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn entries_parse_with_their_roles_and_rotation_keeps_both() {
        let auth = Auth::from_spec(&format!(
            " ops:operator:{A} , ops:operator:{B},,root:admin:x:{A}"
        ))
        .expect("valid");
        assert_eq!(auth.principals().count(), 3);
        assert_eq!(auth.authenticate(A).map(|p| p.role), Some(Role::Operator));
        assert_eq!(auth.authenticate(B).map(|p| p.name.as_str()), Some("ops"));
        assert_eq!(
            auth.authenticate(&format!("x:{A}")).map(|p| p.role),
            Some(Role::Admin),
            "a token may contain ':'"
        );
        assert!(auth.authenticate("aaaaaaaaaaaaaaaa-3").is_none());
        assert!(auth.authenticate("").is_none());
    }

    #[test]
    fn malformed_entries_are_named_and_never_repeat_the_token() {
        for (spec, says) in [
            (format!("ops:{A}"), "three parts"),
            (format!("ops:root:{A}"), "unknown role \"root\""),
            ("ops:viewer:short".to_owned(), "at least 16"),
            (format!(":viewer:{A}"), "1 to 64"),
            (format!("o/ps:viewer:{A}"), "may hold letters"),
            (
                format!("a:viewer:{A},b:admin:{A}"),
                "also the token of \"a\"",
            ),
        ] {
            let e = Auth::from_spec(&spec).expect_err(&spec).to_string();
            assert!(e.contains(says), "{spec}: {e}");
            assert!(e.starts_with("RECORDSYNC_ADMIN_TOKENS entry"), "{e}");
            assert!(!e.contains(A), "{e}");
        }
    }

    #[test]
    fn the_file_and_the_variable_add_up_and_comments_are_skipped() {
        let dir = std::env::temp_dir().join(format!("rs-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let file = dir.join("tokens");
        std::fs::write(&file, format!("# rotation\n\nview:viewer:{B}\n  # old\n"))
            .expect("written");
        let path = file.display().to_string();
        let vars = [
            (TOKENS_VAR, format!("ops:operator:{A}")),
            (TOKENS_FILE_VAR, path.clone()),
            (HOSTS_VAR, "Admin.Example.com:8081, ,other".to_owned()),
        ];
        let auth =
            Auth::from_lookup(|k| vars.iter().find(|(v, _)| *v == k).map(|(_, x)| x.clone()))
                .expect("valid");
        assert_eq!(auth.authenticate(B).map(|p| p.role), Some(Role::Viewer));
        assert_eq!(auth.authenticate(A).map(|p| p.role), Some(Role::Operator));
        let local = addr("0.0.0.0:8081");
        assert!(auth.host_allowed("admin.example.com", local));
        assert!(auth.host_allowed("OTHER:1", local));
        assert!(!auth.host_allowed("evil.example", local));

        std::fs::write(&file, "view:viewer:short\n").expect("written");
        let e = Auth::from_lookup(|k| (k == TOKENS_FILE_VAR).then(|| path.clone()))
            .expect_err("a short token")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let e = Auth::from_lookup(|k| (k == TOKENS_FILE_VAR).then(|| path.clone()))
            .expect_err("no file")
            .to_string();
        assert!(
            e.starts_with("cannot read RECORDSYNC_ADMIN_TOKENS_FILE="),
            "{e}"
        );
    }

    #[test]
    fn an_open_api_listens_on_loopback_only() {
        let open = Auth::default();
        for ok in [
            "127.0.0.1:8081",
            "127.0.0.2:0",
            "[::1]:8081",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(open.check_listener(addr(ok)).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:8081", "[::]:8081", "10.1.2.3:8081"] {
            let e = open
                .check_listener(addr(refused))
                .expect_err(refused)
                .to_string();
            assert!(e.contains("RECORDSYNC_ADMIN_TOKENS"), "{e}");
            assert!(e.contains(refused), "{e}");
        }
        let with = Auth::from_spec(&format!("ops:viewer:{A}")).expect("valid");
        assert!(with.check_listener(addr("0.0.0.0:8081")).is_ok());
        assert!(super::super::Access::new(Auth::default(), addr("0.0.0.0:1")).is_err());
    }

    #[test]
    fn hosts_are_loopback_the_listener_or_configured() {
        let auth = Auth::default().with_hosts(["recordsync.internal"]);
        let local = addr("10.0.0.5:8081");
        for ok in [
            "localhost",
            "localhost:8081",
            "app.localhost",
            "127.0.0.1:8081",
            "[::1]:8081",
            "10.0.0.5:8081",
            "recordsync.internal.:8081",
        ] {
            assert!(auth.host_allowed(ok, local), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8081",
            "10.0.0.6",
            "0.0.0.0",
            "localhost.evil.example",
        ] {
            assert!(!auth.host_allowed(refused, local), "{refused}");
        }
        assert!(!auth.host_allowed("0.0.0.0:8081", addr("0.0.0.0:8081")));
    }

    #[test]
    fn the_metrics_token_must_be_strong() {
        assert!(Auth::default().with_metrics_token("short").is_err());
        let auth = Auth::default().with_metrics_token(A).expect("valid");
        assert!(auth.is_metrics_token(A));
        assert!(!auth.is_metrics_token(B));
        assert!(auth.is_open(), "a metrics token is not an admin token");
        assert!(!format!("{auth:?}").contains(A));
    }
}
