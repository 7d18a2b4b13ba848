//! The optional operability listener: `/healthz` (200 only while the gateway link is up
//! with the needed scopes, replayed, and every channel healthy; else 503 with reasons),
//! `/metrics` (Prometheus text) and `POST /probe` (the end-to-end probe's report).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bridge::engine::{Input, LinkStatus, ProbeDesk};
use bridge::telemetry::Metrics;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

/// Each channel's last health check: `Ok(description)` or `Err(problem)`.
pub type ChannelHealth = Arc<Mutex<BTreeMap<String, Result<String, String>>>>;

#[derive(Clone)]
pub struct Health {
    pub link: watch::Receiver<LinkStatus>,
    /// The engine's open channel, chat and probe incidents (what the alerts tell).
    pub paths: watch::Receiver<Vec<String>>,
    /// Its last write error means answers are being refused.
    pub store: Arc<dyn bridge::store::Store>,
    pub channels: ChannelHealth,
    pub metrics: Arc<Metrics>,
    /// Where `/probe` hands in its probe, and the engine's input.
    pub desk: ProbeDesk,
    pub input: mpsc::Sender<Input>,
}

impl Health {
    /// Why the bridge is not healthy; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let link = self.link.borrow().clone();
        if let Some(req) = &link.pairing_request {
            out.push(format!("gateway: device not paired; run `openclaw devices approve {req}` on the gateway host"));
        } else if !link.connected {
            out.push(format!(
                "gateway: link down ({})",
                link.last_error.as_deref().unwrap_or("connecting")
            ));
        } else if !link.missing_scopes.is_empty() {
            out.push(format!(
                "gateway: missing scopes {:?}: the bridge is blind to agent approvals",
                link.missing_scopes
            ));
        } else if !link.replayed {
            out.push("gateway: pending approvals not yet replayed".into());
        }
        if let Some(e) = self.store.fault() {
            out.push(format!(
                "store: cannot write the database ({e}); answers are refused until it is writable (disk full or read-only state.dir?)"
            ));
        }
        out.extend(self.paths.borrow().iter().cloned());
        for (name, h) in self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Err(e) = h {
                out.push(format!("{name}: {e}"));
            }
        }
        out
    }
}

async fn healthz(State(h): State<Health>) -> impl IntoResponse {
    let problems = h.problems();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if problems.is_empty() { "ok" } else { "unhealthy" }, "problems": problems});
    (status, axum::Json(body))
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}

#[derive(serde::Deserialize)]
struct ProbeQuery {
    /// Wait for an owner's tap (default); `false`: delivery only.
    tap: Option<bool>,
}

/// Runs the probe and answers with its report (200 whether it passed or not; 503 when
/// the engine is gone).
async fn probe(State(h): State<Health>, Query(q): Query<ProbeQuery>) -> impl IntoResponse {
    let (input, report) = h.desk.ticket(q.tap.unwrap_or(true));
    if h.input.send(input).await.is_err() {
        let body = json!({"error": "the engine is shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
    }
    match report.await {
        Ok(report) => (
            StatusCode::OK,
            axum::Json(serde_json::to_value(report).unwrap_or_default()),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the engine stopped before the probe ended"})),
        ),
    }
}

/// Serves until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    mut shutdown: broadcast::Receiver<()>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/probe", post(probe))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "http listener up (/healthz, /metrics, /probe)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.recv().await;
        })
        .await?;
    Ok(())
}
