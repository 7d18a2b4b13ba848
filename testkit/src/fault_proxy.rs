//! An HTTP proxy on 127.0.0.1 in front of a real service (Synapse), injecting the faults of
//! [`crate::service_faults`] on the way: the fault checks for a channel whose server is
//! real rather than a fake. Every call is forwarded as it came; a fault acts around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};

use crate::service_faults::{Faults, serve_with};

/// Which calls send or edit a message (slow answers and drops hit only those).
pub type IsWrite = fn(&Method, &str) -> bool;

/// Stops serving when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: Faults,
    is_write: IsWrite,
    status: fn(u16) -> Response,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`);
    /// `status` renders the answer to an injected HTTP status as the service would.
    pub async fn start(
        upstream: &str,
        is_write: IsWrite,
        status: fn(u16) -> Response,
    ) -> Result<FaultProxy> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            faults: Faults::default(),
            is_write,
            status,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FaultProxy { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let write = (s.is_write)(req.method(), req.uri().path());
    let fault = s.faults.take(write, Instant::now());
    let (_, resp) = serve_with(fault, s.status, || relay(&s, req)).await;
    resp
}

/// Sends the call upstream and hands back the service's answer.
async fn relay(s: &Shared, req: Request) -> (u16, Response) {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = async {
        let body = axum::body::to_bytes(body, usize::MAX).await?;
        let up = s
            .http
            .request(parts.method.clone(), format!("{}{path}", s.upstream))
            .headers(end_to_end(&parts.headers))
            .body(body)
            .send()
            .await?;
        let status = up.status();
        let headers = end_to_end(up.headers());
        let bytes = up.bytes().await?;
        anyhow::Ok((status, headers, bytes))
    };
    match answer.await {
        Ok((status, headers, bytes)) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers;
            (status.as_u16(), resp)
        }
        // The service itself is unreachable: a proxy says so with a 502.
        Err(e) => {
            tracing::warn!(error = %e, "fault proxy: upstream failed");
            (502, (s.status)(502).into_response())
        }
    }
}

/// The headers a proxy passes on: hop-by-hop ones and the length (recomputed) dropped.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for h in [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        out.remove(h);
    }
    out
}
