//! The long-lived gateway link: reconnects forever with capped exponential backoff and
//! jitter, reports `Connected`, replays every pending approval as one `Snapshot` after
//! each (re)connect, then forwards approval events until the socket drops
//! (`Disconnected`). It also implements `GatewayPort` (resolve; `history_since`, paging
//! `approval.history`), and offers a one-shot `probe` for the binary's `check` command.
//!
//! Invariant: nothing here decides an approval. `resolve` is called only by the engine,
//! and every failure is reported, never retried into a decision.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, instrument, warn};

use super::connection::{ConnectError, ConnectOptions, Connection, Hello};
use super::frames::{ErrorShape, EventFrame};
use super::identity::{DeviceIdentity, StoredDeviceToken};
use super::{GatewayError, GatewayEvent, GatewayPort, NEEDED_SCOPES};
use crate::approval::{
    Approval, ApprovalId, CancelReason, Decider, Decision, Kind, Outcome, now_ms,
};
use crate::history::{HistoryMark, HistoryRow, take_page};
use crate::retry::Backoff;

/// How to reach and authenticate to one gateway. `Debug` redacts the token.
#[derive(Clone)]
pub struct GatewayOptions {
    /// `ws://host:port` or `wss://host:port`.
    pub url: String,
    /// The gateway's shared token; never logged.
    pub token: Option<String>,
    /// Where the device key and device token live (created 0600).
    pub state_dir: PathBuf,
    /// SHA-256 of the gateway's TLS certificate (DER), for `wss://` with a self-signed cert.
    pub tls_pin: Option<[u8; 32]>,
    /// Client id from the gateway's registry; default `gateway-client`.
    pub client_id: String,
    /// Client mode from the gateway's registry; default `backend`.
    pub client_mode: String,
    /// Shown by the gateway as `resolvedBy`; default `approval-bridge`.
    pub display_name: Option<String>,
    /// Scopes to ask for; default `NEEDED_SCOPES`.
    pub scopes: Vec<String>,
    /// Limit for one call (list, resolve); default 30 s.
    pub request_timeout: Duration,
    /// Longest pause between reconnect attempts; default 10 s: once the gateway is back, the
    /// next attempt comes 2.5–10 s later at worst (30 s made that wait 10.7 s at p50 across
    /// gateway restarts), for one refused connection every 5–10 s while it is down.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("state_dir", &self.state_dir)
            .field("tls_pin", &self.tls_pin.map(hex::encode))
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl GatewayOptions {
    pub fn new(
        url: impl Into<String>,
        token: Option<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        GatewayOptions {
            url: url.into(),
            token,
            state_dir: state_dir.into(),
            tls_pin: None,
            client_id: "gateway-client".into(),
            client_mode: "backend".into(),
            display_name: Some("approval-bridge".into()),
            scopes: NEEDED_SCOPES.iter().map(|s| s.to_string()).collect(),
            request_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(10),
        }
    }

    fn connect_options(&self, identity: &DeviceIdentity) -> ConnectOptions {
        let mut o =
            ConnectOptions::operator(self.url.clone(), self.token.clone(), identity.clone());
        o.client_id = self.client_id.clone();
        o.client_mode = self.client_mode.clone();
        o.display_name = self.display_name.clone();
        o.scopes = self.scopes.clone();
        o.tls_pin = self.tls_pin;
        o.request_timeout = self.request_timeout;
        o.device_token = StoredDeviceToken::load(&self.state_dir, &identity.device_id())
            .filter(|t| t.role == o.role)
            .map(|t| t.token);
        o
    }
}

/// The gateway link. Create with [`Client::spawn`]; share the `Arc` with the engine.
pub struct Client {
    opts: GatewayOptions,
    identity: DeviceIdentity,
    conn: Mutex<Option<Arc<Connection>>>,
    /// Resolves in flight at once (see `RESOLVES_IN_FLIGHT`).
    resolves: tokio::sync::Semaphore,
    /// The engine's event stream, also fed by `raise_probe` (see there); weak, so the
    /// stream still ends when the link task does.
    events: mpsc::WeakSender<GatewayEvent>,
}

/// At most this many resolve calls in flight: the gateway admits 256 queued operator
/// requests per process and answers the rest "server busy", so a burst of taps must queue
/// here rather than there.
const RESOLVES_IN_FLIGHT: usize = 32;

/// How long a resolve keeps retrying while the gateway is unavailable (busy, reconnecting,
/// timed out). Retrying sends the owner's own decision again, never another one; a resolve
/// that did land the first time answers ALREADY_RESOLVED, which is terminal.
const RESOLVE_RETRY_WINDOW: Duration = Duration::from_secs(10);

impl Client {
    /// Loads (or creates) the device identity in `opts.state_dir` and starts the link task.
    /// Events go to `events`; the task ends on `shutdown` or when `events` is closed.
    pub fn spawn(
        opts: GatewayOptions,
        events: mpsc::Sender<GatewayEvent>,
        shutdown: broadcast::Receiver<()>,
    ) -> std::io::Result<(Arc<Client>, JoinHandle<()>)> {
        let identity = DeviceIdentity::load_or_create(&opts.state_dir)?;
        let client = Arc::new(Client {
            opts,
            identity,
            conn: Mutex::new(None),
            resolves: tokio::sync::Semaphore::new(RESOLVES_IN_FLIGHT),
            events: events.downgrade(),
        });
        let task = tokio::spawn(client.clone().run(events, shutdown));
        Ok((client, task))
    }

    /// This bridge's device id (hex SHA-256 of its public key).
    pub fn device_id(&self) -> String {
        self.identity.device_id()
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some_and(|c| !c.is_closed())
    }

    fn current(&self) -> Option<Arc<Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_current(&self, c: Option<Arc<Connection>>) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Any gateway method on the live connection; `Unavailable` when there is none.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, GatewayError> {
        match self.current() {
            Some(c) => c.call(method, params).await,
            None => Err(GatewayError::Unavailable("not connected".into())),
        }
    }

    #[instrument(name = "gateway", skip_all, fields(url = %self.opts.url, device = %&self.identity.device_id()[..12]))]
    async fn run(
        self: Arc<Self>,
        events: mpsc::Sender<GatewayEvent>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        let mut backoff =
            Backoff::new(Duration::from_millis(500), self.opts.max_backoff).attempts();
        loop {
            let end = tokio::select! {
                end = self.session(&events) => end,
                _ = shutdown.recv() => SessionEnd::Stop,
            };
            if let Some(c) = self.current() {
                c.close();
            }
            self.set_current(None);
            let delay = match end {
                SessionEnd::Stop => {
                    debug!("gateway link stopped");
                    return;
                }
                SessionEnd::RetryAfter(d) => d,
                SessionEnd::Retry { was_up } => {
                    if was_up {
                        backoff.reset();
                    }
                    backoff.next_pause()
                }
            };
            debug!(?delay, "reconnecting after pause");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    /// One connection from handshake to drop.
    async fn session(&self, events: &mpsc::Sender<GatewayEvent>) -> SessionEnd {
        let opts = self.opts.connect_options(&self.identity);
        let (conn, hello, mut rx) = match Connection::open(&opts).await {
            Ok(ok) => ok,
            Err(e) => {
                return self
                    .connect_failed(e, opts.device_token.is_some(), events)
                    .await;
            }
        };
        let conn = Arc::new(conn);
        self.remember_device_token(&hello);
        let missing = hello.missing(&self.opts.scopes);
        if missing.is_empty() {
            info!(scopes = ?hello.scopes, server = ?hello.server_version, "connected to gateway");
        } else {
            warn!(
                granted = ?hello.scopes, ?missing,
                "connected to gateway WITHOUT needed scopes: the bridge is blind to approvals it cannot see, \
                 and agents' commands may be denied for lack of an approval route"
            );
        }
        self.set_current(Some(conn.clone()));
        if send(
            events,
            GatewayEvent::Connected {
                scopes: hello.scopes.clone(),
                missing,
            },
        )
        .await
        .is_err()
        {
            return SessionEnd::Stop;
        }

        // Events that arrive while we list stay queued in `rx` and follow the snapshot.
        let snapshot = match replay(&conn).await {
            Ok(s) => s,
            Err(e) => {
                // E.g. UNAVAILABLE while the gateway is suspended; the engine warns once.
                debug!(error = %e, "replaying pending approvals failed; reconnecting");
                conn.close();
                let _ = send(
                    events,
                    GatewayEvent::Disconnected {
                        reason: format!("replay failed: {e}"),
                    },
                )
                .await;
                return SessionEnd::Retry { was_up: false };
            }
        };
        let seen: HashSet<ApprovalId> = snapshot.iter().map(|a| a.id.clone()).collect();
        info!(pending = snapshot.len(), "pending approvals replayed");
        if send(events, GatewayEvent::Snapshot(snapshot))
            .await
            .is_err()
        {
            return SessionEnd::Stop;
        }

        while let Some(frame) = rx.recv().await {
            let Some(ev) = translate(&frame) else {
                continue;
            };
            if let GatewayEvent::Requested(a) = &ev
                && seen.contains(&a.id)
            {
                continue;
            }
            if send(events, ev).await.is_err() {
                return SessionEnd::Stop;
            }
        }
        let reason = conn.closed().await;
        warn!(%reason, "gateway connection lost");
        link_down(events, reason, SessionEnd::Retry { was_up: true }).await
    }

    async fn connect_failed(
        &self,
        e: ConnectError,
        sent_device_token: bool,
        events: &mpsc::Sender<GatewayEvent>,
    ) -> SessionEnd {
        // The engine logs a link-down reason once, not at every attempt.
        let ConnectError::Refused(shape) = e else {
            debug!(error = %e, "gateway connect failed");
            let reason = format!("connect failed: {e}");
            return link_down(events, reason, SessionEnd::Retry { was_up: false }).await;
        };
        if shape.is_retryable_unavailable() {
            // Starting, restarting or suspended: retry at the pace the gateway asks for.
            let after = shape.retry_after_ms.unwrap_or(500).clamp(100, 2_000);
            debug!(message = %shape.message, after_ms = after, "gateway unavailable; retrying");
            let reason = format!("gateway unavailable: {}; retrying", shape.message);
            return link_down(
                events,
                reason,
                SessionEnd::RetryAfter(Duration::from_millis(after)),
            )
            .await;
        }
        if shape.is_pairing_required() {
            let request_id = shape.pairing_request_id();
            match &request_id {
                Some(id) => warn!(
                    request_id = %id, device = %self.identity.device_id(),
                    "gateway requires pairing this device; the owner approves it with: openclaw devices approve {id}"
                ),
                None => warn!(
                    device = %self.identity.device_id(),
                    "gateway requires pairing this device; list requests with: openclaw devices list"
                ),
            }
            if send(events, GatewayEvent::PairingRequired { request_id })
                .await
                .is_err()
            {
                return SessionEnd::Stop;
            }
            // recommendedNextStep is `wait_then_retry`: the backoff paces it.
            return SessionEnd::Retry { was_up: false };
        }
        if sent_device_token && is_device_token_problem(&shape) {
            warn!(code = %shape.code, detail = ?shape.detail_code(), "stored device token refused; forgetting it");
            if let Err(err) = StoredDeviceToken::remove(&self.opts.state_dir) {
                error!(error = %err, "cannot remove the stored device token");
            }
            return SessionEnd::Retry { was_up: false };
        }
        error!(code = %shape.code, detail = ?shape.detail_code(), message = %shape.message,
            next = ?shape.recommended_next_step(), "gateway refused the connection");
        // So /healthz says why (e.g. a wrong gateway.token), not just "connecting".
        let reason = format!(
            "gateway refused the connection: {} {}",
            shape.code, shape.message
        );
        link_down(events, reason, SessionEnd::Retry { was_up: false }).await
    }

    fn remember_device_token(&self, hello: &Hello) {
        remember_device_token(&self.opts, &self.identity, hello);
    }
}

fn remember_device_token(opts: &GatewayOptions, identity: &DeviceIdentity, hello: &Hello) {
    let Some(token) = &hello.device_token else {
        return;
    };
    let device_id = identity.device_id();
    let role = hello.role.clone().unwrap_or_else(|| "operator".into());
    if StoredDeviceToken::load(&opts.state_dir, &device_id)
        .is_some_and(|t| &t.token == token && t.role == role)
    {
        return;
    }
    let stored = StoredDeviceToken {
        device_id,
        role,
        token: token.clone(),
        scopes: hello.scopes.clone(),
    };
    match stored.save(&opts.state_dir) {
        Ok(()) => info!("stored the device token issued by the gateway"),
        Err(e) => error!(error = %e, "cannot store the device token"),
    }
}

fn is_device_token_problem(shape: &ErrorShape) -> bool {
    matches!(
        shape.detail_code(),
        Some("AUTH_DEVICE_TOKEN_MISMATCH" | "AUTH_SCOPE_MISMATCH")
    )
}

async fn send(events: &mpsc::Sender<GatewayEvent>, ev: GatewayEvent) -> Result<(), ()> {
    events.send(ev).await.map_err(|_| ())
}

/// Tells the engine the link is down and why, then ends the session with `then` (or
/// `Stop` when nobody listens any more).
async fn link_down(
    events: &mpsc::Sender<GatewayEvent>,
    reason: String,
    then: SessionEnd,
) -> SessionEnd {
    match send(events, GatewayEvent::Disconnected { reason }).await {
        Ok(()) => then,
        Err(()) => SessionEnd::Stop,
    }
}

enum SessionEnd {
    /// Shut down, or nobody listens any more.
    Stop,
    /// Reconnect after the backoff; `was_up` resets it first.
    Retry { was_up: bool },
    /// Reconnect after exactly this pause (the gateway said when).
    RetryAfter(Duration),
}

/// The list methods replayed after each connect, with the kind their entries have.
const LIST_METHODS: [(&str, Kind); 3] = [
    ("exec.approval.list", Kind::Exec),
    ("plugin.approval.list", Kind::Plugin),
    ("openclaw.approval.list", Kind::System),
];

/// Every pending approval of every kind, in list order.
async fn replay(conn: &Connection) -> Result<Vec<Approval>, GatewayError> {
    let mut all = Vec::new();
    for (method, kind) in LIST_METHODS {
        let v = match conn.call(method, json!({})).await {
            Ok(v) => v,
            // A gateway without this family (older, or the system agent disabled).
            Err(GatewayError::Rejected { code, message })
                if code == "INVALID_REQUEST" && message.contains("unknown method") =>
            {
                debug!(method, "list method not offered by this gateway");
                continue;
            }
            Err(e) => return Err(e),
        };
        let entries = v
            .as_array()
            .or_else(|| v.get("approvals").and_then(Value::as_array))
            .or_else(|| v.get("items").and_then(Value::as_array))
            .cloned()
            .unwrap_or_default();
        for entry in entries {
            match Approval::from_gateway(kind, &entry) {
                Ok(a) => all.push(a),
                Err(e) => warn!(method, error = %e, "unreadable pending approval skipped"),
            }
        }
    }
    Ok(all)
}

/// Maps one gateway event to what the engine needs; `None` for events it does not.
pub fn translate(ev: &EventFrame) -> Option<GatewayEvent> {
    let (family, what) = ev.event.rsplit_once(".approval.")?;
    let kind = match family {
        "exec" => Kind::Exec,
        "plugin" => Kind::Plugin,
        "openclaw" => Kind::System,
        _ => return None,
    };
    match what {
        "requested" => match Approval::from_gateway(kind, &ev.payload) {
            Ok(a) => Some(GatewayEvent::Requested(a)),
            Err(e) => {
                warn!(event = %ev.event, error = %e, "unreadable approval request skipped");
                None
            }
        },
        "resolved" => {
            let Some(id) = ev.payload.get("id").and_then(Value::as_str) else {
                warn!(event = %ev.event, "resolved event without id skipped");
                return None;
            };
            Some(GatewayEvent::Ended {
                id: ApprovalId(id.to_owned()),
                outcome: resolved_outcome(&ev.payload),
            })
        }
        _ => None,
    }
}

/// `*.approval.resolved` payload → outcome.
///
/// Observed on openclaw 2026.9.6 (events and `dist/exec-approval-manager`): an expiry is
/// broadcast as `decision: "deny"` with `resolvedBy: null` (the gateway force-denies on
/// timeout); the gateway names itself in `resolvedBy` when it ends one without a human:
/// `no-approval-route` (nobody could see it: `NoRoute`), `timeout` (`Expired`),
/// `run-aborted` (the asking run ended: `Cancelled`), `session-evicted` (a system-agent
/// session closed; filed as a timeout there, but nobody's deadline passed: `Cancelled`);
/// system-agent events add `terminalStatus` (`expired`/`cancelled`). A decision by a client
/// carries its display name or client id, and anything else `Decided` elsewhere. An exec
/// cancelled because its run ended is broadcast like an expiry (`resolvedBy: null`) and
/// reads as `Expired` here; the history row (`crate::history`) tells them apart.
pub fn resolved_outcome(p: &Value) -> Outcome {
    let at_ms = p.get("ts").and_then(Value::as_i64).unwrap_or_else(now_ms);
    let resolved_by = p
        .get("resolvedBy")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let terminal = p.get("terminalStatus").and_then(Value::as_str);
    let decision = p
        .get("decision")
        .and_then(Value::as_str)
        .and_then(Decision::parse);
    let cancel = resolved_by.and_then(CancelReason::parse);
    match (decision, resolved_by) {
        _ if cancel.is_some() || terminal == Some("cancelled") => Outcome::Cancelled {
            reason: cancel.unwrap_or(CancelReason::Other),
            at_ms,
        },
        (_, Some("no-approval-route")) => Outcome::NoRoute { at_ms },
        _ if terminal == Some("expired") => Outcome::Expired { at_ms },
        (None, _) | (Some(Decision::Deny), None | Some("timeout")) => Outcome::Expired { at_ms },
        (Some(decision), resolved_by) => Outcome::Decided {
            decision,
            by: Decider::Elsewhere {
                resolved_by: resolved_by.map(str::to_owned),
            },
            at_ms,
        },
    }
}

/// Rows per `approval.history` page: the gateway's maximum.
const HISTORY_PAGE: u64 = 100;

/// Pages one `history_since` reads at most (10 000 rows, newest first). Past that, the
/// oldest rows after the mark are left out, with a warning: a bridge away that long learns
/// the newest of what it missed.
const HISTORY_MAX_PAGES: usize = 100;

#[async_trait]
impl GatewayPort for Client {
    /// Exec and plugin use their own resolve methods; system-agent approvals only have the
    /// kind-agnostic `approval.resolve`. `reviewer` is never sent.
    async fn resolve(
        &self,
        id: &ApprovalId,
        kind: Kind,
        decision: Decision,
    ) -> Result<(), GatewayError> {
        let (method, params) = resolve_request(id, kind, decision);
        let _turn = self
            .resolves
            .acquire()
            .await
            .map_err(|_| GatewayError::Unavailable("the client is shutting down".into()))?;
        let deadline = tokio::time::Instant::now() + RESOLVE_RETRY_WINDOW;
        let mut backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).attempts();
        let result = loop {
            match self.call(method, params.clone()).await {
                Err(GatewayError::Unavailable(why)) => {
                    let pause = backoff.next_pause();
                    if tokio::time::Instant::now() + pause >= deadline {
                        break Err(GatewayError::Unavailable(why));
                    }
                    debug!(%id, error = %why, ?pause, "resolve: gateway unavailable; retrying");
                    tokio::time::sleep(pause).await;
                }
                other => break other,
            }
        };
        match &result {
            Ok(_) => {
                info!(%id, kind = kind.as_str(), %decision, "approval resolved at the gateway")
            }
            Err(e) => warn!(%id, kind = kind.as_str(), %decision, error = %e, "resolve failed"),
        }
        result.map(|_| ())
    }

    /// `exec.approval.request` in two phases: the gateway answers with the id at once and
    /// keeps the approval pending until decided or expired; nobody waits for the decision,
    /// and nothing runs the command whatever it is.
    async fn raise_probe(
        &self,
        command: &str,
        timeout_ms: u64,
    ) -> Result<ApprovalId, GatewayError> {
        let params = json!({
            "command": command, "host": "gateway", "timeoutMs": timeout_ms,
            "twoPhase": true, "requireDeliveryRoute": false,
        });
        let accepted = self.call("exec.approval.request", params).await?;
        let Some(id) = accepted.get("id").and_then(Value::as_str) else {
            return Err(GatewayError::Rejected {
                code: "NO_ID".into(),
                message: format!("exec.approval.request answered without an id: {accepted}"),
            });
        };
        let id = ApprovalId(id.to_owned());
        // The gateway sends `exec.approval.requested` to every approval client except the
        // requester's connection, which is ours: read the probe back from the pending list
        // and hand it to the engine as the event would have (a duplicate is harmless).
        let listed = self.call("exec.approval.list", json!({})).await?;
        let entry = listed
            .as_array()
            .or_else(|| listed.get("approvals").and_then(Value::as_array))
            .or_else(|| listed.get("items").and_then(Value::as_array))
            .and_then(|l| {
                l.iter()
                    .find(|e| e.get("id").and_then(Value::as_str) == Some(id.as_str()))
            });
        match entry.map(|e| Approval::from_gateway(Kind::Exec, e)) {
            Some(Ok(a)) => {
                if let Some(events) = self.events.upgrade() {
                    let _ = send(&events, GatewayEvent::Requested(a)).await;
                }
            }
            Some(Err(e)) => warn!(%id, error = %e, "the probe's pending approval is unreadable"),
            None => warn!(%id, "the probe's approval is not in the pending list"),
        }
        Ok(id)
    }

    /// Walks `approval.history` (all kinds, `limit` 100) from the newest row down, passing
    /// each `nextCursor` back verbatim, and stops at the first page that reaches the mark or
    /// the floor, at the last page, or after `HISTORY_MAX_PAGES`. Unreadable rows are skipped
    /// with a warning. The rows come back oldest first, without duplicates. Any failed call
    /// fails the whole walk (`Unavailable` when not connected), so no mark moves past rows
    /// that were not read.
    async fn history_since(
        &self,
        mark: Option<&HistoryMark>,
        floor_ms: i64,
    ) -> Result<Vec<HistoryRow>, GatewayError> {
        let mut rows: Vec<HistoryRow> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            if pages == HISTORY_MAX_PAGES {
                warn!(
                    pages,
                    rows = rows.len(),
                    mark = ?mark.map(ToString::to_string),
                    "approval history: page cap reached; older rows after the mark are not read"
                );
                break;
            }
            pages += 1;
            let mut params = json!({"limit": HISTORY_PAGE});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let answer = self.call("approval.history", params).await?;
            let Some(items) = answer.get("items").and_then(Value::as_array) else {
                return Err(GatewayError::Rejected {
                    code: "UNREADABLE_ANSWER".into(),
                    message: "approval.history answered without `items`".into(),
                });
            };
            let page = take_page(items, mark, floor_ms);
            rows.extend(page.rows);
            if page.reached_end {
                break;
            }
            match answer.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        rows.sort_by_key(HistoryRow::mark);
        rows.dedup_by(|a, b| a.id == b.id);
        debug!(pages, rows = rows.len(), "approval history read");
        Ok(rows)
    }
}

/// The method and params that resolve one approval.
pub fn resolve_request(id: &ApprovalId, kind: Kind, decision: Decision) -> (&'static str, Value) {
    match kind {
        Kind::Exec => (
            "exec.approval.resolve",
            json!({"id": id.as_str(), "decision": decision.as_str()}),
        ),
        Kind::Plugin => (
            "plugin.approval.resolve",
            json!({"id": id.as_str(), "decision": decision.as_str()}),
        ),
        Kind::System => (
            "approval.resolve",
            json!({"id": id.as_str(), "kind": kind.as_str(), "decision": decision.as_str()}),
        ),
    }
}

/// What `probe` found out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeReport {
    pub url: String,
    pub device_id: String,
    /// The handshake succeeded.
    pub auth_ok: bool,
    pub protocol: Option<u64>,
    pub server_version: Option<String>,
    /// Scopes the gateway granted this socket.
    pub granted: Vec<String>,
    /// Needed scopes it did not grant (non-empty: the bridge would be blind).
    pub missing: Vec<String>,
    pub pairing_required: bool,
    pub pairing_request_id: Option<String>,
    /// Pending approvals visible right now (exec, plugin, system), when connected.
    pub pending: Option<usize>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Connects once (retrying the gateway's start-up UNAVAILABLE for up to `wait`), reports
/// what the gateway granted, and disconnects. Only an unusable state dir is an `Err`.
pub async fn probe(opts: &GatewayOptions, wait: Duration) -> std::io::Result<ProbeReport> {
    let identity = DeviceIdentity::load_or_create(&opts.state_dir)?;
    let mut report = ProbeReport {
        url: opts.url.clone(),
        device_id: identity.device_id(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let copts = opts.connect_options(&identity);
        match Connection::open(&copts).await {
            Ok((conn, hello, _rx)) => {
                remember_device_token(opts, &identity, &hello);
                report.auth_ok = true;
                report.protocol = Some(hello.protocol);
                report.server_version = hello.server_version.clone();
                report.missing = hello.missing(&opts.scopes);
                report.granted = hello.scopes;
                report.pending = replay(&conn).await.ok().map(|v| v.len());
                conn.close();
                return Ok(report);
            }
            Err(ConnectError::Refused(shape))
                if shape.is_retryable_unavailable() && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(
                    shape.retry_after_ms.unwrap_or(500).clamp(100, 2_000),
                ))
                .await;
            }
            Err(ConnectError::Transport(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(ConnectError::Refused(shape)) => {
                report.pairing_required = shape.is_pairing_required();
                report.pairing_request_id = shape.pairing_request_id();
                report.error = Some(format!("{}: {}", shape.code, shape.message));
                return Ok(report);
            }
            Err(e) => {
                report.error = Some(e.to_string());
                return Ok(report);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, payload: Value) -> EventFrame {
        EventFrame {
            event: name.into(),
            payload,
            seq: None,
        }
    }

    #[test]
    fn requested_events_become_approvals_of_their_family() {
        let e = translate(&ev(
            "exec.approval.requested",
            json!({"id": "a-1", "request": {"command": "ls", "allowedDecisions": ["allow-once", "deny"]}, "createdAtMs": 1}),
        ));
        let Some(GatewayEvent::Requested(a)) = e else {
            panic!("{e:?}")
        };
        assert_eq!((a.kind, a.command.as_str()), (Kind::Exec, "ls"));
        let e = translate(&ev(
            "plugin.approval.requested",
            json!({"id": "plugin:x", "request": {"title": "Mail"}}),
        ));
        assert!(matches!(
            e,
            Some(GatewayEvent::Requested(Approval {
                kind: Kind::Plugin,
                ..
            }))
        ));
        let e = translate(&ev(
            "openclaw.approval.requested",
            json!({"id": "s-1", "request": {"title": "Change"}}),
        ));
        assert!(matches!(
            e,
            Some(GatewayEvent::Requested(Approval {
                kind: Kind::System,
                ..
            }))
        ));
        assert_eq!(translate(&ev("tick", json!({}))), None);
        assert_eq!(
            translate(&ev("exec.approval.requested", json!({"request": {}}))),
            None
        );
    }

    #[test]
    fn resolved_with_a_decision_is_decided_elsewhere_and_the_gateways_own_ends_are_named() {
        let ended = |event: &str, payload: Value| match translate(&ev(event, payload)) {
            Some(GatewayEvent::Ended { outcome, .. }) => outcome,
            other => panic!("{other:?}"),
        };
        let e = translate(&ev(
            "exec.approval.resolved",
            json!({"id": "a-1", "decision": "allow-once", "resolvedBy": "cli", "ts": 7}),
        ));
        assert_eq!(
            e,
            Some(GatewayEvent::Ended {
                id: "a-1".into(),
                outcome: Outcome::Decided {
                    decision: Decision::AllowOnce,
                    by: Decider::Elsewhere {
                        resolved_by: Some("cli".into())
                    },
                    at_ms: 7
                }
            })
        );
        // Expiry as the gateway broadcasts it: a deny nobody made.
        let exec = "exec.approval.resolved";
        assert_eq!(
            ended(
                exec,
                json!({"id": "a-2", "decision": "deny", "resolvedBy": null, "ts": 9})
            ),
            Outcome::Expired { at_ms: 9 }
        );
        assert_eq!(
            ended(
                exec,
                json!({"id": "a-2", "decision": "deny", "resolvedBy": "timeout", "ts": 9})
            ),
            Outcome::Expired { at_ms: 9 }
        );
        assert_eq!(
            ended(exec, json!({"id": "a-2", "ts": 9})),
            Outcome::Expired { at_ms: 9 },
            "no decision at all"
        );
        // Nobody could see it: denied at once, not expired.
        assert_eq!(
            ended(
                exec,
                json!({"id": "a-3", "decision": "deny", "resolvedBy": "no-approval-route", "ts": 9})
            ),
            Outcome::NoRoute { at_ms: 9 }
        );
        assert_eq!(
            ended(
                exec,
                json!({"id": "a-4", "decision": "deny", "resolvedBy": "run-aborted", "ts": 9})
            ),
            Outcome::Cancelled {
                reason: CancelReason::RunAborted,
                at_ms: 9
            }
        );
        let system = "openclaw.approval.resolved";
        assert_eq!(
            ended(
                system,
                json!({"id": "s", "decision": "deny", "resolvedBy": "x", "terminalStatus": "cancelled", "ts": 9})
            ),
            Outcome::Cancelled {
                reason: CancelReason::Other,
                at_ms: 9
            }
        );
        assert_eq!(
            ended(
                system,
                json!({"id": "s", "decision": "deny", "resolvedBy": "session-evicted", "terminalStatus": "expired", "ts": 9})
            ),
            Outcome::Cancelled {
                reason: CancelReason::SessionEvicted,
                at_ms: 9
            },
            "an evicted session's approval did not time out"
        );
        assert_eq!(
            ended(
                system,
                json!({"id": "s", "decision": "deny", "resolvedBy": null, "terminalStatus": "expired", "ts": 9})
            ),
            Outcome::Expired { at_ms: 9 }
        );
        assert!(matches!(
            ended(
                "plugin.approval.resolved",
                json!({"id": "plugin:p", "decision": "deny", "resolvedBy": "ops", "ts": 9})
            ),
            Outcome::Decided {
                decision: Decision::Deny,
                ..
            }
        ));
    }

    #[test]
    fn resolve_uses_the_kind_specific_method_and_never_a_reviewer() {
        let id = ApprovalId::from("plugin:abc");
        let (m, p) = resolve_request(&id, Kind::Plugin, Decision::Deny);
        assert_eq!(
            (m, p),
            (
                "plugin.approval.resolve",
                json!({"id": "plugin:abc", "decision": "deny"})
            )
        );
        let (m, p) = resolve_request(&"x".into(), Kind::Exec, Decision::AllowOnce);
        assert_eq!(
            (m, p),
            (
                "exec.approval.resolve",
                json!({"id": "x", "decision": "allow-once"})
            )
        );
        let (m, p) = resolve_request(&"s".into(), Kind::System, Decision::AllowAlways);
        assert_eq!(
            (m, p),
            (
                "approval.resolve",
                json!({"id": "s", "kind": "system-agent", "decision": "allow-always"})
            )
        );
    }

    #[test]
    fn options_debug_redacts_the_token() {
        let o = GatewayOptions::new("ws://x", Some("hunter2".into()), "/tmp/x");
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    /// A one-socket-at-a-time fake gateway: sends garbage, then the challenge, then answers
    /// `connect` with whatever `answer` returns for the params.
    async fn fake_gateway(answer: fn(&Value) -> Value) -> (String, mpsc::UnboundedReceiver<Value>) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                    ws.send(Message::text("{not json")).await.unwrap();
                    ws.send(Message::text(r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n1","ts":1000}}"#))
                        .await
                        .unwrap();
                    while let Some(Ok(Message::Text(t))) = ws.next().await {
                        let req: Value = serde_json::from_str(&t).unwrap();
                        let _ = seen_tx.send(req.clone());
                        let res = answer(&req);
                        ws.send(Message::text(res.to_string())).await.unwrap();
                    }
                });
            }
        });
        (url, seen_rx)
    }

    #[tokio::test]
    async fn pairing_required_is_reported_with_its_request_id_and_retried() {
        let (url, mut seen) = fake_gateway(|req| {
            json!({"type": "res", "id": req["id"], "ok": false, "error": {
                "code": "NOT_PAIRED", "message": "pairing required (requestId: req-42)",
                "details": {"code": "PAIRING_REQUIRED", "requestId": "req-42", "recommendedNextStep": "wait_then_retry"}}})
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut opts = GatewayOptions::new(url, Some("shared-secret".into()), dir.path());
        opts.max_backoff = Duration::from_millis(50);
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, stop_rx) = broadcast::channel(1);
        let (client, task) = Client::spawn(opts, tx, stop_rx).unwrap();
        for _ in 0..2 {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap();
            assert_eq!(
                ev,
                Some(GatewayEvent::PairingRequired {
                    request_id: Some("req-42".into())
                })
            );
        }
        let connect = seen.recv().await.unwrap();
        assert_eq!(connect["method"], "connect");
        assert_eq!(connect["params"]["auth"], json!({"token": "shared-secret"}));
        assert_eq!(connect["params"]["device"]["id"], client.device_id());
        assert_eq!(connect["params"]["device"]["nonce"], "n1");
        assert_eq!(connect["params"]["device"]["signedAt"], 1000);
        assert!(!client.is_connected());
        assert_eq!(
            client
                .resolve(&"x".into(), Kind::Exec, Decision::AllowOnce)
                .await,
            Err(GatewayError::Unavailable("not connected".into()))
        );
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn hello_without_needed_scopes_reports_them_missing() {
        let (url, _seen) = fake_gateway(|req| {
            let payload = if req["method"] == "connect" {
                json!({"type": "hello-ok", "protocol": 4, "server": {"version": "t"},
                    "auth": {"role": "operator", "scopes": ["operator.read", "operator.approvals"]},
                    "policy": {"tickIntervalMs": 30000}})
            } else {
                json!([])
            };
            json!({"type": "res", "id": req["id"], "ok": true, "payload": payload})
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, stop_rx) = broadcast::channel(1);
        let (_client, task) =
            Client::spawn(GatewayOptions::new(url, None, dir.path()), tx, stop_rx).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ev,
            GatewayEvent::Connected {
                scopes: vec!["operator.read".into(), "operator.approvals".into()],
                missing: vec!["operator.admin".into()]
            }
        );
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev, GatewayEvent::Snapshot(vec![]));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// One terminal row as `approval.history` lists it.
    fn hist(ms: i64, id: &str) -> Value {
        json!({
            "id": id, "status": "denied", "reason": "no-route", "decision": "deny",
            "presentation": {"kind": "exec", "commandText": format!("echo {id}"),
                "allowedDecisions": ["allow-once", "deny"]},
            "createdAtMs": ms - 1, "expiresAtMs": ms + 1_800_000, "resolvedAtMs": ms,
            "source": {"agentId": "main", "sessionKey": "agent:main:x"},
            "resolver": {"kind": "system", "id": "no-approval-route"}
        })
    }

    fn hello() -> Value {
        json!({"type": "hello-ok", "protocol": 4, "server": {"version": "t"},
            "auth": {"role": "operator", "scopes": NEEDED_SCOPES},
            "policy": {"tickIntervalMs": 30000}})
    }

    /// Three pages, newest first; page 2 shares a millisecond with page 1 and page 1 holds
    /// an unreadable row.
    fn three_pages(req: &Value) -> Value {
        let payload = match (req["method"].as_str(), req["params"]["cursor"].as_str()) {
            (Some("connect"), _) => hello(),
            (Some("approval.history"), None) => json!({
                "items": [hist(50, "e"), {"id": "broken", "status": "denied"}, hist(40, "d")],
                "nextCursor": "page-2"}),
            (Some("approval.history"), Some("page-2")) => json!({
                "items": [hist(40, "c"), hist(30, "b")], "nextCursor": "page-3"}),
            (Some("approval.history"), Some("page-3")) => json!({"items": [hist(20, "a")]}),
            (Some("approval.history"), Some(other)) => {
                json!({"items": [hist(1, &format!("unexpected cursor {other}"))]})
            }
            _ => json!([]),
        };
        json!({"type": "res", "id": req["id"], "ok": true, "payload": payload})
    }

    /// A history that never ends: every page points at another.
    fn endless(req: &Value) -> Value {
        let payload = match req["method"].as_str() {
            Some("connect") => hello(),
            Some("approval.history") => {
                let n: i64 = req["params"]["cursor"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                json!({"items": [hist(1_000_000 - n, &format!("r{n}"))],
                    "nextCursor": (n + 1).to_string()})
            }
            _ => json!([]),
        };
        json!({"type": "res", "id": req["id"], "ok": true, "payload": payload})
    }

    /// A connected client of the fake at `url`, past its snapshot.
    async fn connected(
        url: String,
        dir: &std::path::Path,
    ) -> (
        Arc<Client>,
        broadcast::Sender<()>,
        mpsc::Receiver<GatewayEvent>,
    ) {
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, stop_rx) = broadcast::channel(1);
        let (client, _task) =
            Client::spawn(GatewayOptions::new(url, None, dir), tx, stop_rx).unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if matches!(ev, GatewayEvent::Snapshot(_)) {
                return (client, stop, rx);
            }
        }
    }

    /// The `approval.history` requests the fake saw so far.
    fn history_requests(seen: &mut mpsc::UnboundedReceiver<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(req) = seen.try_recv() {
            if req["method"] == "approval.history" {
                out.push(req["params"].clone());
            }
        }
        out
    }

    fn ids(rows: &[HistoryRow]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[tokio::test]
    async fn history_pages_with_the_gateways_cursor_and_answers_oldest_first() {
        let (url, mut seen) = fake_gateway(three_pages).await;
        let dir = tempfile::tempdir().unwrap();
        let (client, stop, _rx) = connected(url, dir.path()).await;

        let all = client.history_since(None, 0).await.unwrap();
        assert_eq!(
            ids(&all),
            ["a", "b", "c", "d", "e"],
            "the broken row is skipped"
        );
        assert_eq!(all[0].command, "echo a");
        assert_eq!(
            history_requests(&mut seen),
            [
                json!({"limit": 100}),
                json!({"limit": 100, "cursor": "page-2"}),
                json!({"limit": 100, "cursor": "page-3"})
            ],
            "every page asked with the cursor exactly as given"
        );

        // The next call from the newest row: nothing new, and one page was enough.
        let mark = all.last().unwrap().mark();
        assert!(
            client
                .history_since(Some(&mark), 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(history_requests(&mut seen).len(), 1);
        stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn history_stops_at_the_mark_even_inside_a_shared_millisecond() {
        let (url, mut seen) = fake_gateway(three_pages).await;
        let dir = tempfile::tempdir().unwrap();
        let (client, stop, _rx) = connected(url, dir.path()).await;

        // "c" and "d" share 40 ms: after c comes d, not c again.
        let mark = HistoryMark {
            resolved_at_ms: 40,
            id: "c".into(),
        };
        let rows = client.history_since(Some(&mark), 0).await.unwrap();
        assert_eq!(ids(&rows), ["d", "e"]);
        assert_eq!(
            history_requests(&mut seen).len(),
            2,
            "page 2 reached the mark: page 3 is never asked for"
        );

        // The floor cuts the same way: nothing resolved before it, inclusive.
        let rows = client.history_since(None, 40).await.unwrap();
        assert_eq!(ids(&rows), ["c", "d", "e"]);
        assert_eq!(history_requests(&mut seen).len(), 2);
        stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn an_endless_history_is_read_up_to_the_page_cap_newest_first() {
        let (url, mut seen) = fake_gateway(endless).await;
        let dir = tempfile::tempdir().unwrap();
        let (client, stop, _rx) = connected(url, dir.path()).await;
        let rows = client.history_since(None, 0).await.unwrap();
        assert_eq!(rows.len(), HISTORY_MAX_PAGES);
        assert_eq!(history_requests(&mut seen).len(), HISTORY_MAX_PAGES);
        assert_eq!(
            rows.last().unwrap().id.as_str(),
            "r0",
            "the newest row is there, the oldest ones are left out"
        );
        stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn history_without_a_connection_is_unavailable() {
        let (url, _seen) = fake_gateway(|req| {
            json!({"type": "res", "id": req["id"], "ok": false, "error": {
                "code": "INVALID_REQUEST", "message": "unauthorized"}})
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let (stop, stop_rx) = broadcast::channel(1);
        let (client, _task) =
            Client::spawn(GatewayOptions::new(url, None, dir.path()), tx, stop_rx).unwrap();
        assert_eq!(
            client.history_since(None, 0).await,
            Err(GatewayError::Unavailable("not connected".into()))
        );
        stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_raised_probe_reaches_the_engine_though_the_gateway_skips_its_requester() {
        // The real gateway sends `exec.approval.requested` to every approval client but
        // the one that raised it; this fake sends it to nobody, and lists it once raised.
        static RAISED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let (url, _seen) = fake_gateway(|req| {
            let payload = match req["method"].as_str() {
                Some("connect") => hello(),
                Some("exec.approval.request") => {
                    RAISED.store(true, std::sync::atomic::Ordering::SeqCst);
                    json!({"status": "accepted", "id": "p1", "createdAtMs": 1, "expiresAtMs": 90_001})
                }
                Some("exec.approval.list") if RAISED.load(std::sync::atomic::Ordering::SeqCst) => {
                    json!([{"id": "p1", "request": {"command": "true # probe", "host": "gateway"},
                        "createdAtMs": 1, "expiresAtMs": 90_001}])
                }
                _ => json!([]),
            };
            json!({"type": "res", "id": req["id"], "ok": true, "payload": payload})
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let (client, stop, mut rx) = connected(url, dir.path()).await;
        assert_eq!(
            client.raise_probe("true # probe", 90_000).await,
            Ok("p1".into())
        );
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let GatewayEvent::Requested(a) = ev else {
            panic!("not a request: {ev:?}")
        };
        assert_eq!((a.id.as_str(), a.command.as_str()), ("p1", "true # probe"));
        stop.send(()).unwrap();
    }
}
