//! The gateway's approval history (`approval.history`) read back by the bridge's client
//! (`GatewayPort::history_since`) from a real OpenClaw gateway: an agent's exec denied
//! because no approval client could see it, then an expiry and a decision while the
//! client is connected, each read exactly once by moving the mark.

use std::sync::Arc;
use std::time::Duration;

use bridge::approval::{Decision, Outcome, now_ms};
use bridge::gateway::{Client, GatewayEvent, GatewayPort};
use bridge::history::{HistoryReason, HistoryRow, HistoryStatus};
use serde_json::json;
use testkit::fake_model::{AgentTurn, FakeModel, require_approval_always};
use testkit::openclaw::Gateway;
use tokio::sync::{broadcast, mpsc};

const WAIT: Duration = Duration::from_secs(30);
/// The first turn on a fresh gateway takes ~15 s on an idle machine.
const TURN_WAIT: Duration = Duration::from_secs(120);

/// A bridge client connected to `gw`, past its first snapshot.
async fn connect(
    gw: &Gateway,
    state: &std::path::Path,
) -> (
    Arc<Client>,
    broadcast::Sender<()>,
    mpsc::Receiver<GatewayEvent>,
) {
    let (tx, mut rx) = mpsc::channel(256);
    let (stop, stop_rx) = broadcast::channel(1);
    let (client, _task) = Client::spawn(gw.client_options(state), tx, stop_rx).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(GatewayEvent::Snapshot(_))) => return (client, stop, rx),
            Ok(Some(_)) => {}
            other => panic!("no snapshot within {WAIT:?}: {other:?}"),
        }
    }
}

/// Rows after `mark`, as the engine reads them.
async fn since(client: &Client, mark: Option<&HistoryRow>) -> Vec<HistoryRow> {
    let mark = mark.map(HistoryRow::mark);
    client
        .history_since(mark.as_ref(), 0)
        .await
        .expect("history readable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_nobody_could_see_is_read_back_once_as_a_no_route_denial() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let model = FakeModel::start().await;
    let command = format!("touch {}", marker.display());
    model.script_exec(&command);
    let gw = Gateway::start(model.gateway_config())
        .await
        .expect("start the OpenClaw gateway");
    require_approval_always(&gw)
        .await
        .expect("set the host approvals document");
    let started = now_ms();

    // No approval client is connected: the gateway denies the exec at once.
    let turn = AgentTurn::start(&gw, "Please create the marker file.").unwrap();
    let done = turn.finish(TURN_WAIT).await.expect("the agent turn ends");
    eprintln!("agent turn: exit {:?} after {:?}", done.code, done.elapsed);
    assert!(!marker.exists(), "the command ran although nobody approved");

    let op = gw.operator().await.unwrap();
    let raw = op
        .call("approval.history", json!({"limit": 5}))
        .await
        .expect("approval.history");
    eprintln!(
        "approval.history as the gateway answers it:\n{}",
        serde_json::to_string_pretty(&raw).unwrap()
    );

    let state = tempfile::tempdir().unwrap();
    let (client, stop, _events) = connect(&gw, state.path()).await;
    let rows = since(&client, None).await;
    let [row] = rows.as_slice() else {
        panic!("one terminal row expected: {rows:#?}")
    };
    assert_eq!(row.status, HistoryStatus::Denied);
    assert_eq!(row.reason, HistoryReason::NoRoute);
    assert_eq!(row.decision, Some(Decision::Deny));
    assert_eq!(row.command, command);
    assert_eq!(row.agent_id.as_deref(), Some("main"));
    assert!(
        row.session_key
            .as_deref()
            .is_some_and(|k| k.starts_with("agent:main:")),
        "{:?}",
        row.session_key
    );
    assert_eq!(row.cron_job, None);
    let resolver = row.resolver.as_ref().expect("a resolver");
    assert_eq!(
        (resolver.kind.as_str(), resolver.id.as_deref()),
        ("system", Some("no-approval-route"))
    );
    assert!(row.resolved_at_ms >= started, "resolved during this test");
    assert!(!row.human_decided());
    assert_eq!(
        row.outcome(),
        Outcome::NoRoute {
            at_ms: row.resolved_at_ms
        }
    );

    // Read once: from its mark there is nothing more, and a floor after it hides it too.
    assert_eq!(since(&client, Some(row)).await, vec![]);
    assert_eq!(
        client
            .history_since(None, row.resolved_at_ms + 1)
            .await
            .unwrap(),
        vec![]
    );

    // With the client connected, an approval nobody answers expires, and one another
    // operator answers is decided; both come after the mark, oldest first.
    let expiring = op.request_exec("echo nobody answers", 1_500).await.unwrap();
    let expiring_id = expiring.id.clone();
    assert_eq!(expiring.outcome(WAIT).await.unwrap(), None, "it expired");
    let decided = op
        .request_exec("echo someone answers", 60_000)
        .await
        .unwrap();
    let decided_id = decided.id.clone();
    op.resolve(&decided_id, Decision::Deny).await.unwrap();
    assert_eq!(decided.outcome(WAIT).await.unwrap(), Some(Decision::Deny));

    let rows = since(&client, Some(row)).await;
    let [expired, denied] = rows.as_slice() else {
        panic!("two new rows expected: {rows:#?}")
    };
    assert_eq!(expired.id, expiring_id);
    assert_eq!(
        (&expired.status, &expired.reason, expired.decision),
        (&HistoryStatus::Expired, &HistoryReason::Timeout, None)
    );
    assert_eq!(expired.command, "echo nobody answers");
    assert!(!expired.human_decided());
    assert_eq!(
        expired.outcome(),
        Outcome::Expired {
            at_ms: expired.resolved_at_ms
        }
    );
    assert_eq!(denied.id, decided_id);
    assert_eq!(
        (&denied.status, &denied.reason, denied.decision),
        (
            &HistoryStatus::Denied,
            &HistoryReason::User,
            Some(Decision::Deny)
        )
    );
    assert!(denied.human_decided());
    // exec.approval.resolve records the client's display name as a `runtime` reviewer.
    assert_eq!(
        denied
            .resolver
            .as_ref()
            .map(|r| (r.kind.as_str(), r.id.as_deref())),
        Some(("runtime", Some("test-operator"))),
        "{denied:#?}"
    );
    assert_eq!(since(&client, Some(denied)).await, vec![]);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_pending_across_a_gateway_restart_is_read_back_as_cancelled() {
    let mut gw = Gateway::start(testkit::openclaw::GatewayConfig::default())
        .await
        .expect("gateway starts");
    let op = gw.operator().await.unwrap();
    let pending = op
        .request_exec("echo across a restart", 600_000)
        .await
        .unwrap();
    drop(op);
    gw.restart().await.expect("gateway restarts");

    let state = tempfile::tempdir().unwrap();
    let (client, stop, _events) = connect(&gw, state.path()).await;
    let rows = since(&client, None).await;
    let [row] = rows.as_slice() else {
        panic!("one terminal row expected: {rows:#?}")
    };
    assert_eq!(row.id, pending.id);
    assert_eq!(
        (&row.status, &row.reason, row.decision),
        (
            &HistoryStatus::Cancelled,
            &HistoryReason::GatewayRestart,
            None
        ),
        "{row:#?}"
    );
    assert_eq!(row.command, "echo across a restart");
    assert!(!row.human_decided());
    assert_eq!(
        row.outcome(),
        Outcome::Cancelled {
            reason: bridge::approval::CancelReason::GatewayRestart,
            at_ms: row.resolved_at_ms
        }
    );
    assert_eq!(since(&client, Some(row)).await, vec![]);
    let _ = stop.send(());
}
