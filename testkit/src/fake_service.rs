//! The machinery under every fake chat service: its state behind one lock with a change
//! signal, the log of calls it answered, waiting on both with a deadline, answers armed for
//! the next calls (429s), the service faults and the loopback servers. Each fake adds its API.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::service_faults::{Faults, serve_with};

/// What one fake service is, as far as the shared machinery needs to know.
pub trait Api: Send + Sync + 'static {
    /// The service's name in a timed-out wait's panic ("telegram").
    const NAME: &'static str;
    /// What the service holds (messages, sessions, …); tests read it through a [`View`].
    type State: Send + 'static;
    /// One recorded call.
    type Call: Clone + Send + 'static;

    /// One call as a line of a timed-out wait's panic.
    fn line(call: &Self::Call) -> String;

    /// Whether `call` went to `name`, as [`Fake::calls_to`] selects calls.
    fn called(call: &Self::Call, name: &str) -> bool;

    /// Ends what outlives the fake's servers when it is dropped (default: nothing).
    fn stop(_state: &mut Self::State) {}
}

/// One fake's shared half, held by its handlers and by the [`Fake`] a test owns.
pub(crate) struct Service<A: Api> {
    /// What does not change while the fake runs (tokens, the bot's user).
    pub(crate) api: A,
    state: Mutex<A::State>,
    calls: Mutex<Vec<A::Call>>,
    version: watch::Sender<u64>,
    faults: Faults,
}

impl<A: Api> Service<A> {
    pub(crate) fn new(api: A, state: A::State) -> Arc<Service<A>> {
        Arc::new(Service {
            api,
            state: Mutex::new(state),
            calls: Mutex::new(Vec::new()),
            version: watch::channel(0).0,
            faults: Faults::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, A::State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self) -> MutexGuard<'_, Vec<A::Call>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every waiter that the state changed.
    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends a call to the log.
    pub(crate) fn record(&self, call: A::Call) {
        self.log().push(call);
        self.bump();
    }

    /// `f` of a consistent snapshot of the state and the calls.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&View<'_, A>) -> T) -> T {
        let state = self.lock();
        let calls = self.log();
        f(&View {
            state: &state,
            calls: &calls,
        })
    }

    /// The first `Some` of `f`, checked now and after every change until `deadline`.
    pub(crate) async fn poll<T>(
        &self,
        deadline: tokio::time::Instant,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(v) = f(self) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Serves one call arriving `at` under the fault armed for it (`write`: it sends or
    /// edits a message); `storm` renders the service's answer to an injected 5xx.
    pub(crate) async fn serve<F>(
        &self,
        write: bool,
        at: Instant,
        storm: impl FnOnce(u16) -> Response,
        serve: impl FnOnce() -> F,
    ) -> (u16, Response)
    where
        F: Future<Output = (u16, Response)>,
    {
        serve_with(self.faults.take(write, at), storm, serve).await
    }
}

/// A read-only view of a fake's state and calls, for `wait_for` predicates.
pub struct View<'a, A: Api> {
    state: &'a A::State,
    calls: &'a [A::Call],
}

impl<'a, A: Api> View<'a, A> {
    pub fn calls(&self) -> &'a [A::Call] {
        self.calls
    }

    pub(crate) fn state(&self) -> &'a A::State {
        self.state
    }
}

/// A running fake on 127.0.0.1. Dropping it stops its servers.
pub struct Fake<A: Api> {
    pub(crate) service: Arc<Service<A>>,
    /// `http://127.0.0.1:<port>` of its HTTP server.
    pub(crate) url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<A: Api> Drop for Fake<A> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        A::stop(&mut self.service.lock());
    }
}

impl<A: Api> Fake<A> {
    /// Serves `app` on `http`, with no Nagle delay on small responses, like real servers.
    pub(crate) fn serve(service: Arc<Service<A>>, http: TcpListener, app: Router) -> Fake<A> {
        let url = format!("http://{}", local_addr(&http));
        let server = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            service,
            url,
            tasks: vec![server],
        }
    }

    /// Also accepts connections on `ws`, each handed to `session` on a task of its own.
    pub(crate) fn with_sockets<F>(
        mut self,
        ws: TcpListener,
        session: impl Fn(Arc<Service<A>>, TcpStream) -> F + Send + 'static,
    ) -> Fake<A>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let service = self.service.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(session(service.clone(), tcp));
            }
        }));
        self
    }

    /// Faults to inject (5xx storms, slow answers, dropped connections): a storm hits every
    /// call, slow answers and drops hit message writes; each fake renders its own 5xx.
    pub fn faults(&self) -> &Faults {
        &self.service.faults
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<A::Call> {
        self.service.log().clone()
    }

    /// Calls to `name`: a method (Telegram case-insensitively, Slack), a route (Discord).
    pub fn calls_to(&self, name: &str) -> Vec<A::Call> {
        let calls = self.service.log();
        calls
            .iter()
            .filter(|c| A::called(c, name))
            .cloned()
            .collect()
    }

    /// Waits until `f` returns `Some`, re-checking on every change; panics after
    /// `timeout` with `what` and the recorded calls.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&View<'_, A>) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        match self.service.poll(deadline, |s| s.read(&mut f)).await {
            Some(v) => v,
            None => {
                let calls: Vec<String> = self.calls().iter().map(A::line).collect();
                panic!(
                    "fake {}: timed out after {timeout:?} waiting for {what}; calls:\n{}",
                    A::NAME,
                    calls.join("\n")
                );
            }
        }
    }
}

/// A listener on a free loopback port.
pub(crate) async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

pub(crate) fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("local addr")
}
