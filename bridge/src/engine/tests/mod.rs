//! The engine core's behaviour, inputs in and effects out: no runtime, no sleeps. A
//! [`Sim`] steps the core, carries out the store effects on a `MemoryStore` with the
//! runner's own `inline`, and keeps the rest (deliveries, edits, resolves, timers) for the
//! test to complete. Each test reads the effects as text lines (`expect!`; `UPDATE_EXPECT=1`
//! rewrites a snapshot after a deliberate change). `runner.rs` wires the real ports.

mod alerts;
mod missed;
mod probe;
mod reminders;
mod runner;
mod trust;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use expect_test::{Expect, expect};
use serde_json::json;

use super::runner::Inline;
use super::*;
use crate::approval::{Choice, Decider, Kind, Responder, Window};
use crate::channel::memory::MemoryChannel;
use crate::channel::{Refusal, Request, Via};
use crate::store::{MemoryStore, Store};
use crate::telemetry::Metrics;

const OWNER: &str = "42";
const STRANGER: &str = "666";

fn approval(id: &str, allowed: &[&str]) -> Approval {
    Approval::from_gateway(
        Kind::Exec,
        &json!({"id": id, "request": {"command": "touch /tmp/x", "allowedDecisions": allowed}, "createdAtMs": 1}),
    )
    .unwrap()
}

/// A button press claims the kind of its payload (the approvals here are all exec); a
/// typed command claims none.
fn answer(user: &str, id: &str, choice: impl Into<Choice>, via: Via) -> Answer {
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
            choice: choice.into(),
            kind,
        },
        via,
        in_dm: true,
        reply: ReplyTo::new("mem", format!("cb:{user}")),
    }
}

fn typed(user: &str, id: &str, choice: impl Into<Choice>) -> Answer {
    answer(user, id, choice, Via::Command { chat: user.into() })
}

fn pressed(user: &str, id: &str, choice: impl Into<Choice>, prompt: &MessageRef) -> Answer {
    answer(user, id, choice, Via::Prompt(prompt.clone()))
}

/// A command an owner (or anyone) types that decides nothing.
fn command(user: &str, request: Request) -> Answer {
    Answer {
        responder: Responder {
            channel: "mem".into(),
            user_id: user.into(),
            display: None,
        },
        request,
        via: Via::Command { chat: user.into() },
        in_dm: true,
        reply: ReplyTo::new("mem", format!("cb:{user}")),
    }
}

fn msg(n: u64) -> MessageRef {
    MessageRef {
        target: owner_dm(),
        message: n.to_string(),
    }
}

fn owner_dm() -> Target {
    Target {
        channel: "mem".into(),
        chat: OWNER.into(),
    }
}

fn decided_elsewhere(decision: Decision) -> Outcome {
    Outcome::Decided {
        decision,
        by: Decider::Elsewhere {
            resolved_by: Some("cli".into()),
        },
        at_ms: 5,
    }
}

/// The core with the effects the runner would carry out at once (store writes and reads,
/// the `answered` record) carried out on a `MemoryStore`, and the others kept waiting.
struct Sim {
    core: Core,
    channel: Arc<MemoryChannel>,
    store: Arc<MemoryStore>,
    metrics: Metrics,
    base: Instant,
    now: Now,
    next_message: u64,
    /// Effects that report back later, in the order they were asked for.
    waiting: VecDeque<Effect>,
    /// Every effect so far, as text.
    log: Vec<String>,
    policy: AlertPolicy,
    trust: TrustPolicy,
    /// What the next history read answers.
    history: Vec<SeenRow>,
}

impl Sim {
    fn new() -> Sim {
        Sim::on(MemoryChannel::new("mem", &[OWNER], &[OWNER]))
    }

    /// A core whose channel sends digests of up to `capacity` rows.
    fn with_digests(capacity: usize) -> Sim {
        Sim::on(MemoryChannel::new("mem", &[OWNER], &[OWNER]).with_digests(capacity))
    }

    fn on(channel: MemoryChannel) -> Sim {
        Sim::restored(
            Arc::new(channel),
            Arc::new(MemoryStore::started_at(0)),
            100,
            no_alerts(),
        )
    }

    /// A core on `channels` (the first is `channel`) that posts path alerts after `after_ms`.
    fn with_alerts(channels: Vec<MemoryChannel>, after_ms: u64) -> Sim {
        let policy = AlertPolicy {
            after: Some(Duration::from_millis(after_ms)),
            device_id: "dev1".into(),
            reminders: ReminderPolicy::default(),
            probe_every: None,
        };
        Sim::with_policy(channels, policy)
    }

    /// A core on `channels` (the first is `channel`) with `policy`.
    fn with_policy(channels: Vec<MemoryChannel>, policy: AlertPolicy) -> Sim {
        let mut channels = channels.into_iter().map(Arc::new);
        let first = channels.next().expect("a channel");
        let mut sim = Sim::restored(
            first,
            Arc::new(MemoryStore::started_at(0)),
            100,
            policy.clone(),
        );
        let others: Vec<Arc<dyn Channel>> = channels.map(|c| c as Arc<dyn Channel>).collect();
        if !others.is_empty() {
            let mut all = vec![sim.channel.clone() as Arc<dyn Channel>];
            all.extend(others);
            let trust = (TrustPolicy::default(), Vec::new());
            sim.core = Core::new(all, Vec::new(), sim.now, 7, policy, (None, 0), trust);
            sim.log.clear();
            sim.waiting.clear();
            sim.input(Input::Start);
        }
        sim
    }

    /// A core offering time-boxed allows of `windows` (`1h`, …) at gateway `ws://gw`.
    fn with_trust(windows: &[&str]) -> Sim {
        Sim::restored_trusting(
            Arc::new(MemoryChannel::new("mem", &[OWNER], &[OWNER])),
            Arc::new(MemoryStore::started_at(0)),
            100,
            no_alerts(),
            trusting(windows),
        )
    }

    fn restored(
        channel: Arc<MemoryChannel>,
        store: Arc<MemoryStore>,
        next_message: u64,
        policy: AlertPolicy,
    ) -> Sim {
        Sim::restored_trusting(channel, store, next_message, policy, TrustPolicy::default())
    }

    fn restored_trusting(
        channel: Arc<MemoryChannel>,
        store: Arc<MemoryStore>,
        next_message: u64,
        policy: AlertPolicy,
        trust: TrustPolicy,
    ) -> Sim {
        let base = Instant::now();
        let now = Now {
            at: base,
            unix_ms: 1_000,
        };
        let open = store.open_approvals().unwrap();
        let core = Core::new(
            vec![channel.clone() as Arc<dyn Channel>],
            open,
            now,
            7,
            policy.clone(),
            (store.history_mark().unwrap(), store.first_start_ms()),
            (trust.clone(), store.open_grants(0).unwrap()),
        );
        let mut sim = Sim {
            core,
            channel,
            store,
            metrics: Metrics::default(),
            base,
            now,
            next_message,
            waiting: VecDeque::new(),
            log: Vec::new(),
            policy,
            trust,
            history: Vec::new(),
        };
        sim.input(Input::Start);
        sim
    }

    /// The same store and channel after a restart: what was in flight is lost.
    fn restart(self) -> Sim {
        Sim::restored_trusting(
            self.channel,
            self.store,
            self.next_message,
            self.policy,
            self.trust,
        )
    }

    fn advance(&mut self, ms: u64) {
        self.now.at += Duration::from_millis(ms);
        self.now.unix_ms += ms as i64;
    }

    /// Steps the core with `input` and whatever the store effects report back at once.
    fn input(&mut self, input: Input) {
        let mut due = VecDeque::from([input]);
        while let Some(input) = due.pop_front() {
            for effect in self.core.step(self.now, input) {
                self.log.push(self.line(&effect));
                if let Some(done) = self.carry_out(effect) {
                    due.push_back(done);
                }
            }
        }
    }

    /// Store effects run at once, as the runner runs them; the rest wait for the test.
    fn carry_out(&mut self, effect: Effect) -> Option<Input> {
        let now = self.now.at;
        match super::runner::inline(self.store.as_ref(), &self.metrics, || now, effect) {
            Inline::Done(done) => done,
            Inline::Elsewhere(Effect::Notify { .. } | Effect::EditPost { .. }) => None,
            // The gateway's history answers at once with what the test put there.
            Inline::Elsewhere(Effect::ReadHistory { .. }) => Some(Input::HistoryRead {
                result: Ok(std::mem::take(&mut self.history)),
            }),
            Inline::Elsewhere(other) => {
                self.waiting.push_back(other);
                None
            }
        }
    }

    /// Text lines for the effects logged since the last call.
    fn take(&mut self) -> String {
        let mut out = std::mem::take(&mut self.log).join("\n");
        out.push('\n');
        out
    }

    fn check(&mut self, want: Expect) {
        want.assert_eq(&self.take());
    }

    /// The first waiting effect `pick` accepts, taken out.
    fn take_waiting(&mut self, pick: impl Fn(&Effect) -> bool) -> Option<Effect> {
        let i = self.waiting.iter().position(pick)?;
        self.waiting.remove(i)
    }

    /// Completes the oldest waiting delivery: the channel sends one message holding
    /// `carried` of its approvals (all of them when `None`).
    fn deliver_carrying(&mut self, carried: Option<usize>) -> MessageRef {
        let Some(Effect::Deliver {
            target, approvals, ..
        }) = self.take_waiting(|e| matches!(e, Effect::Deliver { .. }))
        else {
            panic!("no delivery waits: {:?}", self.waiting);
        };
        self.next_message += 1;
        let prompt = MessageRef {
            target: target.clone(),
            message: self.next_message.to_string(),
        };
        let carried = carried.unwrap_or(approvals.len());
        let ids = approvals.into_iter().map(|a| a.id).collect();
        self.input(Input::Delivered {
            target,
            ids,
            result: Ok((prompt.clone(), carried)),
        });
        prompt
    }

    fn deliver(&mut self) -> MessageRef {
        self.deliver_carrying(None)
    }

    /// Fails the oldest waiting delivery with `err`.
    fn fail_delivery(&mut self, err: ChannelError) {
        let Some(Effect::Deliver {
            target, approvals, ..
        }) = self.take_waiting(|e| matches!(e, Effect::Deliver { .. }))
        else {
            panic!("no delivery waits");
        };
        let ids = approvals.into_iter().map(|a| a.id).collect();
        self.input(Input::Delivered {
            target,
            ids,
            result: Err(err),
        });
    }

    /// A new approval, prompted and delivered: its prompt.
    fn request(&mut self, id: &str, allowed: &[&str]) -> MessageRef {
        self.input(Input::Gateway(GatewayEvent::Requested(approval(
            id, allowed,
        ))));
        self.deliver()
    }

    fn answer(&mut self, a: Answer) {
        self.input(Input::Answer(a));
    }

    fn ended(&mut self, id: &str, outcome: Outcome) {
        self.input(Input::Gateway(GatewayEvent::Ended {
            id: id.into(),
            outcome,
        }));
    }

    /// Answers the oldest waiting resolve with `result`.
    fn resolve(&mut self, result: Result<(), GatewayError>) {
        let Some(Effect::Resolve {
            by, id, decision, ..
        }) = self.take_waiting(|e| matches!(e, Effect::Resolve { .. }))
        else {
            panic!("no resolve waits: {:?}", self.waiting);
        };
        self.input(Input::ResolveDone {
            by,
            id,
            decision,
            result,
            took: Duration::from_millis(3),
        });
    }

    /// Completes every waiting prompt edit and digest rewrite with `Ok`, as they come.
    fn finish_all(&mut self) {
        while let Some(e) =
            self.take_waiting(|e| matches!(e, Effect::Finish { .. } | Effect::UpdateDigest { .. }))
        {
            match e {
                Effect::Finish {
                    prompt, approval, ..
                } => self.input(Input::Finished {
                    id: approval.id,
                    prompt,
                    result: Ok(()),
                }),
                Effect::UpdateDigest { prompt, ended, .. } => self.input(Input::DigestUpdated {
                    prompt,
                    ended,
                    result: Ok(()),
                }),
                _ => unreachable!(),
            }
        }
    }

    /// The target's turn came (the oldest `AwaitTurn`).
    fn turn(&mut self) {
        let Some(Effect::AwaitTurn { target, fresh }) =
            self.take_waiting(|e| matches!(e, Effect::AwaitTurn { .. }))
        else {
            panic!("no turn awaited");
        };
        self.input(Input::TargetReady {
            target,
            fresh,
            waited: Duration::from_millis(40),
        });
    }

    /// Moves the clock to the oldest armed timer and fires it.
    fn fire_timer(&mut self) {
        let Some(Effect::Arm { at, timer }) =
            self.take_waiting(|e| matches!(e, Effect::Arm { .. }))
        else {
            panic!("no timer armed");
        };
        let ahead = at.saturating_duration_since(self.now.at);
        self.advance(ahead.as_millis() as u64);
        self.input(Input::Timer(timer));
    }

    fn audit_events(&self, id: &str) -> Vec<String> {
        self.store
            .audit_log(None)
            .unwrap()
            .into_iter()
            .filter(|r| r.approval_id.as_deref() == Some(id))
            .map(|r| r.event)
            .collect()
    }

    /// One effect as a line of text.
    fn line(&self, e: &Effect) -> String {
        let ms = |d: &Duration| format!("{}ms", d.as_millis());
        match e {
            Effect::Store(Write::Approval(a)) => format!("store approval {}", a.id),
            Effect::Store(Write::Outcome { id, outcome, .. }) => {
                format!("store outcome {id}: {}", outcome_text(outcome))
            }
            Effect::Store(Write::Prompt { id, prompt, .. }) => {
                format!("store prompt {id} = {}", message_text(prompt))
            }
            Effect::Store(Write::PromptFinished { id, prompt, .. }) => {
                format!("store finished {id} = {}", message_text(prompt))
            }
            Effect::Store(Write::HistoryMark(m)) => format!("store history mark {m}"),
            Effect::Store(Write::GrantRevoked { grant, by, .. }) => {
                format!("store revoked {grant} by {}", by.user_id)
            }
            Effect::RecordGrant { grant, .. } => format!(
                "record grant {} of {} for {} on {:?} until {}",
                grant.id, grant.by.user_id, grant.minted_by, grant.scope.command, grant.until_ms
            ),
            Effect::RecordGrantUse { grant, id, .. } => format!("record use of {grant} on {id}"),
            Effect::Emit(ev) => format!("emit {}", event_text(ev)),
            Effect::RecordAnswer { answer, .. } => format!("record answer {}", answer_text(answer)),
            Effect::LookupOutcome { answer, .. } => format!("look up {}", answer_text(answer)),
            Effect::AwaitTurn { target, fresh } => format!("await turn {target} fresh={fresh}"),
            Effect::Deliver {
                target,
                approvals,
                seen,
                waited,
            } => {
                let ids: Vec<&str> = approvals.iter().map(|a| a.id.as_str()).collect();
                let seen = match seen {
                    Some(s) => format!(" overhead from +{}", ms(&s.duration_since(self.base))),
                    None => String::new(),
                };
                format!(
                    "deliver {target} [{}]{seen} waited {}",
                    ids.join(" "),
                    ms(waited)
                )
            }
            Effect::Finish {
                prompt, outcome, ..
            } => format!("finish {}: {}", message_text(prompt), outcome_text(outcome)),
            Effect::Refresh { prompt, approval } => {
                format!("refresh {} for {}", message_text(prompt), approval.id)
            }
            Effect::UpdateDigest {
                prompt,
                rows,
                ended,
            } => {
                let rows: Vec<String> = rows
                    .iter()
                    .map(|r| match &r.outcome {
                        Some(o) => format!("{}={}", r.approval.id, outcome_text(o)),
                        None => format!("{}=pending", r.approval.id),
                    })
                    .collect();
                let ended: Vec<&str> = ended.iter().map(ApprovalId::as_str).collect();
                format!(
                    "rewrite digest {} rows [{}] ended [{}]",
                    message_text(prompt),
                    rows.join(", "),
                    ended.join(" ")
                )
            }
            Effect::Resolve {
                id, decision, by, ..
            } => match by {
                Asker::Answer(a) => format!("resolve {id} {decision} for {}", a.responder.user_id),
                Asker::Grant { grant, owner } => {
                    format!("resolve {id} {decision} under {grant} of {}", owner.user_id)
                }
            },
            Effect::Notify { to, notice } => {
                let to = to
                    .handle::<String>()
                    .expect("the memory channel's handles are text");
                format!("notify {to}: {}", notice_text(notice))
            }
            Effect::Post {
                target, bulletin, ..
            } => format!("post {target}: {}", bulletin.text()),
            Effect::ReadHistory { mark, floor_ms } => format!(
                "read history after {} from {floor_ms}",
                mark.as_ref().map_or("-".to_owned(), ToString::to_string)
            ),
            Effect::RaiseProbe {
                probe, timeout_ms, ..
            } => format!("raise probe #{probe} living {timeout_ms}ms"),
            Effect::ProbeDone { ticket, report } => {
                format!("probe done for ticket {ticket}: {}", report.text())
            }
            Effect::EditPost { post, bulletin } => {
                format!("edit post {}: {}", message_text(post), bulletin.text())
            }
            Effect::Arm { at, timer } => {
                let when = ms(&at.saturating_duration_since(self.now.at));
                let what = match timer {
                    Timer::Lane(t) => format!("lane {t}"),
                    Timer::Finish { id, prompt } => format!("finish {id} {}", message_text(prompt)),
                    Timer::Digest(m) => format!("digest {}", message_text(m)),
                    Timer::Alert { path, epoch } => format!("alert {path:?} #{epoch}"),
                    Timer::Nudge { id, nudge } => format!("nudge {id} {nudge:?}"),
                    Timer::Probe(n) => format!("probe #{n}"),
                    Timer::ProbeDue => "scheduled probe".to_owned(),
                };
                format!("arm +{when}: {what}")
            }
        }
    }
}

/// Alerts off: the behaviour tests before them read as they did.
fn no_alerts() -> AlertPolicy {
    AlertPolicy {
        after: None,
        device_id: String::new(),
        reminders: ReminderPolicy::default(),
        probe_every: None,
    }
}

fn message_text(m: &MessageRef) -> String {
    format!("{}#{}", m.target, m.message)
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Decided {
            decision,
            by: Decider::Responder(r),
            ..
        } => format!("{decision} by {}", r.user_id),
        Outcome::Decided {
            decision,
            by: Decider::Elsewhere { resolved_by },
            ..
        } => format!("{decision} elsewhere by {resolved_by:?}"),
        Outcome::Decided {
            decision,
            by: Decider::Grant { grant, owner, .. },
            ..
        } => format!("{decision} by grant {grant} of {}", owner.user_id),
        Outcome::Expired { .. } => "expired".into(),
        Outcome::Gone { .. } => "gone".into(),
        Outcome::NoRoute { .. } => "no-route".into(),
        Outcome::Cancelled { reason, .. } => format!("cancelled ({reason:?})"),
    }
}

fn answer_text(a: &Answer) -> String {
    let what = match &a.request {
        Request::Decide { id, choice, .. } => format!("{choice} {id}"),
        Request::ListPending => "/pending".into(),
        Request::ListGrants => "/grants".into(),
        Request::Revoke { grant } => format!("/revoke {grant}"),
        Request::Probe => "/probe".into(),
        Request::ListMissed => "/missed".into(),
        Request::Malformed { raw, .. } => format!("malformed {raw:?}"),
    };
    let via = match &a.via {
        Via::Prompt(m) => format!("#{}", m.message),
        Via::Command { .. } => "typed".into(),
    };
    format!("{} {what} via {via}", a.responder.user_id)
}

fn notice_text(n: &Notice) -> String {
    match n {
        Notice::Accepted { decision, .. } => format!("accepted {decision}"),
        Notice::Refused(r) => format!("refused {}", r.key()),
        Notice::AlreadyFinished { outcome, .. } => {
            format!("already finished: {}", outcome_text(outcome))
        }
        Notice::Pending(list) => {
            let ids: Vec<&str> = list.iter().map(|a| a.id.as_str()).collect();
            format!("pending [{}]", ids.join(" "))
        }
        Notice::Probe(report) => format!("probe: {}", report.text()),
        Notice::Missed(rows) => {
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            format!("missed [{}]", ids.join(" "))
        }
        Notice::Granted { grant } => format!("granted {} until {}", grant.id, grant.until_ms),
        Notice::GrantNotStored { id } => format!("allowed {id} once, grant not stored"),
        Notice::Grants(list) => {
            let ids: Vec<String> = list
                .iter()
                .map(|g| format!("{}({} uses)", g.id, g.uses))
                .collect();
            format!("grants [{}]", ids.join(" "))
        }
        Notice::Revoked { grant, already } => format!("revoked {} already={already}", grant.id),
    }
}

fn trusting(windows: &[&str]) -> TrustPolicy {
    TrustPolicy {
        gateway: "ws://gw".into(),
        windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
    }
}

fn event_text(e: &Event) -> String {
    match e {
        Event::Requested { approval } => format!("requested {}", approval.id),
        Event::Delivered {
            id,
            target,
            message,
            after,
        } => format!(
            "delivered {id} {target}#{message} after {}ms",
            after.as_millis()
        ),
        Event::DeliveryFailed {
            id,
            error,
            will_retry,
            ..
        } => format!("delivery_failed {id} ({error}) will_retry={will_retry}"),
        Event::Answered { id, responder, .. } => format!(
            "answered {:?} by {}",
            id.as_ref().map(|i| i.as_str()),
            responder.user_id
        ),
        Event::Refused {
            id,
            responder,
            reason,
            raw,
        } => format!(
            "refused {:?} by {}: {}{}",
            id.as_ref().map(|i| i.as_str()),
            responder.user_id,
            reason.key(),
            raw.as_ref()
                .map(|r| format!(" raw={r:?}"))
                .unwrap_or_default()
        ),
        Event::Resolved {
            id,
            responder,
            decision,
            ..
        } => format!("resolved {id} {decision} by {}", responder.user_id),
        Event::ResolveFailed {
            id,
            responder,
            error,
        } => format!("resolve_failed {id} by {}: {error}", responder.user_id),
        Event::Ended { id, outcome, .. } => format!("ended {id}: {}", outcome_text(outcome)),
        Event::Finished { id, target, note } => format!("finished {id} {target}: {note}"),
        Event::Posted {
            kind,
            target,
            result,
            ..
        } => format!("posted {kind} {target}: {result:?}"),
        Event::Missed { row } => format!("missed {}: {}", row.id, row.outcome().summary()),
        Event::GrantCreated { grant } => format!("grant_created {}", grant.id),
        Event::GrantUsed { grant, id, .. } => format!("grant_used {grant} on {id}"),
        Event::GrantRevoked { grant, by } => format!("grant_revoked {grant} by {}", by.user_id),
    }
}

// ---- deciding ----

#[test]
fn owner_press_resolves_and_finishes_the_prompt() {
    let mut s = Sim::new();
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a1",
        &["allow-once", "deny"],
    ))));
    s.advance(5);
    let prompt = s.deliver();
    s.answer(pressed(OWNER, "a1", Decision::AllowOnce, &prompt));
    s.resolve(Ok(()));
    s.finish_all();
    s.check(expect![[r#"
        store approval a1
        deliver mem:42 [a1] overhead from +0ms waited 0ms
        store prompt a1 = mem:42#101
        emit delivered a1 mem:42#101 after 5ms
        record answer 42 allow-once a1 via #101
        resolve a1 allow-once for 42
        emit resolved a1 allow-once by 42
        store outcome a1: allow-once by 42
        finish mem:42#101: allow-once by 42
        notify cb:42: accepted allow-once
        store finished a1 = mem:42#101
        emit finished a1 mem:42: edited
    "#]]);
    assert_eq!(s.core.pending_count(), 0);
    assert_eq!(s.core.in_flight(), 0);
}

#[test]
fn no_decision_without_an_answered_record() {
    let mut s = Sim::new();
    let prompt = s.request("full", &["allow-once", "deny"]);
    s.take();
    // The answer is recorded before anything else happens; only once the record is
    // confirmed does a resolve go out.
    s.core
        .step(
            s.now,
            Input::Answer(pressed(OWNER, "full", Decision::AllowOnce, &prompt)),
        )
        .into_iter()
        .for_each(|e| assert!(matches!(e, Effect::RecordAnswer { .. }), "{e:?}"));
    // A full disk: the record fails, the answer is refused, nothing is resolved.
    s.store.set_full(true);
    s.answer(pressed(OWNER, "full", Decision::AllowOnce, &prompt));
    s.check(expect![[r#"
        record answer 42 allow-once full via #101
        emit refused Some("full") by 42: store_unavailable
        notify cb:42: refused store_unavailable
    "#]]);
    assert!(
        s.waiting.is_empty(),
        "nothing resolved, the prompt stays actionable"
    );
    // Room again: the same button works.
    s.store.set_full(false);
    s.answer(pressed(OWNER, "full", Decision::AllowOnce, &prompt));
    s.check(expect![[r#"
        record answer 42 allow-once full via #101
        resolve full allow-once for 42
    "#]]);
}

#[test]
fn stranger_cannot_approve() {
    let mut s = Sim::new();
    let prompt = s.request("a2", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(STRANGER, "a2", Decision::AllowOnce, &prompt));
    s.check(expect![[r#"
        record answer 666 allow-once a2 via #101
        emit refused Some("a2") by 666: not_allowed
        notify cb:666: refused not_allowed
    "#]]);
    assert!(
        s.waiting.is_empty(),
        "nothing may reach the gateway or the prompt"
    );
}

#[test]
fn every_refusal_reason_leaves_the_approval_pending() {
    let mut s = Sim::new();
    let prompt = s.request("a3", &["allow-once", "deny"]);
    let other = s.request("a3b", &["allow-once", "deny"]);
    let mut group = pressed(OWNER, "a3", Decision::Deny, &prompt);
    group.in_dm = false;
    let mut wrong_kind = pressed(OWNER, "a3", Decision::AllowOnce, &prompt);
    wrong_kind.request = Request::Decide {
        id: "a3".into(),
        choice: Decision::AllowOnce.into(),
        kind: Some(Kind::System),
    };
    let cases = [
        (group, Refusal::NotDirectMessage),
        (
            pressed(OWNER, "a3", Decision::AllowAlways, &prompt),
            Refusal::DecisionNotOffered,
        ),
        (
            pressed(OWNER, "nope", Decision::Deny, &prompt),
            Refusal::UnknownApproval,
        ),
        (
            pressed(OWNER, "a3", Decision::Deny, &other),
            Refusal::NotOurPrompt,
        ),
        (wrong_kind, Refusal::WrongKind),
    ];
    for (a, want) in cases {
        s.take();
        s.answer(a);
        let refused = format!("notify cb:42: refused {}", want.key());
        let log = s.take();
        assert!(log.contains(&refused), "{want:?}: {log}");
        assert!(!log.contains("resolve "), "{want:?}: {log}");
    }
    assert!(s.waiting.is_empty(), "nothing reached the gateway");
    assert_eq!(s.core.pending_count(), 2);
}

/// Issue 6: `system_approve:<exec id>:allow-once` (or a plugin tag) pressed by the owner on
/// their own prompt must not resolve the exec approval.
#[test]
fn owner_pressing_a_payload_of_another_kind_is_refused() {
    let mut s = Sim::new();
    let prompt = s.request("k1", &["allow-once", "deny"]);
    s.take();
    for claimed in [Kind::System, Kind::Plugin] {
        let mut a = pressed(OWNER, "k1", Decision::AllowOnce, &prompt);
        a.request = Request::Decide {
            id: "k1".into(),
            choice: Decision::AllowOnce.into(),
            kind: Some(claimed),
        };
        s.answer(a);
    }
    s.check(expect![[r#"
        record answer 42 allow-once k1 via #101
        emit refused Some("k1") by 42: wrong_kind
        notify cb:42: refused wrong_kind
        record answer 42 allow-once k1 via #101
        emit refused Some("k1") by 42: wrong_kind
        notify cb:42: refused wrong_kind
    "#]]);
    assert!(
        s.waiting.is_empty(),
        "nothing reached the gateway; the prompt stays open"
    );
    // Still pending: the right payload from the owner decides it.
    s.answer(pressed(OWNER, "k1", Decision::Deny, &prompt));
    s.check(expect![[r#"
        record answer 42 deny k1 via #101
        resolve k1 deny for 42
    "#]]);
}

#[test]
fn malformed_answer_is_refused_and_audited() {
    let mut s = Sim::new();
    let mut a = typed(OWNER, "x", Decision::Deny);
    a.request = Request::Malformed {
        raw: "exec_approve:zzz".into(),
        why: "bad uuid".into(),
    };
    s.answer(a.clone());
    a.responder.user_id = STRANGER.into();
    a.reply = ReplyTo::new("mem", format!("cb:{STRANGER}"));
    s.answer(a);
    s.check(expect![[r#"
        emit refused None by 42: malformed raw="exec_approve:zzz"
        notify cb:42: refused malformed
        emit refused None by 666: not_allowed raw="exec_approve:zzz"
        notify cb:666: refused not_allowed
    "#]]);
}

#[test]
fn typed_command_decides_like_a_button() {
    let mut s = Sim::new();
    s.request("a4", &["allow-once", "allow-always", "deny"]);
    s.take();
    s.answer(typed(OWNER, "a4", Decision::AllowAlways));
    s.resolve(Ok(()));
    s.check(expect![[r#"
        record answer 42 allow-always a4 via typed
        resolve a4 allow-always for 42
        emit resolved a4 allow-always by 42
        store outcome a4: allow-always by 42
        finish mem:42#101: allow-always by 42
        notify cb:42: accepted allow-always
    "#]]);
}

#[test]
fn pending_lists_only_for_allowed_responders() {
    let mut s = Sim::new();
    s.request("e1", &["deny"]);
    s.take();
    let mut ask = typed(OWNER, "e1", Decision::Deny);
    ask.request = Request::ListPending;
    let mut stranger = ask.clone();
    stranger.responder.user_id = STRANGER.into();
    stranger.reply = ReplyTo::new("mem", format!("cb:{STRANGER}"));
    let mut in_a_group = ask.clone();
    in_a_group.in_dm = false;
    s.answer(ask);
    s.answer(stranger);
    s.answer(in_a_group);
    s.check(expect![[r#"
        emit answered None by 42
        notify cb:42: pending [e1]
        emit answered None by 666
        emit refused None by 666: not_allowed
        notify cb:666: refused not_allowed
        emit answered None by 42
        emit refused None by 42: not_dm
        notify cb:42: refused not_dm
    "#]]);
}

// ---- outcomes ----

#[test]
fn outcome_from_elsewhere_finishes_prompts_and_later_press_learns_it() {
    let mut s = Sim::new();
    let prompt = s.request("a5", &["allow-once", "deny"]);
    s.take();
    s.ended("a5", decided_elsewhere(Decision::Deny));
    s.finish_all();
    s.check(expect![[r#"
        store outcome a5: deny elsewhere by Some("cli")
        finish mem:42#101: deny elsewhere by Some("cli")
        store finished a5 = mem:42#101
        emit finished a5 mem:42: edited
    "#]]);
    // Pressed after the end, with the approval gone from memory: told the canonical
    // outcome from the store, nothing resolved, not re-edited.
    s.answer(pressed(OWNER, "a5", Decision::AllowOnce, &prompt));
    s.check(expect![[r#"
        record answer 42 allow-once a5 via #101
        look up 42 allow-once a5 via #101
        notify cb:42: already finished: deny elsewhere by Some("cli")
    "#]]);
    assert!(s.waiting.is_empty());
}

#[test]
fn our_resolve_echoed_by_the_gateway_is_credited_to_the_responder() {
    let mut s = Sim::new();
    let prompt = s.request("a6", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(OWNER, "a6", Decision::Deny, &prompt));
    // The gateway's resolved event usually arrives before the RPC answer.
    s.ended(
        "a6",
        Outcome::Decided {
            decision: Decision::Deny,
            by: Decider::Elsewhere { resolved_by: None },
            at_ms: 1,
        },
    );
    s.resolve(Ok(()));
    s.check(expect![[r#"
        record answer 42 deny a6 via #101
        resolve a6 deny for 42
        store outcome a6: deny by 42
        finish mem:42#101: deny by 42
        emit resolved a6 deny by 42
        notify cb:42: accepted deny
    "#]]);
}

#[test]
fn gateway_unreachable_never_decides() {
    let mut s = Sim::new();
    let prompt = s.request("a7", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(OWNER, "a7", Decision::AllowOnce, &prompt));
    s.resolve(Err(GatewayError::Unavailable("not connected".into())));
    s.check(expect![[r#"
        record answer 42 allow-once a7 via #101
        resolve a7 allow-once for 42
        emit resolve_failed a7 by 42: gateway unavailable: not connected
        notify cb:42: refused gateway_unavailable
    "#]]);
    assert_eq!(s.core.pending_count(), 1, "the prompt stays actionable");
    // Once the gateway is back the same button works.
    s.answer(pressed(OWNER, "a7", Decision::AllowOnce, &prompt));
    s.resolve(Ok(()));
    let log = s.take();
    assert!(log.contains("store outcome a7: allow-once by 42"), "{log}");
}

#[test]
fn a_refused_decision_leaves_the_approval_pending() {
    let mut s = Sim::new();
    let prompt = s.request("r1", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(OWNER, "r1", Decision::AllowOnce, &prompt));
    s.resolve(Err(GatewayError::Rejected {
        code: "INVALID_REQUEST".into(),
        message: "no".into(),
    }));
    s.check(expect![[r#"
        record answer 42 allow-once r1 via #101
        resolve r1 allow-once for 42
        emit resolve_failed r1 by 42: gateway refused: INVALID_REQUEST: no
        notify cb:42: refused gateway_rejected
    "#]]);
    assert_eq!(s.core.pending_count(), 1);
}

#[test]
fn not_found_at_the_gateway_finishes_the_prompt_as_gone() {
    let mut s = Sim::new();
    let prompt = s.request("a8", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(OWNER, "a8", Decision::AllowOnce, &prompt));
    s.resolve(Err(GatewayError::NotFound));
    s.check(expect![[r#"
        record answer 42 allow-once a8 via #101
        resolve a8 allow-once for 42
        emit resolve_failed a8 by 42: approval not found at the gateway
        store outcome a8: gone
        finish mem:42#101: gone
        notify cb:42: already finished: gone
    "#]]);
}

#[test]
fn losing_a_race_tells_the_winner_outcome_once_it_arrives() {
    let mut s = Sim::new();
    let prompt = s.request("f1", &["allow-once", "deny"]);
    s.take();
    // Another client decided at the gateway; its resolved event has not reached us yet.
    s.answer(pressed(OWNER, "f1", Decision::AllowOnce, &prompt));
    s.resolve(Err(GatewayError::AlreadyResolved));
    s.check(expect![[r#"
        record answer 42 allow-once f1 via #101
        resolve f1 allow-once for 42
        emit resolve_failed f1 by 42: approval already resolved at the gateway
    "#]]);
    // No guess before the canonical outcome.
    s.ended("f1", decided_elsewhere(Decision::Deny));
    s.check(expect![[r#"
        store outcome f1: deny elsewhere by Some("cli")
        notify cb:42: already finished: deny elsewhere by Some("cli")
        finish mem:42#101: deny elsewhere by Some("cli")
    "#]]);
}

/// Found by the attack suite (tests/e2e/attacks.rs): the real gateway answers a second resolve
/// of the same approval with another success, so a double tap was resolved, audited and
/// acknowledged twice. A second answer now waits for the first resolve and learns its outcome.
#[test]
fn a_double_tap_resolves_once() {
    let mut s = Sim::new();
    let prompt = s.request("d1", &["allow-once", "deny"]);
    s.take();
    for _ in 0..2 {
        s.answer(pressed(OWNER, "d1", Decision::Deny, &prompt));
    }
    s.resolve(Ok(()));
    s.check(expect![[r#"
        record answer 42 deny d1 via #101
        resolve d1 deny for 42
        record answer 42 deny d1 via #101
        emit resolved d1 deny by 42
        store outcome d1: deny by 42
        finish mem:42#101: deny by 42
        notify cb:42: accepted deny
        notify cb:42: already finished: deny by 42
    "#]]);
    assert!(
        s.waiting
            .iter()
            .all(|e| !matches!(e, Effect::Resolve { .. })),
        "one resolve"
    );
}

#[test]
fn an_answer_queued_behind_a_failed_resolve_gets_its_own_try() {
    let mut s = Sim::new();
    let prompt = s.request("q1", &["allow-once", "deny"]);
    s.take();
    s.answer(pressed(OWNER, "q1", Decision::Deny, &prompt));
    s.answer(pressed(OWNER, "q1", Decision::AllowOnce, &prompt));
    s.resolve(Err(GatewayError::Unavailable("timeout".into())));
    s.check(expect![[r#"
        record answer 42 deny q1 via #101
        resolve q1 deny for 42
        record answer 42 allow-once q1 via #101
        emit resolve_failed q1 by 42: gateway unavailable: timeout
        notify cb:42: refused gateway_unavailable
        resolve q1 allow-once for 42
    "#]]);
}

// ---- delivery ----

#[test]
fn press_arriving_before_the_delivery_is_recorded_still_counts() {
    let mut s = Sim::new();
    // The owner sees the message before the engine hears that delivery finished.
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "g1",
        &["allow-once", "deny"],
    ))));
    s.answer(pressed(OWNER, "g1", Decision::AllowOnce, &msg(101)));
    let prompt = s.deliver();
    assert_eq!(
        prompt,
        msg(101),
        "the press named the prompt that was being delivered"
    );
    s.resolve(Ok(()));
    s.check(expect![[r#"
        store approval g1
        deliver mem:42 [g1] overhead from +0ms waited 0ms
        record answer 42 allow-once g1 via #101
        store prompt g1 = mem:42#101
        emit delivered g1 mem:42#101 after 0ms
        resolve g1 allow-once for 42
        emit resolved g1 allow-once by 42
        store outcome g1: allow-once by 42
        finish mem:42#101: allow-once by 42
        notify cb:42: accepted allow-once
    "#]]);
}

#[test]
fn a_press_held_for_a_delivery_that_fails_is_judged_then() {
    let mut s = Sim::new();
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "g2",
        &["allow-once", "deny"],
    ))));
    s.take();
    s.answer(pressed(OWNER, "g2", Decision::AllowOnce, &msg(101)));
    s.fail_delivery(ChannelError::Permanent("chat not found".into()));
    s.check(expect![[r#"
        record answer 42 allow-once g2 via #101
        emit delivery_failed g2 (chat not found) will_retry=false
        emit refused Some("g2") by 42: not_our_prompt
        notify cb:42: refused not_our_prompt
    "#]]);
}

#[test]
fn transient_delivery_failure_is_retried_until_delivered() {
    let mut s = Sim::new();
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "c1",
        &["deny"],
    ))));
    for _ in 0..2 {
        s.fail_delivery(ChannelError::Transient {
            message: "scripted failure".into(),
            retry_after: None,
        });
        s.fire_timer();
    }
    s.deliver();
    s.check(expect![[r#"
        store approval c1
        deliver mem:42 [c1] overhead from +0ms waited 0ms
        arm +515ms: lane mem:42
        emit delivery_failed c1 (transient: scripted failure) will_retry=true
        deliver mem:42 [c1] waited 0ms
        arm +1307ms: lane mem:42
        emit delivery_failed c1 (transient: scripted failure) will_retry=true
        deliver mem:42 [c1] waited 0ms
        store prompt c1 = mem:42#101
        emit delivered c1 mem:42#101 after 1822ms
    "#]]);
}

#[test]
fn a_retry_waits_at_least_the_services_retry_after() {
    let mut s = Sim::new();
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "c2",
        &["deny"],
    ))));
    s.take();
    s.fail_delivery(ChannelError::Transient {
        message: "429".into(),
        retry_after: Some(Duration::from_secs(30)),
    });
    s.check(expect![[r#"
        arm +30000ms: lane mem:42
        emit delivery_failed c2 (transient: 429) will_retry=true
    "#]]);
}

#[test]
fn replay_prompts_once_and_finishes_what_vanished() {
    let mut s = Sim::new();
    let p1 = s.request("b1", &["deny"]);
    // Reconnect: the snapshot repeats b1 (no new prompt) and brings b2.
    s.input(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }));
    assert!(!s.core.link().replayed);
    s.input(Input::Gateway(GatewayEvent::Snapshot(vec![
        approval("b1", &["deny"]),
        approval("b2", &["deny"]),
    ])));
    assert!(s.core.link().replayed);
    let p2 = s.deliver();
    s.take();
    // The gateway restarted and forgot both.
    s.input(Input::Gateway(GatewayEvent::Snapshot(vec![])));
    s.check(expect![[r#"
        store outcome b1: gone
        finish mem:42#101: gone
        store outcome b2: gone
        finish mem:42#102: gone
        read history after - from 0
    "#]]);
    assert_eq!((p1, p2), (msg(101), msg(102)), "no duplicate prompts");
}

#[test]
fn the_link_status_follows_the_gateway() {
    let mut s = Sim::new();
    s.input(Input::Gateway(GatewayEvent::PairingRequired {
        request_id: Some("req-1".into()),
    }));
    assert_eq!(s.core.link().pairing_request.as_deref(), Some("req-1"));
    s.input(Input::Gateway(GatewayEvent::Connected {
        scopes: vec!["operator.read".into()],
        missing: vec!["operator.admin".into()],
    }));
    let l = s.core.link().clone();
    assert!(l.connected && !l.replayed && l.pairing_request.is_none());
    assert_eq!(l.missing_scopes, ["operator.admin"]);
    s.input(Input::Gateway(GatewayEvent::Disconnected {
        reason: "refused".into(),
    }));
    s.input(Input::Gateway(GatewayEvent::Connected {
        scopes: vec![],
        missing: vec![],
    }));
    assert_eq!(
        s.core.link().last_error.as_deref(),
        Some("refused"),
        "kept until the replay succeeds"
    );
    s.input(Input::Gateway(GatewayEvent::Snapshot(vec![])));
    assert_eq!(s.core.link().last_error, None);
}

#[test]
fn restart_keeps_prompts_honoured_and_sends_no_duplicates() {
    let mut s = Sim::new();
    let prompt = s.request("d1", &["allow-once", "deny"]);
    // A new core on the same store: the same approval replayed, the old button pressed.
    let mut s = s.restart();
    s.input(Input::Gateway(GatewayEvent::Snapshot(vec![approval(
        "d1",
        &["allow-once", "deny"],
    )])));
    s.answer(pressed(OWNER, "d1", Decision::Deny, &prompt));
    s.resolve(Ok(()));
    s.check(expect![[r#"
        read history after - from 0
        record answer 42 deny d1 via #101
        resolve d1 deny for 42
        emit resolved d1 deny by 42
        store outcome d1: deny by 42
        finish mem:42#101: deny by 42
        notify cb:42: accepted deny
    "#]]);
}

#[test]
fn prompts_that_ended_while_down_are_finished_at_start() {
    let mut s = Sim::new();
    s.request("z1", &["deny"]);
    s.ended("z1", Outcome::Expired { at_ms: 9 });
    // The edit never reported back: the bridge was killed.
    let s = s.restart();
    let mut s = s;
    s.check(expect![[r#"
        finish mem:42#101: expired
    "#]]);
}

// ---- digests ----

fn requested(s: &mut Sim, id: &str) {
    let a = approval(id, &["allow-once", "deny"]);
    s.input(Input::Gateway(GatewayEvent::Requested(a)));
}

/// Requests `ids` while the first one's delivery is in flight, so the rest queue up
/// behind it; returns once the first is delivered (and the rest wait for their turn).
fn burst(s: &mut Sim, ids: &[&str]) -> MessageRef {
    let (first, rest) = ids.split_first().unwrap();
    requested(s, first);
    s.turn();
    for id in rest {
        requested(s, id);
    }
    s.deliver()
}

#[test]
fn approvals_queued_behind_a_busy_target_go_out_as_one_digest() {
    let mut s = Sim::with_digests(10);
    let first = burst(&mut s, &["g1", "g2", "g3", "g4", "g5", "g6"]);
    s.turn();
    let digest = s.deliver();
    assert_ne!(first, digest, "the first had its own prompt");
    s.check(expect![[r#"
        store approval g1
        await turn mem:42 fresh=true
        deliver mem:42 [g1] overhead from +0ms waited 40ms
        store approval g2
        store approval g3
        store approval g4
        store approval g5
        store approval g6
        store prompt g1 = mem:42#101
        emit delivered g1 mem:42#101 after 0ms
        await turn mem:42 fresh=false
        deliver mem:42 [g2 g3 g4 g5 g6] waited 40ms
        store prompt g2 = mem:42#102
        emit delivered g2 mem:42#102 after 0ms
        store prompt g3 = mem:42#102
        emit delivered g3 mem:42#102 after 0ms
        store prompt g4 = mem:42#102
        emit delivered g4 mem:42#102 after 0ms
        store prompt g5 = mem:42#102
        emit delivered g5 mem:42#102 after 0ms
        store prompt g6 = mem:42#102
        emit delivered g6 mem:42#102 after 0ms
    "#]]);

    // A press on a digest row decides that approval only and rewrites the digest, every
    // row shown.
    s.answer(pressed(OWNER, "g4", Decision::Deny, &digest));
    s.resolve(Ok(()));
    s.check(expect![[r#"
        record answer 42 deny g4 via #102
        resolve g4 deny for 42
        emit resolved g4 deny by 42
        store outcome g4: deny by 42
        rewrite digest mem:42#102 rows [g2=pending, g3=pending, g4=deny by 42, g5=pending, g6=pending] ended [g4]
        notify cb:42: accepted deny
    "#]]);

    // The rest end elsewhere while that rewrite is in flight: one more rewrite shows them all.
    for id in ["g2", "g3", "g5", "g6"] {
        s.ended(id, Outcome::Expired { at_ms: 5 });
    }
    s.finish_all();
    s.check(expect![[r#"
        store outcome g2: expired
        store outcome g3: expired
        store outcome g5: expired
        store outcome g6: expired
        store finished g4 = mem:42#102
        emit finished g4 mem:42: edited
        rewrite digest mem:42#102 rows [g2=expired, g3=expired, g4=deny by 42, g5=expired, g6=expired] ended [g2 g3 g5 g6]
        store finished g2 = mem:42#102
        emit finished g2 mem:42: edited
        store finished g3 = mem:42#102
        emit finished g3 mem:42: edited
        store finished g5 = mem:42#102
        emit finished g5 mem:42: edited
        store finished g6 = mem:42#102
        emit finished g6 mem:42: edited
    "#]]);
    assert_eq!(s.core.pending_count(), 1, "only g1, on its own prompt");
}

#[test]
fn what_queues_while_the_target_waits_for_its_turn_shares_one_digest() {
    let mut s = Sim::with_digests(10);
    burst(&mut s, &["t1"]);
    s.take();
    // The chat's next slot is not free yet (a rate limit): the lane waits for it, and
    // what comes meanwhile goes out with t2.
    for id in ["t2", "t3", "t4", "t5"] {
        requested(&mut s, id);
    }
    assert!(
        s.waiting
            .iter()
            .all(|e| !matches!(e, Effect::Deliver { .. })),
        "nothing before the turn"
    );
    s.turn();
    s.check(expect![[r#"
        store approval t2
        await turn mem:42 fresh=true
        store approval t3
        store approval t4
        store approval t5
        deliver mem:42 [t2 t3 t4 t5] waited 40ms
    "#]]);
}

#[test]
fn a_digest_carries_at_most_the_channel_capacity() {
    let mut s = Sim::with_digests(3);
    burst(&mut s, &["h1", "h2", "h3", "h4", "h5", "h6", "h7"]);
    s.take();
    for _ in 0..2 {
        s.turn();
        s.deliver();
    }
    s.check(expect![[r#"
        deliver mem:42 [h2 h3 h4] waited 40ms
        store prompt h2 = mem:42#102
        emit delivered h2 mem:42#102 after 0ms
        store prompt h3 = mem:42#102
        emit delivered h3 mem:42#102 after 0ms
        store prompt h4 = mem:42#102
        emit delivered h4 mem:42#102 after 0ms
        await turn mem:42 fresh=false
        deliver mem:42 [h5 h6 h7] waited 40ms
        store prompt h5 = mem:42#103
        emit delivered h5 mem:42#103 after 0ms
        store prompt h6 = mem:42#103
        emit delivered h6 mem:42#103 after 0ms
        store prompt h7 = mem:42#103
        emit delivered h7 mem:42#103 after 0ms
    "#]]);
    assert!(s.waiting.is_empty(), "all sent");
}

#[test]
fn what_a_digest_does_not_carry_goes_back_to_the_front() {
    let mut s = Sim::with_digests(10);
    burst(&mut s, &["u1", "u2", "u3", "u4"]);
    s.take();
    s.turn();
    // The first row did not fit a digest: the channel sent it as a plain prompt.
    let plain = s.deliver_carrying(Some(1));
    assert_eq!(plain, msg(102));
    s.turn();
    s.check(expect![[r#"
        deliver mem:42 [u2 u3 u4] waited 40ms
        store prompt u2 = mem:42#102
        emit delivered u2 mem:42#102 after 0ms
        await turn mem:42 fresh=false
        deliver mem:42 [u3 u4] waited 40ms
    "#]]);
}

#[test]
fn an_approval_ending_while_queued_is_never_sent() {
    let mut s = Sim::with_digests(10);
    requested(&mut s, "q1");
    s.turn();
    requested(&mut s, "q2");
    requested(&mut s, "q3");
    s.take();
    s.ended("q2", Outcome::Expired { at_ms: 5 });
    s.deliver();
    s.turn();
    s.check(expect![[r#"
        store outcome q2: expired
        store prompt q1 = mem:42#101
        emit delivered q1 mem:42#101 after 0ms
        await turn mem:42 fresh=false
        deliver mem:42 [q3] waited 40ms
    "#]]);
}

#[test]
fn digest_rows_survive_a_restart() {
    let mut s = Sim::with_digests(10);
    burst(&mut s, &["k1", "k2", "k3"]);
    s.turn();
    let digest = s.deliver();
    let mut s = s.restart();
    s.input(Input::Gateway(GatewayEvent::Snapshot(vec![
        approval("k1", &["allow-once", "deny"]),
        approval("k2", &["allow-once", "deny"]),
        approval("k3", &["allow-once", "deny"]),
    ])));
    s.answer(pressed(OWNER, "k3", Decision::AllowOnce, &digest));
    s.resolve(Ok(()));
    s.check(expect![[r#"
        read history after - from 0
        record answer 42 allow-once k3 via #102
        resolve k3 allow-once for 42
        emit resolved k3 allow-once by 42
        store outcome k3: allow-once by 42
        rewrite digest mem:42#102 rows [k2=pending, k3=allow-once by 42] ended [k3]
        notify cb:42: accepted allow-once
    "#]]);
}

#[test]
fn a_transient_edit_failure_is_retried_then_given_up() {
    let mut s = Sim::new();
    s.request("e1", &["deny"]);
    s.take();
    s.ended("e1", Outcome::Expired { at_ms: 5 });
    for _ in 0..MAX_FINISH_ATTEMPTS {
        let Some(Effect::Finish {
            prompt, approval, ..
        }) = s.take_waiting(|e| matches!(e, Effect::Finish { .. }))
        else {
            panic!("no edit");
        };
        s.input(Input::Finished {
            id: approval.id,
            prompt,
            result: Err(ChannelError::Transient {
                message: "502".into(),
                retry_after: None,
            }),
        });
        if s.waiting.is_empty() {
            break;
        }
        s.fire_timer();
    }
    let log = s.take();
    let tries = log.matches("finish mem:42#101").count();
    assert_eq!(tries as u32, MAX_FINISH_ATTEMPTS, "{log}");
    assert!(
        log.ends_with("emit finished e1 mem:42: edit failed\n"),
        "{log}"
    );
    assert_eq!(s.core.in_flight(), 0);
}

// ---- shutdown ----

#[test]
fn a_resolve_the_drain_cuts_off_is_audited_as_unknown_never_as_decided() {
    let mut s = Sim::new();
    let prompt = s.request("a1", &["allow-once", "deny"]);
    s.answer(pressed(OWNER, "a1", Decision::AllowOnce, &prompt));
    // A second press waits for the first one's resolve, and a third for its prompt.
    s.answer(pressed(OWNER, "a1", Decision::Deny, &prompt));
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a2",
        &["deny"],
    ))));
    s.answer(pressed(OWNER, "a2", Decision::Deny, &msg(102)));
    s.take();
    s.input(Input::Shutdown);
    // While draining nothing new starts.
    s.input(Input::Gateway(GatewayEvent::Requested(approval(
        "a3",
        &["deny"],
    ))));
    s.answer(pressed(OWNER, "a1", Decision::Deny, &prompt));
    assert_eq!(s.take(), "\n");
    // The gateway never answers within the drain.
    assert_eq!(s.core.in_flight(), 2);
    s.input(Input::DrainOver);
    s.check(expect![[r#"
        emit resolve_failed a1 by 42: bridge stopped before the gateway answered (allow-once); it may or may not have been applied
        emit resolve_failed a1 by 42: bridge stopped before sending it to the gateway; nothing was decided
        emit resolve_failed a2 by 42: bridge stopped before sending it to the gateway; nothing was decided
    "#]]);
}

#[test]
fn a_drain_reports_back_what_finishes_in_time() {
    let mut s = Sim::new();
    let prompt = s.request("a1", &["allow-once", "deny"]);
    s.answer(pressed(OWNER, "a1", Decision::AllowOnce, &prompt));
    s.input(Input::Shutdown);
    s.take();
    s.resolve(Ok(()));
    s.finish_all();
    s.input(Input::DrainOver);
    s.check(expect![[r#"
        emit resolved a1 allow-once by 42
        store outcome a1: allow-once by 42
        finish mem:42#101: allow-once by 42
        notify cb:42: accepted allow-once
        store finished a1 = mem:42#101
        emit finished a1 mem:42: edited
    "#]]);
    assert_eq!(
        s.audit_events("a1"),
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
