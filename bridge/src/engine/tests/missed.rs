//! The report of approvals that ended at the gateway without reaching anyone: after a
//! replay the history is read from the mark, what ended without a human and without a
//! prompt of ours is posted once (bounded), the mark is stored, `/missed` lists it all.

use super::*;
use crate::history::HistoryRow;

fn row(id: &str, at_ms: i64, status: &str, reason: &str, command: &str) -> HistoryRow {
    HistoryRow::from_gateway(&json!({
        "id": id, "status": status, "reason": reason,
        "decision": if status == "denied" { Some("deny") } else { None },
        "createdAtMs": at_ms - 100, "resolvedAtMs": at_ms,
        "presentation": {"kind": "exec", "commandText": command, "agentId": "main"},
        "source": {"agentId": "main", "sessionKey": if id.starts_with("cron") {
            "agent:main:cron:nightly:run:7" } else { "agent:main:main" }},
        "resolver": if reason == "no-route" {
            json!({"kind": "system", "id": "no-approval-route"}) } else { json!({"kind": "runtime", "id": "cli"}) },
    }))
    .unwrap()
}

fn seen(row: HistoryRow, prompted: bool) -> SeenRow {
    SeenRow { row, prompted }
}

impl Sim {
    fn replay(&mut self, history: Vec<SeenRow>) {
        self.history = history;
        self.input(Input::Gateway(GatewayEvent::Connected {
            scopes: vec![],
            missing: vec![],
        }));
        self.input(Input::Gateway(GatewayEvent::Snapshot(vec![])));
    }
}

const T: i64 = 1_795_000_000_000;

#[test]
fn what_ended_unseen_is_posted_once_and_the_mark_moves_past_everything_read() {
    let mut sim = Sim::new();
    sim.replay(vec![
        seen(row("n1", T, "denied", "no-route", "touch /tmp/x"), false),
        seen(
            row("cron1", T + 60_000, "denied", "no-route", "backup.sh"),
            false,
        ),
        // Decided by a human elsewhere, or shown by a prompt of ours: not reported.
        seen(row("u1", T + 61_000, "denied", "user", "rm -rf /"), false),
        seen(row("e1", T + 62_000, "expired", "timeout", "ls"), true),
        seen(
            row("c1", T + 180_000, "cancelled", "gateway-restart", "make"),
            false,
        ),
        // The run that asked ended: its command is gone with it.
        seen(
            row("a1", T + 181_000, "cancelled", "run-aborted", "sleep 9"),
            false,
        ),
    ]);
    sim.check(expect![[r#"
        read history after - from 0
        emit missed n1: Denied: no approval route reached anyone
        emit missed cron1: Denied: no approval route reached anyone
        emit missed c1: Cancelled by a gateway restart
        post mem:42: 🚫 While no approval could reach you (11:06–11:09 UTC), 3 commands ended without asking you:
        • 11:06 UTC touch /tmp/x (agent main): Denied: no approval route reached anyone
        • 11:07 UTC backup.sh (agent main, cron job nightly): Denied: no approval route reached anyone
        • 11:09 UTC make (agent main): Cancelled by a gateway restart
        store history mark a1@1795000181000
    "#]]);
    assert_eq!(
        sim.store.history_mark().unwrap().map(|m| m.to_string()),
        Some("a1@1795000181000".into())
    );
    assert_eq!(
        sim.audit_events("cron1"),
        ["missed"],
        "each is in the audit log"
    );
    // The next replay reads from the mark and finds nothing new: nothing is posted.
    sim.replay(vec![]);
    sim.check(expect![[r#"
        read history after a1@1795000181000 from 0
    "#]]);
    // A restart reads from the stored mark.
    let mut sim = sim.restart();
    sim.replay(vec![]);
    let log = sim.take();
    assert!(log.contains("read history after a1@1795000181000"), "{log}");
}

#[test]
fn a_long_report_is_bounded_and_missed_lists_it_all() {
    let mut sim = Sim::new();
    let rows = (0..12)
        .map(|i| {
            seen(
                row(
                    &format!("n{i:02}"),
                    T + i * 1000,
                    "denied",
                    "no-route",
                    "ls",
                ),
                false,
            )
        })
        .collect();
    sim.replay(rows);
    let log = sim.take();
    assert_eq!(log.matches("\n• ").count(), 8, "{log}");
    assert!(
        log.contains("12 commands ended without asking you"),
        "{log}"
    );
    assert!(
        log.contains("…and 4 more: /missed lists them all."),
        "{log}"
    );
    let mut ask = typed(OWNER, "x", Decision::Deny);
    ask.request = Request::ListMissed;
    sim.answer(ask.clone());
    let answered = sim.take();
    let listed = answered
        .lines()
        .find(|l| l.starts_with("notify"))
        .unwrap_or_default();
    let want = (0..12)
        .rev()
        .map(|i| format!("n{i:02}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        listed,
        format!("notify cb:42: missed [{want}]"),
        "all of them, newest first"
    );
    // Only an owner may ask.
    ask.responder.user_id = STRANGER.into();
    sim.answer(ask);
    let refused = sim.take();
    assert!(
        refused.contains("notify cb:42: refused not_allowed"),
        "{refused}"
    );
}

#[test]
fn a_failed_read_keeps_the_mark_and_a_gateway_without_history_is_asked_once() {
    let mut sim = Sim::new();
    // Unavailable: nothing posted, no mark; the next connect reads again.
    sim.history = vec![];
    sim.input(Input::HistoryRead {
        result: Err(GatewayError::Unavailable("not connected".into())),
    });
    assert_eq!(sim.store.history_mark().unwrap(), None);
    sim.replay(vec![]);
    assert!(sim.take().contains("read history after - from 0"));
    sim.input(Input::HistoryRead {
        result: Err(GatewayError::Rejected {
            code: "INVALID_REQUEST".into(),
            message: "unknown method: approval.history".into(),
        }),
    });
    sim.take();
    sim.replay(vec![]);
    let log = sim.take();
    assert!(!log.contains("read history"), "{log}");
}
