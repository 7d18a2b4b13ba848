//! Faults a fake chat service injects into its HTTP API, as a flaky service or network
//! would: 5xx storms, slow answers, and connections dropped mid-request, before the fake
//! handled the call or after (then the message exists, the client cannot know). Shared by
//! the fake Telegram, Discord and Slack APIs; each renders its own 5xx body.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::Response;

/// When an injected fault acts on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Before the fake handled the call: nothing happened on the service.
    BeforeProcessing,
    /// After the fake did the work (the message exists): only the answer is lost or late.
    AfterProcessing,
}

/// What an injected fault does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Slow(Duration, Moment),
    Drop(Moment),
}

/// The faults armed on one fake service; the fake holds one, a test arms it through the
/// fake's `faults()`.
#[derive(Debug, Default)]
pub struct Faults(Mutex<Armed>);

#[derive(Debug, Default)]
struct Armed {
    /// Every call answers this HTTP status until the instant.
    storm: Option<(Instant, u16)>,
    /// The next `n` message-writing calls answer only after a delay (a `Fault::Slow`).
    slow_next: Countdown<Fault>,
    /// The next `n` message-writing calls lose their connection without an answer (a
    /// `Fault::Drop`).
    drop_next: Countdown<Fault>,
    /// Calls a fault acted on so far.
    injected: u64,
}

impl Faults {
    fn armed(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call (long polls too) answers `status` for `lasting`.
    pub fn storm(&self, status: u16, lasting: Duration) {
        self.armed().storm = Some((Instant::now() + lasting, status));
    }

    /// The next `n` message-writing calls answer after `delay`. `BeforeProcessing`: the call
    /// is handled after the wait, or never if the client gave up first; `AfterProcessing`:
    /// it is handled at once and only the answer is late.
    pub fn slow_next(&self, n: u32, delay: Duration, moment: Moment) {
        self.armed().slow_next.arm(n, Fault::Slow(delay, moment));
    }

    /// The next `n` message-writing calls lose their connection without an answer.
    pub fn drop_next(&self, n: u32, moment: Moment) {
        self.armed().drop_next.arm(n, Fault::Drop(moment));
    }

    /// How many calls an injected fault has hit so far.
    pub fn injected(&self) -> u64 {
        self.armed().injected
    }

    /// The fault for a call arriving `at`; `write`: the call sends or edits a message (slow
    /// answers and drops hit only those, a storm every call).
    pub fn take(&self, write: bool, at: Instant) -> Option<Fault> {
        let mut a = self.armed();
        if let Some((until, status)) = a.storm {
            if at < until {
                a.injected += 1;
                return Some(Fault::Status(status));
            }
            a.storm = None;
        }
        if !write {
            return None;
        }
        let fault = a.drop_next.take().or_else(|| a.slow_next.take())?;
        a.injected += 1;
        Some(fault)
    }
}

/// Serves one call under `fault`: `serve` does the fake's real work and returns the
/// status it answered and its response, `status` renders the service's answer for an
/// injected HTTP status. Returns the status to record (0: no answer) and the response.
pub async fn serve_with<F>(
    fault: Option<Fault>,
    status: impl FnOnce(u16) -> Response,
    serve: impl FnOnce() -> F,
) -> (u16, Response)
where
    F: Future<Output = (u16, Response)>,
{
    match fault {
        None => serve().await,
        Some(Fault::Status(s)) => (s, status(s)),
        Some(Fault::Slow(delay, Moment::BeforeProcessing)) => {
            // Cancelled here, unhandled, if the client gives up first.
            tokio::time::sleep(delay).await;
            serve().await
        }
        Some(Fault::Slow(delay, Moment::AfterProcessing)) => {
            let answered = serve().await;
            tokio::time::sleep(delay).await;
            answered
        }
        Some(Fault::Drop(Moment::BeforeProcessing)) => (0, dropped()),
        Some(Fault::Drop(Moment::AfterProcessing)) => {
            drop(serve().await);
            (0, dropped())
        }
    }
}

/// A response whose body fails at once: the connection closes before any answer is
/// complete, as when a connection drops mid-request.
fn dropped() -> Response {
    let body = axum::body::Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected: connection dropped",
        ))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_default()
}

/// A proxy's HTML error page, as a load balancer in front of a service answers a 5xx.
pub fn html_status(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = code.canonical_reason().unwrap_or("Error");
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/html")
        .body(axum::body::Body::from(format!(
            "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1></center><hr><center>nginx</center></body></html>"
        )))
        .unwrap_or_default()
}

/// An answer armed for the next `n` calls (a 429, a fault), disarmed after its last.
#[derive(Debug)]
pub(crate) struct Countdown<T>(Option<(u32, T)>);

impl<T> Default for Countdown<T> {
    fn default() -> Self {
        Countdown(None)
    }
}

impl<T: Copy> Countdown<T> {
    /// The next `n` calls get `what` (none when `n` is 0), replacing what was armed.
    pub(crate) fn arm(&mut self, n: u32, what: T) {
        self.0 = (n > 0).then_some((n, what));
    }

    /// What is armed for one more call, if anything.
    pub(crate) fn take(&mut self) -> Option<T> {
        let (n, what) = self.0.as_mut()?;
        let what = *what;
        *n -= 1;
        if *n == 0 {
            self.0 = None;
        }
        Some(what)
    }
}
