//! The bridge's gateway client against a real OpenClaw gateway (testkit::openclaw): the
//! handshake and scopes, the device identity, approval events in both directions, expiry,
//! replay after connect and recovery from a gateway restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bridge::approval::{Approval, ApprovalId, Decider, Decision, Kind, Outcome};
use bridge::gateway::identity::{IDENTITY_FILE, StoredDeviceToken};
use bridge::gateway::{Client, GatewayError, GatewayEvent, GatewayOptions, GatewayPort};
use testkit::openclaw::{Gateway, GatewayConfig};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

/// A running bridge client and the events it emitted.
struct Link {
    client: Arc<Client>,
    events: mpsc::Receiver<GatewayEvent>,
    stop: broadcast::Sender<()>,
    task: JoinHandle<()>,
}

impl Link {
    fn start(opts: GatewayOptions) -> Link {
        let (tx, events) = mpsc::channel(256);
        let (stop, stop_rx) = broadcast::channel(1);
        let (client, task) = Client::spawn(opts, tx, stop_rx).expect("state dir usable");
        Link {
            client,
            events,
            stop,
            task,
        }
    }

    /// Skips events until `pick` returns something; fails after `WAIT`.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&GatewayEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// Waits for `Connected` and the `Snapshot` after it.
    async fn ready(&mut self) -> (Vec<String>, Vec<Approval>) {
        let missing = self
            .expect("Connected", |e| match e {
                GatewayEvent::Connected { missing, .. } => Some(missing.clone()),
                _ => None,
            })
            .await;
        let next = self.events.recv().await.expect("stream open");
        let GatewayEvent::Snapshot(pending) = next else {
            panic!("Connected not followed by Snapshot: {next:?}")
        };
        (missing, pending)
    }

    async fn requested(&mut self, id: &ApprovalId) -> Approval {
        self.expect("Requested", |e| match e {
            GatewayEvent::Requested(a) if &a.id == id => Some(a.clone()),
            _ => None,
        })
        .await
    }

    async fn ended(&mut self, id: &ApprovalId) -> Outcome {
        self.expect("Ended", |e| match e {
            GatewayEvent::Ended { id: ended, outcome } if ended == id => Some(outcome.clone()),
            _ => None,
        })
        .await
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("client stops on shutdown")
            .unwrap();
    }
}

async fn gateway() -> Gateway {
    Gateway::start(GatewayConfig::default())
        .await
        .expect("gateway starts")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_with_every_needed_scope_and_keeps_its_device_identity() {
    let gw = gateway().await;
    let state = tempfile::tempdir().unwrap();

    let report = bridge::gateway::probe(&gw.client_options(state.path()), WAIT)
        .await
        .unwrap();
    assert!(report.auth_ok, "probe failed: {report:?}");
    assert_eq!(report.protocol, Some(4));
    assert_eq!(report.missing, Vec::<String>::new());
    assert!(!report.pairing_required);
    assert_eq!(report.pending, Some(0));

    let mut link = Link::start(gw.client_options(state.path()));
    let (missing, pending) = link.ready().await;
    assert_eq!(missing, Vec::<String>::new(), "the bridge would be blind");
    assert!(pending.is_empty());
    assert!(link.client.is_connected());
    let device = link.client.device_id();
    assert_eq!(
        device, report.device_id,
        "probe and client share the identity"
    );
    #[cfg(unix)]
    assert_eq!(mode(&state.path().join(IDENTITY_FILE)), 0o600);
    link.shutdown().await;

    let mut again = Link::start(gw.client_options(state.path()));
    again.ready().await;
    assert_eq!(
        again.client.device_id(),
        device,
        "identity reused across restarts"
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_device_stores_its_device_token_privately_and_can_connect_with_it_alone() {
    let gw = gateway().await;
    let state = tempfile::tempdir().unwrap();
    // `gateway-client`/`backend` on loopback never gets a pairing record; `cli` does.
    let paired = |token: Option<String>| {
        let mut o = gw.client_options(state.path());
        o.client_id = "cli".into();
        o.client_mode = "cli".into();
        o.token = token;
        o
    };
    let mut link = Link::start(paired(Some(gw.token().to_owned())));
    link.ready().await;
    link.shutdown().await;
    let token_file = StoredDeviceToken::path(state.path());
    #[cfg(unix)]
    assert_eq!(mode(&token_file), 0o600);
    let stored = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !stored.contains(gw.token()),
        "the shared token is never persisted"
    );

    // Without the shared token, the stored device token alone is enough.
    let mut link = Link::start(paired(None));
    let (missing, _) = link.ready().await;
    assert_eq!(missing, Vec::<String>::new());
    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_flow_both_ways_through_the_resolver() {
    let gw = gateway().await;
    let state = tempfile::tempdir().unwrap();
    let mut link = Link::start(gw.client_options(state.path()));
    link.ready().await;
    let op = gw.operator().await.unwrap();

    // Exec: the request arrives as the gateway described it.
    let pending = op
        .request_exec("touch /tmp/approval-bridge-e2e-marker", 60_000)
        .await
        .unwrap();
    let approval = link.requested(&pending.id).await;
    assert_eq!(approval.kind, Kind::Exec);
    assert_eq!(approval.command, "touch /tmp/approval-bridge-e2e-marker");
    assert_eq!(approval.host.as_deref(), Some("gateway"));
    assert_eq!(
        approval.allowed_decisions,
        vec![Decision::AllowOnce, Decision::AllowAlways, Decision::Deny]
    );
    assert!(
        approval
            .expires_at_ms
            .is_some_and(|e| e > approval.created_at_ms)
    );

    // Our allow-once reaches the requester, and the gateway echoes the end to us.
    link.client
        .resolve(&pending.id, Kind::Exec, Decision::AllowOnce)
        .await
        .unwrap();
    assert_eq!(
        pending.outcome(WAIT).await.unwrap(),
        Some(Decision::AllowOnce)
    );
    let outcome = link.ended(&approval.id).await;
    assert!(
        matches!(&outcome, Outcome::Decided { decision: Decision::AllowOnce, by: Decider::Elsewhere { resolved_by: Some(who) }, .. } if who == "approval-bridge"),
        "{outcome:?}"
    );

    // A second answer is refused, never turned into another decision.
    let again = link
        .client
        .resolve(&approval.id, Kind::Exec, Decision::Deny)
        .await;
    assert_eq!(again, Err(GatewayError::AlreadyResolved));
    // An id the gateway does not know is terminal.
    let unknown = ApprovalId("0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11".into());
    assert_eq!(
        link.client
            .resolve(&unknown, Kind::Exec, Decision::Deny)
            .await,
        Err(GatewayError::NotFound)
    );

    // Plugin approvals take their own path.
    let plugin = op
        .request_plugin("Send the weekly report", "to the whole team", 60_000)
        .await
        .unwrap();
    assert!(plugin.id.as_str().starts_with("plugin:"), "{}", plugin.id);
    let approval = link.requested(&plugin.id).await;
    assert_eq!(approval.kind, Kind::Plugin);
    assert_eq!(approval.command, "Send the weekly report");
    assert_eq!(approval.description.as_deref(), Some("to the whole team"));
    link.client
        .resolve(&plugin.id, Kind::Plugin, Decision::Deny)
        .await
        .unwrap();
    assert_eq!(plugin.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    let outcome = link.ended(&approval.id).await;
    assert!(
        matches!(
            outcome,
            Outcome::Decided {
                decision: Decision::Deny,
                ..
            }
        ),
        "{outcome:?}"
    );

    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_when_another_operator_decides_and_when_the_gateway_expires_it() {
    let gw = gateway().await;
    let state = tempfile::tempdir().unwrap();
    let mut link = Link::start(gw.client_options(state.path()));
    link.ready().await;
    let op = gw.operator().await.unwrap();

    let decided = op
        .request_exec("echo decided elsewhere", 60_000)
        .await
        .unwrap();
    link.requested(&decided.id).await;
    op.resolve(&decided.id, Decision::Deny).await.unwrap();
    let outcome = link.ended(&decided.id).await;
    assert!(
        matches!(&outcome, Outcome::Decided { decision: Decision::Deny, by: Decider::Elsewhere { resolved_by: Some(who) }, .. } if who == "test-operator"),
        "{outcome:?}"
    );
    assert_eq!(decided.outcome(WAIT).await.unwrap(), Some(Decision::Deny));

    let expiring = op.request_exec("echo nobody answers", 1_500).await.unwrap();
    link.requested(&expiring.id).await;
    let outcome = link.ended(&expiring.id).await;
    assert!(matches!(outcome, Outcome::Expired { .. }), "{outcome:?}");
    let expired_id = expiring.id.clone();
    assert_eq!(
        expiring.outcome(WAIT).await.unwrap(),
        None,
        "the requester sees no decision"
    );
    // The gateway keeps the terminal record a while: APPROVAL_ALREADY_RESOLVED, not NOT_FOUND.
    let late = link
        .client
        .resolve(&expired_id, Kind::Exec, Decision::AllowOnce)
        .await;
    assert!(
        matches!(late, Err(GatewayError::AlreadyResolved)),
        "an expired approval cannot be allowed afterwards: {late:?}"
    );

    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_what_was_requested_before_it_connected_and_recovers_from_a_gateway_restart() {
    let mut gw = gateway().await;
    let op = gw.operator().await.unwrap();
    let early = op
        .request_exec("echo requested while the bridge was away", 120_000)
        .await
        .unwrap();

    let state = tempfile::tempdir().unwrap();
    let mut link = Link::start(gw.client_options(state.path()));
    let (_, pending) = link.ready().await;
    let replayed: Vec<&ApprovalId> = pending.iter().map(|a| &a.id).collect();
    assert_eq!(replayed, vec![&early.id]);
    assert_eq!(
        pending[0].command,
        "echo requested while the bridge was away"
    );

    gw.restart().await.unwrap();
    let reason = link
        .expect("Disconnected", |e| match e {
            GatewayEvent::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(!reason.is_empty());
    // Not `!is_connected()` here: the client may already be back by the time the test
    // reads the event (CI saw that race). The next Connected/Ready proves the reconnect.
    let (missing, pending) = link.ready().await;
    assert!(missing.is_empty());
    assert!(
        pending.is_empty(),
        "the restarted gateway forgot the approval: {pending:?}"
    );
    assert!(link.client.is_connected());

    // And the new link works.
    let op = gw.operator().await.unwrap();
    let after = op.request_exec("echo after restart", 60_000).await.unwrap();
    link.requested(&after.id).await;
    link.client
        .resolve(&after.id, Kind::Exec, Decision::AllowOnce)
        .await
        .unwrap();
    assert_eq!(
        after.outcome(WAIT).await.unwrap(),
        Some(Decision::AllowOnce)
    );

    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_accepts_only_the_pinned_certificate() {
    let gw = gateway().await;
    let proxy = testkit::tls_proxy::TlsProxy::start(([127, 0, 0, 1], gw.port()).into())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let opts = |pin: Option<[u8; 32]>| {
        let mut o = gw.client_options(state.path());
        o.url = proxy.url();
        o.tls_pin = pin;
        o
    };
    let pinned = bridge::gateway::probe(&opts(Some(proxy.fingerprint())), WAIT)
        .await
        .unwrap();
    assert!(pinned.auth_ok, "{pinned:?}");
    assert!(pinned.missing.is_empty(), "{pinned:?}");

    let mut wrong = proxy.fingerprint();
    wrong[0] ^= 1;
    let refused = bridge::gateway::probe(&opts(Some(wrong)), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(!refused.auth_ok);
    assert!(
        refused
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("pinned fingerprint"),
        "{refused:?}"
    );

    // Without a pin a self-signed certificate is not trusted either.
    let unpinned = bridge::gateway::probe(&opts(None), Duration::from_secs(3))
        .await
        .unwrap();
    assert!(!unpinned.auth_ok, "{unpinned:?}");
}
