//! The runner with the in-memory channel and gateway and a real (in-memory) SQLite store:
//! that every effect reaches its port and every completion comes back. The behaviour
//! itself is the core's tests'. The clock is tokio's paused one, so waiting costs nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::bulletin::Bulletin;
use crate::channel::Reach;
use crate::gateway::memory::MemoryGateway;
use crate::store::SqliteStore;

struct Rig {
    tx: mpsc::Sender<Input>,
    chan: Arc<MemoryChannel>,
    gw: Arc<MemoryGateway>,
    store: Arc<SqliteStore>,
    link: watch::Receiver<LinkStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    fn new() -> Rig {
        Rig::on(
            MemoryChannel::new("mem", &[OWNER], &[OWNER]),
            Arc::new(SqliteStore::in_memory().unwrap()),
            Arc::new(MemoryGateway::default()),
        )
    }

    fn on(chan: MemoryChannel, store: Arc<SqliteStore>, gw: Arc<MemoryGateway>) -> Rig {
        let chan = Arc::new(chan);
        let (runner, tx, link) = Runner::new(
            vec![chan.clone() as Arc<dyn Channel>],
            gw.clone(),
            store.clone(),
            Arc::new(Metrics::default()),
            no_alerts(),
            TrustPolicy::default(),
        )
        .unwrap();
        let task = tokio::spawn(runner.run());
        Rig {
            tx,
            chan,
            gw,
            store,
            link,
            task,
        }
    }

    async fn send(&self, input: Input) {
        self.tx.send(input).await.unwrap();
    }

    async fn request(&self, id: &str) -> MessageRef {
        self.gw.add(&id.into());
        let a = approval(id, &["allow-once", "deny"]);
        self.send(Input::Gateway(GatewayEvent::Requested(a))).await;
        self.wait(|r| r.chan.delivered().iter().any(|(a, _)| a.as_str() == id))
            .await;
        let delivered = self.chan.delivered().into_iter();
        delivered.rev().find(|(a, _)| a.as_str() == id).unwrap().1
    }

    /// Waits (on the paused clock) until `cond` holds.
    async fn wait(&self, cond: impl Fn(&Rig) -> bool) {
        for _ in 0..2000 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached within 10 s");
    }

    fn audit_events(&self, id: &str) -> Vec<String> {
        let log = self.store.audit_log(Some(&id.into())).unwrap();
        log.into_iter().map(|r| r.event).collect()
    }

    async fn stop(self) -> (Arc<SqliteStore>, Arc<MemoryGateway>) {
        self.send(Input::Shutdown).await;
        self.task.await.unwrap();
        (self.store, self.gw)
    }
}

#[tokio::test(start_paused = true)]
async fn a_press_goes_through_every_port_and_is_audited_in_order() {
    let r = Rig::new();
    r.send(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }))
    .await;
    r.send(Input::Gateway(GatewayEvent::Snapshot(vec![]))).await;
    let prompt = r.request("a1").await;
    assert!(r.link.borrow().replayed, "the link status is published");
    r.send(Input::Answer(pressed(
        OWNER,
        "a1",
        Decision::AllowOnce,
        &prompt,
    )))
    .await;
    r.wait(|r| r.audit_events("a1").contains(&"finished".to_owned()))
        .await;
    assert_eq!(r.gw.decision(&"a1".into()), Some(Decision::AllowOnce));
    let (finished, outcome) = r.chan.finished().remove(0);
    assert_eq!(finished, prompt);
    assert!(
        matches!(outcome, Outcome::Decided { decision: Decision::AllowOnce, by: Decider::Responder(ref who), .. } if who.user_id == OWNER)
    );
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::Accepted {
            id: "a1".into(),
            decision: Decision::AllowOnce
        }
    );
    assert_eq!(
        r.audit_events("a1"),
        [
            "requested",
            "delivered",
            "answered",
            "resolved",
            "ended",
            "finished"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_database_cannot_record_is_refused_not_resolved() {
    let r = Rig::new();
    let prompt = r.request("full").await;
    // A full database: SQLite refuses any write that needs a new page.
    r.store.fill_up();
    let tiny = crate::store::AuditRecord {
        at_ms: 1,
        approval_id: None,
        event: "f".into(),
        channel: None,
        actor: None,
        detail: json!(null),
    };
    let filled = (0..100_000).position(|_| r.store.audit(&tiny).is_err());
    assert!(filled.is_some(), "the database is full");
    r.send(Input::Answer(pressed(
        OWNER,
        "full",
        Decision::AllowOnce,
        &prompt,
    )))
    .await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::Refused(Refusal::StoreUnavailable)
    );
    assert!(r.gw.calls().is_empty(), "nothing resolved at the gateway");
    assert!(r.chan.finished().is_empty(), "the prompt stays actionable");
    assert!(
        r.store.fault().unwrap().contains("full"),
        "{:?}",
        r.store.fault()
    );
    // Room again: the same button works, and the answer is in the audit log.
    r.store.unfill();
    r.send(Input::Answer(pressed(
        OWNER,
        "full",
        Decision::AllowOnce,
        &prompt,
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.gw.decision(&"full".into()), Some(Decision::AllowOnce));
    assert_eq!(r.store.fault(), None);
    assert!(r.audit_events("full").contains(&"answered".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_the_channel_and_honours_old_prompts() {
    let r = Rig::new();
    let prompt = r.request("d1").await;
    let (store, gw) = r.stop().await;
    let r = Rig::on(MemoryChannel::new("mem", &[OWNER], &[OWNER]), store, gw);
    assert_eq!(
        r.chan.resumed(),
        std::slice::from_ref(&prompt),
        "the channel learns what was recorded before the restart"
    );
    r.send(Input::Gateway(GatewayEvent::Snapshot(vec![approval(
        "d1",
        &["allow-once", "deny"],
    )])))
    .await;
    r.send(Input::Answer(pressed(OWNER, "d1", Decision::Deny, &prompt)))
        .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.chan.finished()[0].0, prompt);
    assert!(r.chan.delivered().is_empty(), "no duplicate prompt");
    assert_eq!(r.gw.decision(&"d1".into()), Some(Decision::Deny));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_on_the_timer() {
    let r = Rig::new();
    r.chan.fail_next_deliveries(2);
    r.request("c1").await;
    assert_eq!(r.chan.delivered().len(), 1);
    let failed = r.audit_events("c1");
    assert_eq!(failed.iter().filter(|e| *e == "delivery_failed").count(), 2);
}

#[tokio::test(start_paused = true)]
async fn what_queues_while_the_target_waits_for_its_turn_goes_out_as_one_digest() {
    let r = Rig::on(
        MemoryChannel::new("mem", &[OWNER], &[OWNER]).with_digests(10),
        Arc::new(SqliteStore::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    r.request("t1").await;
    // The chat's next slot is not free yet (a rate limit): the lane waits for it.
    let turn = r.chan.turn.lock().await;
    let ids = ["t2", "t3", "t4", "t5"];
    for id in ids {
        r.gw.add(&id.into());
        let a = approval(id, &["allow-once", "deny"]);
        r.send(Input::Gateway(GatewayEvent::Requested(a))).await;
    }
    r.wait(|r| ids.iter().all(|id| !r.audit_events(id).is_empty()))
        .await;
    assert_eq!(r.chan.delivered().len(), 1, "nothing before the turn");
    drop(turn);
    r.wait(|r| r.chan.delivered().len() == 5).await;
    let digests = r.chan.digests();
    assert_eq!(digests.len(), 1);
    let rows: Vec<&str> = digests[0].1.iter().map(ApprovalId::as_str).collect();
    assert_eq!(rows, ids);
    // A press on a row rewrites the digest.
    let digest = digests[0].0.clone();
    r.send(Input::Answer(pressed(OWNER, "t4", Decision::Deny, &digest)))
        .await;
    r.wait(|r| !r.chan.digest_updates().is_empty()).await;
    let (edited, rows) = r.chan.digest_updates().pop().unwrap();
    assert_eq!(edited, digest);
    assert_eq!(rows.iter().filter(|(_, o)| o.is_some()).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resolve_the_drain_cuts_off_is_audited_as_unknown_never_as_decided() {
    let r = Rig::new();
    let prompt = r.request("a1").await;
    r.gw.set_stalled(true);
    r.send(Input::Answer(pressed(
        OWNER,
        "a1",
        Decision::AllowOnce,
        &prompt,
    )))
    .await;
    r.wait(|r| !r.gw.calls().is_empty()).await;
    // A second press waits for the first one's resolve.
    r.send(Input::Answer(pressed(OWNER, "a1", Decision::Deny, &prompt)))
        .await;
    r.wait(|r| r.audit_events("a1").len() == 4).await;
    // The gateway never answers within the drain (5 s, paused clock).
    let (store, gw) = r.stop().await;
    assert_eq!(gw.decision(&"a1".into()), None);
    let log = store.audit_log(Some(&"a1".into())).unwrap();
    let events: Vec<&str> = log.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "requested",
            "delivered",
            "answered",
            "answered",
            "resolve_failed",
            "resolve_failed"
        ],
        "every answer's trail ends saying what became of it"
    );
    let details: Vec<String> = log[4..].iter().map(|r| r.detail.to_string()).collect();
    assert!(
        details[0].contains("may or may not have been applied"),
        "{details:?}"
    );
    assert!(details[1].contains("nothing was decided"), "{details:?}");
    assert!(log[4..].iter().all(|r| r.actor.as_deref() == Some(OWNER)));
    assert_eq!(
        store.outcome(&"a1".into()).unwrap(),
        None,
        "nothing decided"
    );
}

#[tokio::test(start_paused = true)]
async fn alerts_reach_the_channels_and_a_channels_own_reach_is_watched() {
    let (mem, other) = (
        Arc::new(MemoryChannel::new("mem", &[OWNER], &[OWNER])),
        Arc::new(MemoryChannel::new("other", &["7"], &["7"])),
    );
    let policy = AlertPolicy {
        after: Some(Duration::from_secs(60)),
        device_id: "dev1".into(),
        reminders: ReminderPolicy::default(),
        probe_every: None,
    };
    let (runner, tx, _link) = Runner::new(
        vec![mem.clone() as Arc<dyn Channel>, other.clone()],
        Arc::new(MemoryGateway::default()),
        Arc::new(SqliteStore::in_memory().unwrap()),
        Arc::new(Metrics::default()),
        policy,
        TrustPolicy::default(),
    )
    .unwrap();
    let task = tokio::spawn(runner.run());
    // The gateway never connects: after a minute both chats hear of it.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let alerted = |c: &MemoryChannel| {
        c.posts()
            .iter()
            .filter(|(_, b)| matches!(b, Bulletin::Alert { .. }))
            .count()
    };
    assert_eq!((alerted(&mem), alerted(&other)), (1, 1));
    tx.send(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }))
    .await
    .unwrap();
    tx.send(Input::Gateway(GatewayEvent::Snapshot(vec![])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        matches!(mem.post_edits()[..], [(_, Bulletin::AlertOver { .. })]),
        "{:?}",
        mem.post_edits()
    );
    assert!(matches!(
        mem.posts().last(),
        Some((_, Bulletin::Back { .. }))
    ));
    // `mem` reports itself down through its watch: `other` is told, `mem` is not.
    mem.set_reach(Reach::Down {
        reason: "token revoked".into(),
        fix: "new token".into(),
    });
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!((alerted(&mem), alerted(&other)), (1, 2));
    let (_, last) = other.posts().last().cloned().unwrap();
    assert!(
        last.text().contains("mem cannot reach you (token revoked)"),
        "{}",
        last.text()
    );
    tx.send(Input::Shutdown).await.unwrap();
    task.await.unwrap();
}
