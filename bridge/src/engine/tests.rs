//! Engine behaviour with the in-memory gateway and channel: each test drives inputs and
//! checks what reached the gateway, the channel and the audit log.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::approval::Kind;
use crate::channel::Via;
use crate::channel::memory::MemoryChannel;
use crate::gateway::memory::MemoryGateway;

const OWNER: &str = "42";
const STRANGER: &str = "666";

struct Rig {
    tx: mpsc::Sender<Input>,
    chan: Arc<MemoryChannel>,
    gw: Arc<MemoryGateway>,
    store: Arc<Store>,
    link: watch::Receiver<LinkStatus>,
    task: tokio::task::JoinHandle<()>,
}

fn rig_with(store: Arc<Store>, gw: Arc<MemoryGateway>) -> Rig {
    rig_on(MemoryChannel::new("mem", &[OWNER], &[OWNER]), store, gw)
}

fn rig_on(chan: MemoryChannel, store: Arc<Store>, gw: Arc<MemoryGateway>) -> Rig {
    let chan = Arc::new(chan);
    let (engine, tx, link) = Engine::new(
        vec![chan.clone() as Arc<dyn Channel>],
        gw.clone(),
        store.clone(),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let task = tokio::spawn(engine.run());
    Rig {
        tx,
        chan,
        gw,
        store,
        link,
        task,
    }
}

fn rig() -> Rig {
    rig_with(
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    )
}

fn approval(id: &str, allowed: &[&str]) -> Approval {
    Approval::from_gateway(
        Kind::Exec,
        &json!({"id": id, "request": {"command": "touch /tmp/x", "allowedDecisions": allowed}, "createdAtMs": 1}),
    )
    .unwrap()
}

/// A button press claims the kind of its payload (the rig's approvals are all exec); a
/// typed command claims none.
fn answer(user: &str, id: &str, decision: Decision, via: Via) -> Answer {
    let kind = match via {
        Via::Prompt(_) => Some(Kind::Exec),
        Via::Command { .. } => None,
    };
    Answer {
        responder: Responder {
            channel: "mem".into(),
            user_id: user.into(),
            display: None,
        },
        request: Request::Decide {
            id: id.into(),
            decision,
            kind,
        },
        via,
        in_dm: true,
        reply: ReplyTo {
            channel: "mem".into(),
            handle: format!("cb:{user}"),
        },
    }
}

impl Rig {
    async fn send(&self, input: Input) {
        self.tx.send(input).await.unwrap();
    }

    async fn request(&self, id: &str, allowed: &[&str]) -> MessageRef {
        self.gw.add(&id.into());
        self.send(Input::Gateway(GatewayEvent::Requested(approval(
            id, allowed,
        ))))
        .await;
        self.wait(|r| r.chan.delivered().iter().any(|(a, _)| a.as_str() == id))
            .await;
        self.chan
            .delivered()
            .into_iter()
            .find(|(a, _)| a.as_str() == id)
            .unwrap()
            .1
    }

    async fn wait(&self, cond: impl Fn(&Rig) -> bool) {
        for _ in 0..400 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached within 2 s");
    }

    fn audit_events(&self, id: &str) -> Vec<String> {
        self.store
            .audit_log(Some(&id.into()))
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }

    async fn stop(self) -> (Arc<Store>, Arc<MemoryGateway>) {
        self.send(Input::Shutdown).await;
        self.task.await.unwrap();
        (self.store, self.gw)
    }
}

#[tokio::test]
async fn owner_press_resolves_and_finishes_the_prompt() {
    let r = rig();
    let prompt = r.request("a1", &["allow-once", "deny"]).await;
    r.send(Input::Answer(answer(
        OWNER,
        "a1",
        Decision::AllowOnce,
        Via::Prompt(prompt.clone()),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
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
    r.wait(|r| r.audit_events("a1").contains(&"finished".to_owned()))
        .await;
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

#[tokio::test]
async fn stranger_cannot_approve() {
    let r = rig();
    let prompt = r.request("a2", &["allow-once", "deny"]).await;
    r.send(Input::Answer(answer(
        STRANGER,
        "a2",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(r.chan.notices()[0].1, Notice::Refused(Refusal::NotAllowed));
    assert!(r.gw.calls().is_empty(), "nothing may reach the gateway");
    assert!(r.chan.finished().is_empty());
    let refused = r
        .store
        .audit_log(Some(&"a2".into()))
        .unwrap()
        .into_iter()
        .find(|a| a.event == "refused")
        .unwrap();
    assert_eq!(refused.actor.as_deref(), Some(STRANGER));
    assert_eq!(refused.detail["reason"], "not_allowed");
}

#[tokio::test]
async fn every_refusal_reason_leaves_the_approval_pending() {
    let r = rig();
    let prompt = r.request("a3", &["allow-once", "deny"]).await;
    let other = r.request("a3b", &["allow-once", "deny"]).await;
    let mut group = answer(OWNER, "a3", Decision::Deny, Via::Prompt(prompt.clone()));
    group.in_dm = false;
    let cases = [
        (group, Refusal::NotDirectMessage),
        (
            answer(
                OWNER,
                "a3",
                Decision::AllowAlways,
                Via::Prompt(prompt.clone()),
            ),
            Refusal::DecisionNotOffered,
        ),
        (
            answer(OWNER, "nope", Decision::Deny, Via::Prompt(prompt.clone())),
            Refusal::UnknownApproval,
        ),
        (
            answer(OWNER, "a3", Decision::Deny, Via::Prompt(other)),
            Refusal::NotOurPrompt,
        ),
    ];
    for (i, (a, want)) in cases.into_iter().enumerate() {
        r.send(Input::Answer(a)).await;
        r.wait(|r| r.chan.notices().len() > i).await;
        assert_eq!(r.chan.notices()[i].1, Notice::Refused(want));
    }
    assert!(r.gw.calls().is_empty());
}

/// Issue 6: `system_approve:<exec id>:allow-once` (or a plugin tag) pressed by the owner on
/// their own prompt must not resolve the exec approval.
#[tokio::test]
async fn owner_pressing_a_payload_of_another_kind_is_refused() {
    let r = rig();
    let prompt = r.request("k1", &["allow-once", "deny"]).await;
    for (i, claimed) in [Kind::System, Kind::Plugin].into_iter().enumerate() {
        let mut a = answer(
            OWNER,
            "k1",
            Decision::AllowOnce,
            Via::Prompt(prompt.clone()),
        );
        a.request = Request::Decide {
            id: "k1".into(),
            decision: Decision::AllowOnce,
            kind: Some(claimed),
        };
        r.send(Input::Answer(a)).await;
        r.wait(|r| r.chan.notices().len() > i).await;
        assert_eq!(
            r.chan.notices()[i].1,
            Notice::Refused(Refusal::WrongKind),
            "{claimed:?}"
        );
    }
    assert!(r.gw.calls().is_empty(), "nothing may reach the gateway");
    assert!(r.chan.finished().is_empty(), "the prompt stays open");
    assert_eq!(r.gw.decision(&"k1".into()), None);
    let refusals: Vec<_> = r
        .store
        .audit_log(Some(&"k1".into()))
        .unwrap()
        .into_iter()
        .filter(|l| l.event == "refused")
        .map(|l| (l.actor, l.detail["reason"].clone()))
        .collect();
    assert_eq!(
        refusals,
        vec![(Some(OWNER.to_owned()), json!("wrong_kind")); 2]
    );
    // Still pending: the right payload from the owner decides it.
    r.send(Input::Answer(answer(
        OWNER,
        "k1",
        Decision::Deny,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.gw.decision(&"k1".into()), Some(Decision::Deny));
}

#[tokio::test]
async fn malformed_answer_is_refused_and_audited() {
    let r = rig();
    let mut a = answer(
        OWNER,
        "x",
        Decision::Deny,
        Via::Command { chat: OWNER.into() },
    );
    a.request = Request::Malformed {
        raw: "exec_approve:zzz".into(),
        why: "bad uuid".into(),
    };
    r.send(Input::Answer(a)).await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(r.chan.notices()[0].1, Notice::Refused(Refusal::Malformed));
    let log = r.store.audit_log(None).unwrap();
    assert!(
        log.iter()
            .any(|l| l.event == "refused" && l.detail["raw"] == "exec_approve:zzz")
    );
}

#[tokio::test]
async fn typed_command_decides_like_a_button() {
    let r = rig();
    r.request("a4", &["allow-once", "allow-always", "deny"])
        .await;
    r.send(Input::Answer(answer(
        OWNER,
        "a4",
        Decision::AllowAlways,
        Via::Command { chat: OWNER.into() },
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.gw.decision(&"a4".into()), Some(Decision::AllowAlways));
}

#[tokio::test]
async fn outcome_from_elsewhere_finishes_prompts_and_later_press_learns_it() {
    let r = rig();
    let prompt = r.request("a5", &["allow-once", "deny"]).await;
    let outcome = Outcome::Decided {
        decision: Decision::Deny,
        by: Decider::Elsewhere {
            resolved_by: Some("cli".into()),
        },
        at_ms: 5,
    };
    r.send(Input::Gateway(GatewayEvent::Ended {
        id: "a5".into(),
        outcome: outcome.clone(),
    }))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.chan.finished()[0], (prompt.clone(), outcome.clone()));
    // Pressed after the end: told the canonical outcome, nothing resolved, not re-edited.
    r.send(Input::Answer(answer(
        OWNER,
        "a5",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::AlreadyFinished {
            id: "a5".into(),
            outcome
        }
    );
    assert!(r.gw.calls().is_empty());
    assert_eq!(r.chan.finished().len(), 1);
}

#[tokio::test]
async fn our_resolve_echoed_by_the_gateway_is_credited_to_the_responder() {
    let r = rig();
    let prompt = r.request("a6", &["allow-once", "deny"]).await;
    // The gateway's resolved event usually arrives before the RPC answer.
    r.send(Input::Answer(answer(
        OWNER,
        "a6",
        Decision::Deny,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.gw.calls().is_empty()).await;
    r.send(Input::Gateway(GatewayEvent::Ended {
        id: "a6".into(),
        outcome: Outcome::Decided {
            decision: Decision::Deny,
            by: Decider::Elsewhere { resolved_by: None },
            at_ms: 1,
        },
    }))
    .await;
    r.wait(|r| !r.chan.finished().is_empty() && !r.chan.notices().is_empty())
        .await;
    assert!(
        matches!(&r.chan.finished()[0].1, Outcome::Decided { by: Decider::Responder(who), .. } if who.user_id == OWNER)
    );
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::Accepted {
            id: "a6".into(),
            decision: Decision::Deny
        }
    );
}

#[tokio::test]
async fn gateway_unreachable_never_decides() {
    let r = rig();
    let prompt = r.request("a7", &["allow-once", "deny"]).await;
    r.gw.set_unavailable(true);
    r.send(Input::Answer(answer(
        OWNER,
        "a7",
        Decision::AllowOnce,
        Via::Prompt(prompt.clone()),
    )))
    .await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::Refused(Refusal::GatewayUnavailable)
    );
    assert!(r.chan.finished().is_empty(), "the prompt stays actionable");
    // Once the gateway is back the same button works.
    r.gw.set_unavailable(false);
    r.send(Input::Answer(answer(
        OWNER,
        "a7",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.gw.decision(&"a7".into()), Some(Decision::AllowOnce));
}

#[tokio::test]
async fn an_answer_the_database_cannot_record_is_refused_not_resolved() {
    let r = rig();
    let prompt = r.request("full", &["allow-once", "deny"]).await;
    // A full database: SQLite refuses any write that needs a new page.
    r.store.fill_up();
    // Fill the last pages with the smallest records there are.
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
    assert!(r.store.fault().is_some(), "the fault is remembered");
    r.send(Input::Answer(answer(
        OWNER,
        "full",
        Decision::AllowOnce,
        Via::Prompt(prompt.clone()),
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
    r.send(Input::Answer(answer(
        OWNER,
        "full",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.gw.decision(&"full".into()), Some(Decision::AllowOnce));
    assert_eq!(r.store.fault(), None);
    assert!(r.audit_events("full").contains(&"answered".to_string()));
}

#[tokio::test]
async fn not_found_at_the_gateway_finishes_the_prompt_as_gone() {
    let r = rig();
    let prompt = r.request("a8", &["allow-once", "deny"]).await;
    r.gw.forget_all();
    r.send(Input::Answer(answer(
        OWNER,
        "a8",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert!(matches!(r.chan.finished()[0].1, Outcome::Gone { .. }));
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert!(matches!(
        r.chan.notices()[0].1,
        Notice::AlreadyFinished {
            outcome: Outcome::Gone { .. },
            ..
        }
    ));
}

#[tokio::test]
async fn replay_prompts_once_and_finishes_what_vanished() {
    let r = rig();
    let p1 = r.request("b1", &["deny"]).await;
    // Reconnect: the snapshot repeats b1 (no new prompt) and lacks nothing else yet.
    r.send(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }))
    .await;
    r.send(Input::Gateway(GatewayEvent::Snapshot(vec![
        approval("b1", &["deny"]),
        approval("b2", &["deny"]),
    ])))
    .await;
    r.wait(|r| r.chan.delivered().len() == 2).await;
    assert!(r.link.borrow().replayed);
    // The gateway restarted and forgot both.
    r.send(Input::Gateway(GatewayEvent::Snapshot(vec![]))).await;
    r.wait(|r| r.chan.finished().len() == 2).await;
    assert!(
        r.chan
            .finished()
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Gone { .. }))
    );
    assert!(r.chan.finished().iter().any(|(m, _)| *m == p1));
    assert_eq!(r.chan.delivered().len(), 2, "no duplicate prompts");
}

#[tokio::test]
async fn transient_delivery_failure_is_retried_until_delivered() {
    let r = rig();
    r.chan.fail_next_deliveries(2);
    r.send(Input::Gateway(GatewayEvent::Requested(approval(
        "c1",
        &["deny"],
    ))))
    .await;
    for _ in 0..100 {
        if !r.chan.delivered().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.chan.delivered().len(), 1);
    let log = r.audit_events("c1");
    assert_eq!(log.iter().filter(|e| *e == "delivery_failed").count(), 2);
}

#[tokio::test]
async fn restart_keeps_prompts_honoured_and_sends_no_duplicates() {
    let r = rig();
    let prompt = r.request("d1", &["allow-once", "deny"]).await;
    let (store, gw) = r.stop().await;
    // A new engine on the same store: the same approval replayed, the old button pressed.
    let r = rig_with(store, gw);
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
    r.send(Input::Answer(answer(
        OWNER,
        "d1",
        Decision::Deny,
        Via::Prompt(prompt.clone()),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(r.chan.finished()[0].0, prompt);
    assert!(
        r.chan.delivered().is_empty(),
        "no duplicate prompt after restart"
    );
    assert_eq!(r.gw.decision(&"d1".into()), Some(Decision::Deny));
}

#[tokio::test]
async fn pending_lists_only_for_allowed_responders() {
    let r = rig();
    r.request("e1", &["deny"]).await;
    let mut ask = answer(
        OWNER,
        "e1",
        Decision::Deny,
        Via::Command { chat: OWNER.into() },
    );
    ask.request = Request::ListPending;
    let mut stranger = ask.clone();
    stranger.responder.user_id = STRANGER.into();
    stranger.reply.handle = format!("cb:{STRANGER}");
    r.send(Input::Answer(ask)).await;
    r.send(Input::Answer(stranger)).await;
    r.wait(|r| r.chan.notices().len() == 2).await;
    let notices = r.chan.notices();
    let pending = notices
        .iter()
        .find(|(to, _)| to.handle == format!("cb:{OWNER}"))
        .unwrap();
    assert!(
        matches!(&pending.1, Notice::Pending(list) if list.len() == 1 && list[0].id.as_str() == "e1")
    );
    let refused = notices
        .iter()
        .find(|(to, _)| to.handle == format!("cb:{STRANGER}"))
        .unwrap();
    assert_eq!(refused.1, Notice::Refused(Refusal::NotAllowed));
}

#[tokio::test]
async fn losing_a_race_tells_the_winner_outcome_once_it_arrives() {
    let r = rig();
    let prompt = r.request("f1", &["allow-once", "deny"]).await;
    // Another client decided at the gateway; its resolved event has not reached us yet.
    use crate::gateway::Resolver;
    r.gw.resolve(&"f1".into(), Kind::Exec, Decision::Deny)
        .await
        .unwrap();
    r.send(Input::Answer(answer(
        OWNER,
        "f1",
        Decision::AllowOnce,
        Via::Prompt(prompt),
    )))
    .await;
    r.wait(|r| r.gw.calls().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        r.chan.notices().is_empty(),
        "no guess before the canonical outcome"
    );
    let outcome = Outcome::Decided {
        decision: Decision::Deny,
        by: Decider::Elsewhere {
            resolved_by: Some("cli".into()),
        },
        at_ms: 3,
    };
    r.send(Input::Gateway(GatewayEvent::Ended {
        id: "f1".into(),
        outcome: outcome.clone(),
    }))
    .await;
    r.wait(|r| !r.chan.notices().is_empty()).await;
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::AlreadyFinished {
            id: "f1".into(),
            outcome
        }
    );
}

#[tokio::test]
async fn press_arriving_before_the_delivery_is_recorded_still_counts() {
    let r = rig();
    r.gw.add(&"g1".into());
    // The owner sees the message before the engine hears that delivery finished: feed
    // the press first, then the request, both before the delivery task reports back.
    r.send(Input::Gateway(GatewayEvent::Requested(approval(
        "g1",
        &["allow-once", "deny"],
    ))))
    .await;
    let early = MessageRef {
        target: Target {
            channel: "mem".into(),
            chat: OWNER.into(),
        },
        message: "101".into(),
    };
    r.send(Input::Answer(answer(
        OWNER,
        "g1",
        Decision::AllowOnce,
        Via::Prompt(early.clone()),
    )))
    .await;
    r.wait(|r| !r.chan.finished().is_empty()).await;
    assert_eq!(
        r.chan.delivered()[0].1,
        early,
        "the press named the prompt that was being delivered"
    );
    assert_eq!(r.gw.decision(&"g1".into()), Some(Decision::AllowOnce));
    assert_eq!(
        r.chan.notices()[0].1,
        Notice::Accepted {
            id: "g1".into(),
            decision: Decision::AllowOnce
        }
    );
}

/// A rig whose channel sends digests of up to `capacity` rows.
fn digest_rig(capacity: usize, store: Arc<Store>, gw: Arc<MemoryGateway>) -> Rig {
    rig_on(
        MemoryChannel::new("mem", &[OWNER], &[OWNER]).with_digests(capacity),
        store,
        gw,
    )
}

impl Rig {
    /// Requests `ids` (allow-once or deny) and waits until the engine has recorded each.
    async fn request_all(&self, ids: &[&str]) {
        for id in ids {
            self.gw.add(&(*id).into());
            self.send(Input::Gateway(GatewayEvent::Requested(approval(
                id,
                &["allow-once", "deny"],
            ))))
            .await;
        }
        self.wait(|r| ids.iter().all(|id| !r.audit_events(id).is_empty()))
            .await;
    }

    /// Requests `ids` while the first delivery is held in flight, so the rest queue up.
    async fn request_burst(&self, ids: &[&str]) {
        let gate = self.chan.gate.lock().await;
        let (first, rest) = ids.split_at(1);
        self.request_all(first).await;
        self.wait(|r| r.chan.at_gate() == 1).await;
        // Every request is in the engine before the first delivery may finish.
        self.request_all(rest).await;
        drop(gate);
        self.wait(|r| r.chan.delivered().len() == ids.len()).await;
    }

    fn ended_rows(&self) -> usize {
        self.chan
            .digest_updates()
            .last()
            .map(|(_, rows)| rows.iter().filter(|(_, o)| o.is_some()).count())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn approvals_queued_behind_a_busy_target_go_out_as_one_digest() {
    let r = digest_rig(
        10,
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    r.request_burst(&["g1", "g2", "g3", "g4", "g5", "g6"]).await;
    let digests = r.chan.digests();
    assert_eq!(digests.len(), 1, "one digest for what queued up");
    let (digest, rows) = &digests[0];
    let row_ids: Vec<&str> = rows.iter().map(ApprovalId::as_str).collect();
    assert_eq!(row_ids, ["g2", "g3", "g4", "g5", "g6"], "in request order");
    assert_ne!(
        r.chan.delivered()[0].1,
        *digest,
        "the first had its own prompt"
    );

    // A press on a digest row decides that approval only and rewrites the digest.
    r.send(Input::Answer(answer(
        OWNER,
        "g4",
        Decision::Deny,
        Via::Prompt(digest.clone()),
    )))
    .await;
    r.wait(|r| r.ended_rows() == 1).await;
    assert_eq!(r.gw.decision(&"g4".into()), Some(Decision::Deny));
    assert_eq!(r.gw.decision(&"g3".into()), None);
    let (edited, shown) = r.chan.digest_updates().pop().unwrap();
    assert_eq!(edited, *digest);
    assert_eq!(shown.len(), 5, "every row is shown");
    assert!(
        r.chan.finished().is_empty(),
        "a digest is rewritten, not finished"
    );

    // The rest end elsewhere at once: few rewrites, and in the end every row shows its outcome.
    for id in ["g2", "g3", "g5", "g6"] {
        r.send(Input::Gateway(GatewayEvent::Ended {
            id: id.into(),
            outcome: Outcome::Expired { at_ms: 5 },
        }))
        .await;
    }
    r.wait(|r| r.ended_rows() == 5).await;
    assert!(
        r.chan.digest_updates().len() <= 5,
        "outcomes arriving together share rewrites"
    );
    for id in ["g2", "g3", "g4", "g5", "g6"] {
        r.wait(|r| r.audit_events(id).contains(&"finished".to_owned()))
            .await;
    }
}

#[tokio::test]
async fn what_queues_while_the_target_waits_for_its_turn_shares_one_digest() {
    let r = digest_rig(
        10,
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    r.request_burst(&["t1"]).await;
    // The chat's next slot is not free yet (a rate limit): the lane waits for it.
    let turn = r.chan.turn.lock().await;
    let ids = ["t2", "t3", "t4", "t5"];
    r.request_all(&ids).await;
    assert_eq!(
        r.chan.delivered().len(),
        1,
        "nothing goes out before the turn"
    );
    drop(turn);
    r.wait(|r| r.chan.delivered().len() == 5).await;
    let digests = r.chan.digests();
    assert_eq!(digests.len(), 1);
    let rows: Vec<&str> = digests[0].1.iter().map(ApprovalId::as_str).collect();
    assert_eq!(rows, ids, "t2 waited for its turn with the rest, not alone");
}

#[tokio::test]
async fn a_digest_carries_at_most_the_channel_capacity() {
    let r = digest_rig(
        3,
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    r.request_burst(&["h1", "h2", "h3", "h4", "h5", "h6", "h7"])
        .await;
    let sizes: Vec<usize> = r.chan.digests().iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(sizes, [3, 3]);
}

#[tokio::test]
async fn an_approval_ending_while_queued_is_never_sent() {
    let r = digest_rig(
        10,
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    let gate = r.chan.gate.lock().await;
    for id in ["q1", "q2", "q3"] {
        r.send(Input::Gateway(GatewayEvent::Requested(approval(
            id,
            &["deny"],
        ))))
        .await;
        r.wait(|r| r.chan.at_gate() == 1).await;
    }
    r.send(Input::Gateway(GatewayEvent::Ended {
        id: "q2".into(),
        outcome: Outcome::Expired { at_ms: 5 },
    }))
    .await;
    r.wait(|r| r.audit_events("q2").contains(&"ended".to_owned()))
        .await;
    drop(gate);
    r.wait(|r| r.chan.delivered().len() == 2).await;
    let sent: Vec<String> = r
        .chan
        .delivered()
        .iter()
        .map(|(id, _)| id.0.clone())
        .collect();
    assert_eq!(sent, ["q1", "q3"]);
}

#[tokio::test]
async fn digest_rows_survive_a_restart() {
    let r = digest_rig(
        10,
        Arc::new(Store::in_memory().unwrap()),
        Arc::new(MemoryGateway::default()),
    );
    r.request_burst(&["k1", "k2", "k3"]).await;
    let digest = r.chan.digests()[0].0.clone();
    let (store, gw) = r.stop().await;

    let r = digest_rig(10, store, gw);
    r.send(Input::Gateway(GatewayEvent::Snapshot(vec![
        approval("k1", &["allow-once", "deny"]),
        approval("k2", &["allow-once", "deny"]),
        approval("k3", &["allow-once", "deny"]),
    ])))
    .await;
    r.send(Input::Answer(answer(
        OWNER,
        "k3",
        Decision::AllowOnce,
        Via::Prompt(digest.clone()),
    )))
    .await;
    r.wait(|r| r.ended_rows() == 1).await;
    assert_eq!(r.gw.decision(&"k3".into()), Some(Decision::AllowOnce));
    assert!(r.chan.delivered().is_empty(), "no duplicate after restart");
    let (edited, rows) = r.chan.digest_updates().pop().unwrap();
    assert_eq!(edited, digest);
    assert_eq!(rows.len(), 2, "both open rows of the digest are shown");
}

/// Found by the attack suite (tests/e2e/attacks.rs): the real gateway answers a second resolve
/// of the same approval with another success, so a double tap was resolved, audited and
/// acknowledged twice. A second answer now waits for the first resolve and learns its outcome.
#[tokio::test]
async fn a_double_tap_resolves_once() {
    let r = rig();
    let prompt = r.request("d1", &["allow-once", "deny"]).await;
    for _ in 0..2 {
        r.send(Input::Answer(answer(
            OWNER,
            "d1",
            Decision::Deny,
            Via::Prompt(prompt.clone()),
        )))
        .await;
    }
    r.wait(|r| r.chan.notices().len() == 2).await;
    assert_eq!(
        r.gw.calls(),
        [("d1".into(), Decision::Deny)],
        "one resolve call"
    );
    let notices: Vec<Notice> = r.chan.notices().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        notices[0],
        Notice::Accepted {
            id: "d1".into(),
            decision: Decision::Deny
        }
    );
    assert!(
        matches!(
            &notices[1],
            Notice::AlreadyFinished {
                outcome: Outcome::Decided {
                    decision: Decision::Deny,
                    ..
                },
                ..
            }
        ),
        "{:?}",
        notices[1]
    );
    let resolved = r
        .audit_events("d1")
        .into_iter()
        .filter(|e| e == "resolved")
        .count();
    assert_eq!(resolved, 1);
}

#[tokio::test(start_paused = true)]
async fn a_resolve_the_drain_cuts_off_is_audited_as_unknown_never_as_decided() {
    let r = rig();
    let prompt = r.request("a1", &["allow-once", "deny"]).await;
    r.gw.set_stalled(true);
    r.send(Input::Answer(answer(
        OWNER,
        "a1",
        Decision::AllowOnce,
        Via::Prompt(prompt.clone()),
    )))
    .await;
    r.wait(|r| !r.gw.calls().is_empty()).await;
    // A second press waits for the first one's resolve.
    r.send(Input::Answer(answer(
        OWNER,
        "a1",
        Decision::Deny,
        Via::Prompt(prompt),
    )))
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
