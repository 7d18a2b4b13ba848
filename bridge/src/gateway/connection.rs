//! One authenticated WebSocket connection to the gateway: waits for `connect.challenge`,
//! answers `connect` with the signed device identity, reads `hello-ok`, then multiplexes
//! request/response calls by id and hands every event frame to one channel.
//!
//! The connection does not reconnect; `client` owns that. When the socket ends the event
//! channel closes and every pending call fails with `Unavailable`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, warn};

use super::frames::{self, ErrorShape, EventFrame, Inbound, Request};
use super::identity::{DeviceIdentity, SignedFields, signature_payload_v3};
use super::{CAPS, GatewayError};

/// The only protocol version this client speaks.
pub const PROTOCOL: u64 = 4;

/// Everything one handshake needs. `Debug` redacts the tokens.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `ws://` or `wss://` URL of the gateway.
    pub url: String,
    /// The gateway's shared token (`gateway.auth.token`), sent as `auth.token`.
    pub token: Option<String>,
    /// A device token from an earlier `hello-ok`, sent as `auth.deviceToken`.
    pub device_token: Option<String>,
    pub identity: DeviceIdentity,
    /// From the gateway's fixed registry (`gateway-client`, `cli`, ...).
    pub client_id: String,
    /// From the gateway's fixed registry (`backend`, `cli`, ...).
    pub client_mode: String,
    /// Shown by the gateway as `resolvedBy` when this client decides.
    pub display_name: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    pub caps: Vec<String>,
    /// SHA-256 of the server's DER certificate; when set, replaces WebPKI validation.
    pub tls_pin: Option<[u8; 32]>,
    /// Limit for socket open + challenge + hello.
    pub handshake_timeout: Duration,
    /// Default limit for `call`.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "device_token",
                &self.device_token.as_ref().map(|_| "<redacted>"),
            )
            .field("device_id", &self.identity.device_id())
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field("tls_pin", &self.tls_pin.map(hex::encode))
            .finish()
    }
}

impl ConnectOptions {
    /// An operator connection with the bridge's defaults: `gateway-client`/`backend`,
    /// scopes `NEEDED_SCOPES`, caps `CAPS`.
    pub fn operator(
        url: impl Into<String>,
        token: Option<String>,
        identity: DeviceIdentity,
    ) -> Self {
        ConnectOptions {
            url: url.into(),
            token,
            device_token: None,
            identity,
            client_id: "gateway-client".into(),
            client_mode: "backend".into(),
            display_name: Some("approval-bridge".into()),
            role: "operator".into(),
            scopes: super::NEEDED_SCOPES.iter().map(|s| s.to_string()).collect(),
            caps: CAPS.iter().map(|s| s.to_string()).collect(),
            tls_pin: None,
            handshake_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The `connect` params for a challenge; public so tests can check the shape.
    pub fn connect_params(&self, nonce: &str, signed_at_ms: i64) -> Value {
        let platform = std::env::consts::OS;
        let device_id = self.identity.device_id();
        // The signature binds the token presented first: shared token, else device token.
        let sig_token = self
            .token
            .as_deref()
            .or(self.device_token.as_deref())
            .unwrap_or("");
        let payload = signature_payload_v3(&SignedFields {
            device_id: &device_id,
            client_id: &self.client_id,
            client_mode: &self.client_mode,
            role: &self.role,
            scopes: &self.scopes,
            signed_at_ms,
            token: sig_token,
            nonce,
            platform,
            device_family: "",
        });
        let mut auth = serde_json::Map::new();
        if let Some(t) = &self.token {
            auth.insert("token".into(), json!(t));
        }
        if let Some(t) = &self.device_token {
            auth.insert("deviceToken".into(), json!(t));
        }
        let mut client = json!({
            "id": self.client_id,
            "version": env!("CARGO_PKG_VERSION"),
            "platform": platform,
            "mode": self.client_mode,
        });
        if let Some(name) = &self.display_name {
            client["displayName"] = json!(name);
        }
        json!({
            "minProtocol": PROTOCOL,
            "maxProtocol": PROTOCOL,
            "client": client,
            "role": self.role,
            "scopes": self.scopes,
            "caps": self.caps,
            "auth": auth,
            "userAgent": concat!("approval-bridge/", env!("CARGO_PKG_VERSION")),
            "device": {
                "id": device_id,
                "publicKey": self.identity.public_key_b64(),
                "signature": self.identity.sign(&payload),
                "signedAt": signed_at_ms,
                "nonce": nonce,
            },
        })
    }
}

/// What `hello-ok` told us.
#[derive(Clone, PartialEq)]
pub struct Hello {
    pub protocol: u64,
    pub server_version: Option<String>,
    pub role: Option<String>,
    /// The live authority of this socket.
    pub scopes: Vec<String>,
    /// Issued after pairing; persist and present on later connects.
    pub device_token: Option<String>,
    pub methods: Vec<String>,
    pub tick_interval_ms: Option<u64>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("protocol", &self.protocol)
            .field("server_version", &self.server_version)
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .field(
                "device_token",
                &self.device_token.as_ref().map(|_| "<redacted>"),
            )
            .field("methods", &self.methods.len())
            .finish()
    }
}

impl Hello {
    pub fn from_payload(p: &Value) -> Hello {
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let auth = p.get("auth");
        Hello {
            protocol: p.get("protocol").and_then(Value::as_u64).unwrap_or(0),
            server_version: p
                .pointer("/server/version")
                .and_then(Value::as_str)
                .map(str::to_owned),
            role: auth
                .and_then(|a| a.get("role"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            scopes: strings(auth.and_then(|a| a.get("scopes"))),
            device_token: auth
                .and_then(|a| a.get("deviceToken"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            methods: strings(p.pointer("/features/methods")),
            tick_interval_ms: p.pointer("/policy/tickIntervalMs").and_then(Value::as_u64),
        }
    }

    /// Needed scopes the gateway did not grant.
    pub fn missing(&self, needed: &[String]) -> Vec<String> {
        needed
            .iter()
            .filter(|s| !self.scopes.contains(s))
            .cloned()
            .collect()
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Socket, TLS or HTTP upgrade failure.
    #[error("transport: {0}")]
    Transport(String),
    /// The gateway answered `connect` with an error (auth, pairing, UNAVAILABLE, ...).
    #[error("connect refused: {}: {}", .0.code, .0.message)]
    Refused(ErrorShape),
    #[error("handshake timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(String),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, ErrorShape>>>>>;

/// A live, authenticated connection. Cheap to share behind an `Arc`.
pub struct Connection {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    closed: watch::Receiver<Option<String>>,
    request_timeout: Duration,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Connection {
    /// Opens the socket and completes the handshake. Events arrive on the returned
    /// receiver until the connection ends, when it yields `None`.
    pub async fn open(
        opts: &ConnectOptions,
    ) -> Result<(Connection, Hello, mpsc::UnboundedReceiver<EventFrame>), ConnectError> {
        tokio::time::timeout(opts.handshake_timeout, Self::open_inner(opts))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    async fn open_inner(
        opts: &ConnectOptions,
    ) -> Result<(Connection, Hello, mpsc::UnboundedReceiver<EventFrame>), ConnectError> {
        let connector = tls::connector(&opts.url, opts.tls_pin).map_err(ConnectError::Transport)?;
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(32 << 20);
        config.max_frame_size = Some(32 << 20);
        let (mut ws, _resp) = tokio_tungstenite::connect_async_tls_with_config(
            opts.url.as_str(),
            Some(config),
            true,
            connector,
        )
        .await
        .map_err(|e| ConnectError::Transport(e.to_string()))?;

        let (nonce, ts) = loop {
            let frame = next_frame(&mut ws).await?;
            match frame {
                Inbound::Event(ev) if ev.event == "connect.challenge" => {
                    let nonce = ev
                        .payload
                        .get("nonce")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let ts = ev
                        .payload
                        .get("ts")
                        .and_then(Value::as_i64)
                        .filter(|t| *t >= 0);
                    match (nonce, ts) {
                        (Some(n), Some(t)) if !n.is_empty() => break (n, t),
                        _ => {
                            return Err(ConnectError::Protocol(
                                "malformed connect.challenge".into(),
                            ));
                        }
                    }
                }
                other => debug!(?other, "frame before connect.challenge ignored"),
            }
        };

        let params = opts.connect_params(&nonce, ts);
        let connect_id = format!("connect-{}", uuid::Uuid::new_v4().simple());
        let text = serde_json::to_string(&Request::new(&connect_id, "connect", &params))
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        ws.send(Message::text(text))
            .await
            .map_err(|e| ConnectError::Transport(e.to_string()))?;

        let mut early_events = Vec::new();
        let hello = loop {
            match next_frame(&mut ws).await? {
                Inbound::Res(r) if r.id == connect_id => {
                    if r.ok {
                        break Hello::from_payload(&r.payload.unwrap_or(Value::Null));
                    }
                    let err = r.error.unwrap_or(ErrorShape {
                        code: "UNKNOWN".into(),
                        message: "connect failed without an error".into(),
                        details: None,
                        retryable: None,
                        retry_after_ms: None,
                    });
                    let _ = ws.close(None).await;
                    return Err(ConnectError::Refused(err));
                }
                Inbound::Event(ev) => early_events.push(ev),
                other => debug!(?other, "frame before hello-ok ignored"),
            }
        };
        if hello.protocol != PROTOCOL {
            let _ = ws.close(None).await;
            return Err(ConnectError::Protocol(format!(
                "gateway speaks protocol {}",
                hello.protocol
            )));
        }

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        for ev in early_events {
            let _ = ev_tx.send(ev);
        }
        let (closed_tx, closed_rx) = watch::channel(None);
        let pending: Pending = Arc::default();
        // No frame for this long means a dead link: the gateway ticks every tickIntervalMs.
        let idle = Duration::from_millis(hello.tick_interval_ms.unwrap_or(30_000).max(1_000) * 3);
        tokio::spawn(pump(ws, out_rx, ev_tx, pending.clone(), closed_tx, idle));
        let conn = Connection {
            out: out_tx,
            pending,
            next_id: AtomicU64::new(1),
            closed: closed_rx,
            request_timeout: opts.request_timeout,
        };
        Ok((conn, hello, ev_rx))
    }

    /// Calls `method` with the default timeout.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, GatewayError> {
        self.call_timeout(method, params, Some(self.request_timeout))
            .await
    }

    /// Calls `method`; `None` waits as long as the connection lives (for calls that return
    /// only when something happens, like `exec.approval.request`).
    pub async fn call_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, GatewayError> {
        self.call_raw(method, params, timeout)
            .await
            .map_err(|e| match e {
                CallError::Gateway(shape) => shape.classify(),
                CallError::Unavailable(why) => GatewayError::Unavailable(why),
            })
    }

    /// Like `call_timeout`, keeping the gateway's full error shape.
    pub async fn call_raw(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let text = match serde_json::to_string(&Request::new(&id, method, &params)) {
            Ok(t) => t,
            Err(e) => {
                lock(&self.pending).remove(&id);
                return Err(CallError::Unavailable(format!(
                    "cannot encode {method}: {e}"
                )));
            }
        };
        if self.is_closed() || self.out.send(Message::text(text)).is_err() {
            lock(&self.pending).remove(&id);
            return Err(CallError::Unavailable("not connected".into()));
        }
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r,
                Err(_) => {
                    lock(&self.pending).remove(&id);
                    return Err(CallError::Unavailable(format!(
                        "{method} timed out after {t:?}"
                    )));
                }
            },
            None => rx.await,
        };
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(shape)) => Err(CallError::Gateway(shape)),
            Err(_) => Err(CallError::Unavailable("connection closed".into())),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Waits until the socket has ended; returns why.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        match rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "connection task ended".into(),
        }
    }

    /// Closes the socket politely; the event channel then ends.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A failed call with the gateway's error shape kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("{}: {}", .0.code, .0.message)]
    Gateway(ErrorShape),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the next parseable text frame during the handshake, skipping bad ones.
async fn next_frame(ws: &mut Ws) -> Result<Inbound, ConnectError> {
    loop {
        match ws.next().await {
            None => return Err(ConnectError::Transport("closed during handshake".into())),
            Some(Err(e)) => return Err(ConnectError::Transport(e.to_string())),
            Some(Ok(Message::Text(t))) => match frames::parse(&t) {
                Ok(f) => return Ok(f),
                Err(e) => warn!(error = %e, len = t.len(), "unreadable gateway frame skipped"),
            },
            Some(Ok(Message::Close(c))) => {
                let why = c
                    .map(|c| format!("{} {}", u16::from(c.code), c.reason))
                    .unwrap_or_default();
                return Err(ConnectError::Transport(format!(
                    "closed during handshake: {why}"
                )));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Owns the socket after the handshake: writes queued frames, routes responses to their
/// callers and events to the channel, and records why it ended.
async fn pump(
    ws: Ws,
    mut out_rx: mpsc::UnboundedReceiver<Message>,
    ev_tx: mpsc::UnboundedSender<EventFrame>,
    pending: Pending,
    closed_tx: watch::Sender<Option<String>>,
    idle: Duration,
) {
    let (mut sink, mut stream) = ws.split();
    let reason = loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(msg) => {
                    let closing = matches!(msg, Message::Close(_));
                    if let Err(e) = sink.send(msg).await {
                        break format!("send failed: {e}");
                    }
                    if closing {
                        break "closed by us".to_owned();
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break "closed by us".to_owned();
                }
            },
            msg = tokio::time::timeout(idle, stream.next()) => match msg {
                Err(_) => break format!("no frame for {idle:?}"),
                Ok(None) => break "connection closed".to_owned(),
                Ok(Some(Err(e))) => break format!("read failed: {e}"),
                Ok(Some(Ok(Message::Text(t)))) => match frames::parse(&t) {
                    Ok(Inbound::Res(r)) => {
                        let waiter = lock(&pending).remove(&r.id);
                        match waiter {
                            Some(tx) => {
                                let result = if r.ok {
                                    Ok(r.payload.unwrap_or(Value::Null))
                                } else {
                                    Err(r.error.unwrap_or(ErrorShape {
                                        code: "UNKNOWN".into(),
                                        message: "failed without an error".into(),
                                        details: None,
                                        retryable: None,
                                        retry_after_ms: None,
                                    }))
                                };
                                let _ = tx.send(result);
                            }
                            None => debug!(id = %r.id, "response for no pending call"),
                        }
                    }
                    Ok(Inbound::Event(ev)) => {
                        let _ = ev_tx.send(ev);
                    }
                    Ok(Inbound::Req { method, .. }) => debug!(?method, "gateway request ignored"),
                    Err(e) => warn!(error = %e, len = t.len(), "unreadable gateway frame skipped"),
                },
                Ok(Some(Ok(Message::Close(c)))) => {
                    break match c {
                        Some(c) => format!("closed by gateway: {} {}", u16::from(c.code), c.reason),
                        None => "closed by gateway".to_owned(),
                    };
                }
                Ok(Some(Ok(_))) => {}
            },
        }
    };
    debug!(%reason, "gateway connection ended");
    let _ = closed_tx.send(Some(reason));
    // Dropping the waiters fails their calls with "connection closed".
    lock(&pending).clear();
    drop(ev_tx);
}

/// Sha-256 of a DER certificate, as `tls_pin` expects it.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio_tungstenite::Connector;

    /// `None` for `ws://`; for `wss://` a rustls config with our own provider (so no
    /// process-wide default is needed), pinned when a fingerprint is given.
    pub fn connector(url: &str, pin: Option<[u8; 32]>) -> Result<Option<Connector>, String> {
        if !url.starts_with("wss://") {
            if url.starts_with("ws://") {
                return Ok(Some(Connector::Plain));
            }
            return Err(format!(
                "unsupported gateway URL scheme (want ws:// or wss://): {url}"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match pin {
            Some(sha256) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { sha256, provider }))
                .with_no_client_auth(),
            None => {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Some(Connector::Rustls(Arc::new(config))))
    }

    /// Accepts exactly the certificate whose DER SHA-256 is pinned; signatures are still
    /// verified, so the peer must hold that certificate's key.
    #[derive(Debug)]
    struct Pinned {
        sha256: [u8; 32],
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if super::cert_fingerprint(end_entity.as_ref()) == self.sha256 {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(
                    "gateway certificate does not match the pinned fingerprint".into(),
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_params_carry_scopes_caps_and_a_verifiable_signature() {
        let id = DeviceIdentity::generate();
        let mut o = ConnectOptions::operator("ws://127.0.0.1:1", Some("shared".into()), id.clone());
        o.device_token = Some("dev-tok".into());
        let p = o.connect_params("nonce-1", 42);
        assert_eq!(p["minProtocol"], 4);
        assert_eq!(p["maxProtocol"], 4);
        assert_eq!(p["role"], "operator");
        assert_eq!(p["client"]["id"], "gateway-client");
        assert_eq!(p["client"]["mode"], "backend");
        assert_eq!(
            p["scopes"],
            json!(["operator.read", "operator.approvals", "operator.admin"])
        );
        assert_eq!(
            p["caps"],
            json!(["exec-approvals", "plugin-approvals", "approvals"])
        );
        assert_eq!(
            p["auth"],
            json!({"token": "shared", "deviceToken": "dev-tok"})
        );
        assert_eq!(p["device"]["id"], id.device_id());
        assert_eq!(p["device"]["signedAt"], 42);
        assert_eq!(p["device"]["nonce"], "nonce-1");
        let expected = format!(
            "v3|{}|gateway-client|backend|operator|operator.read,operator.approvals,operator.admin|42|shared|nonce-1|{}|",
            id.device_id(),
            std::env::consts::OS
        );
        assert_eq!(p["device"]["signature"], id.sign(&expected));
    }

    #[test]
    fn without_shared_token_the_device_token_is_signed() {
        let id = DeviceIdentity::generate();
        let mut o = ConnectOptions::operator("ws://x", None, id.clone());
        o.device_token = Some("dev-tok".into());
        let p = o.connect_params("n", 1);
        assert_eq!(p["auth"], json!({"deviceToken": "dev-tok"}));
        let sig_payload = format!(
            "v3|{}|gateway-client|backend|operator|operator.read,operator.approvals,operator.admin|1|dev-tok|n|{}|",
            id.device_id(),
            std::env::consts::OS
        );
        assert_eq!(p["device"]["signature"], id.sign(&sig_payload));
    }

    #[test]
    fn hello_reads_auth_and_reports_missing_scopes() {
        let h = Hello::from_payload(&json!({
            "type": "hello-ok", "protocol": 4, "server": {"version": "2026.9.6"},
            "auth": {"role": "operator", "scopes": ["operator.read"], "deviceToken": "t"},
            "policy": {"tickIntervalMs": 15000}
        }));
        assert_eq!(h.protocol, 4);
        assert_eq!(h.device_token.as_deref(), Some("t"));
        let needed: Vec<String> = super::super::NEEDED_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            h.missing(&needed),
            vec!["operator.approvals", "operator.admin"]
        );
        assert!(!format!("{h:?}").contains("\"t\""));
    }

    #[test]
    fn debug_never_shows_tokens() {
        let o = ConnectOptions::operator(
            "ws://x",
            Some("supersecret".into()),
            DeviceIdentity::generate(),
        );
        assert!(!format!("{o:?}").contains("supersecret"));
    }

    #[test]
    fn rejects_other_url_schemes() {
        assert!(tls::connector("http://x", None).is_err());
        assert!(matches!(tls::connector("ws://x", None), Ok(Some(_))));
        assert!(matches!(
            tls::connector("wss://x", Some([0; 32])),
            Ok(Some(_))
        ));
    }
}
