//! The approval lifecycle, and the only place that decides. One loop consumes `Input`s
//! (gateway events, answers, completions of its own I/O tasks) and keeps, per approval,
//! the prompts sent and the outcome; slow I/O runs on spawned tasks that report back.
//! Deliveries queue per target (one in flight each); approvals that queue up while a
//! target is busy or waits for its turn go out together as one digest where the channel
//! supports it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::approval::{Approval, ApprovalId, Decider, Decision, Outcome, Responder, now_ms};
use crate::channel::{
    Answer, Channel, ChannelError, DigestRow, MessageRef, Notice, RESUME_PROMPTS, Refusal, ReplyTo,
    Request, Target, Via,
};
use crate::gateway::{GatewayError, GatewayEvent, Resolver};
use crate::policy::{self, Facts};
use crate::retry::Backoff;
use crate::store::{Store, StoreError};
use crate::telemetry::{Event, Metrics};

/// Everything that can move the engine. Completions (`Delivered`, `Finished`,
/// `DigestUpdated`, `ResolveDone`, `TargetReady`, `Retry`) come from tasks the engine
/// itself spawned.
#[derive(Debug)]
pub enum Input {
    Gateway(GatewayEvent),
    Answer(Answer),
    /// A delivery of `ids` (one prompt, or a digest) to `target` reported back; `Ok`
    /// carries the message and how many of `ids`, first first, it holds.
    Delivered {
        target: Target,
        ids: Vec<ApprovalId>,
        result: Result<(MessageRef, usize), ChannelError>,
    },
    Finished {
        id: ApprovalId,
        prompt: MessageRef,
        result: Result<(), ChannelError>,
    },
    /// A digest was rewritten to show the outcomes of `ended`.
    DigestUpdated {
        prompt: MessageRef,
        ended: Vec<ApprovalId>,
        result: Result<(), ChannelError>,
    },
    ResolveDone {
        answer: Answer,
        id: ApprovalId,
        decision: Decision,
        result: Result<(), GatewayError>,
        took: Duration,
    },
    /// `target` can take a prompt at once (see `Channel::ready`); `waited` is how long
    /// that took, which is not the bridge's own overhead.
    TargetReady {
        target: Target,
        fresh: bool,
        waited: Duration,
    },
    Retry(Retry),
    Shutdown,
}

/// Work to try again after a transient fault.
#[derive(Debug)]
pub enum Retry {
    /// The target's delivery queue, paused after a transient fault.
    Lane(Target),
    Finish {
        id: ApprovalId,
        prompt: MessageRef,
    },
    Digest(MessageRef),
}

/// The gateway link as the engine last heard of it; `/healthz` and `check` read it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkStatus {
    pub connected: bool,
    /// Needed scopes the gateway did not grant (non-empty: blind).
    pub missing_scopes: Vec<String>,
    /// Pending approvals replayed since the last connect.
    pub replayed: bool,
    /// Set while the device waits for the owner's pairing approval.
    pub pairing_request: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
enum PromptState {
    /// Waiting in the target's delivery queue.
    Queued,
    Delivering,
    Sent(MessageRef),
    Finishing {
        prompt: MessageRef,
        attempt: u32,
    },
    Finished(MessageRef),
    /// Delivery failed permanently (bad chat id, bot blocked); logged and audited.
    Failed,
}

impl PromptState {
    fn message(&self) -> Option<&MessageRef> {
        match self {
            PromptState::Sent(m)
            | PromptState::Finishing { prompt: m, .. }
            | PromptState::Finished(m) => Some(m),
            PromptState::Queued | PromptState::Delivering | PromptState::Failed => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    approval: Approval,
    outcome: Option<Outcome>,
    /// Decisions sent to the gateway and not yet answered, first first.
    resolving: Vec<(Responder, Decision)>,
    prompts: BTreeMap<Target, PromptState>,
    /// Responders to tell the outcome once it is known (their resolve lost a race).
    waiting: Vec<ReplyTo>,
    /// Presses on a prompt whose delivery has not reported back yet: the message is
    /// already visible to the owner. Judged once the delivery is recorded.
    held: Vec<Answer>,
    seen: Instant,
}

impl Entry {
    fn our_prompts(&self) -> Vec<MessageRef> {
        self.prompts
            .values()
            .filter_map(PromptState::message)
            .cloned()
            .collect()
    }

    fn done(&self) -> bool {
        self.outcome.is_some()
            && self.resolving.is_empty()
            && self
                .prompts
                .values()
                .all(|p| matches!(p, PromptState::Finished(_) | PromptState::Failed))
    }
}

/// One target's delivery queue: approvals waiting for a prompt there, first first.
#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<ApprovalId>,
    /// A delivery is in flight, or the lane waits for the target's turn or out a
    /// transient fault.
    busy: bool,
    /// Transient faults in a row.
    failures: u32,
}

/// A digest message and the approvals with a row in it. Rows stay in memory until every
/// row has ended and been shown, so each rewrite shows them all.
#[derive(Debug)]
struct Digest {
    members: Vec<ApprovalId>,
    /// A rewrite is in flight (or waits out a transient fault).
    updating: bool,
    failures: u32,
}

/// Deliveries, edits and digest rewrites after a transient fault: 0.5–1 s, doubling up to a minute.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
const MAX_FINISH_ATTEMPTS: u32 = 12;
/// How long a shutdown waits for in-flight deliveries and edits to report back.
const DRAIN: Duration = Duration::from_secs(5);

/// The engine; build with `Engine::new`, drive with `run`.
pub struct Engine {
    channels: HashMap<String, Arc<dyn Channel>>,
    resolver: Arc<dyn Resolver>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    entries: HashMap<ApprovalId, Entry>,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    link: watch::Sender<LinkStatus>,
    lanes: HashMap<Target, Lane>,
    digests: HashMap<MessageRef, Digest>,
    inflight: usize,
    /// Answers from allowed responders that arrived while a resolve of the same approval was
    /// in flight; judged again once it reports back (see `on_decide`).
    after_resolve: HashMap<ApprovalId, Vec<Answer>>,
    /// Shutting down: in-flight work reports back, no new work starts.
    draining: bool,
    ready_logged: bool,
}

impl Engine {
    /// Loads unfinished work from the store. Returns the engine, the sender every input
    /// goes through, and a watch of the gateway link.
    pub fn new(
        channels: Vec<Arc<dyn Channel>>,
        resolver: Arc<dyn Resolver>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<(Engine, mpsc::Sender<Input>, watch::Receiver<LinkStatus>), StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let (link, link_rx) = watch::channel(LinkStatus::default());
        let mut entries = HashMap::new();
        let mut digests: HashMap<MessageRef, Digest> = HashMap::new();
        for open in store.open_approvals()? {
            let id = open.approval.id.clone();
            let mut prompts = BTreeMap::new();
            for p in open.prompts {
                if p.digest {
                    digests
                        .entry(p.message.clone())
                        .or_insert_with(|| Digest {
                            members: Vec::new(),
                            updating: false,
                            failures: 0,
                        })
                        .members
                        .push(id.clone());
                }
                let state = if p.finished {
                    PromptState::Finished(p.message.clone())
                } else {
                    PromptState::Sent(p.message.clone())
                };
                prompts.insert(p.message.target, state);
            }
            entries.insert(
                id,
                Entry {
                    approval: open.approval,
                    outcome: open.outcome,
                    resolving: Vec::new(),
                    prompts,
                    waiting: Vec::new(),
                    held: Vec::new(),
                    seen: Instant::now(),
                },
            );
        }
        let recorded = store.recent_prompts(RESUME_PROMPTS)?;
        let channels: HashMap<String, Arc<dyn Channel>> = channels
            .into_iter()
            .map(|c| (c.name().to_owned(), c))
            .collect();
        for (name, channel) in &channels {
            let mine: Vec<MessageRef> = recorded
                .iter()
                .filter(|m| &m.target.channel == name)
                .cloned()
                .collect();
            channel.resume(&mine);
        }
        let engine = Engine {
            channels,
            resolver,
            store,
            metrics,
            entries,
            tx: tx.clone(),
            rx,
            link,
            lanes: HashMap::new(),
            digests,
            inflight: 0,
            after_resolve: HashMap::new(),
            draining: false,
            ready_logged: false,
        };
        engine.metrics.pending.set(engine.pending_count() as i64);
        Ok((engine, tx, link_rx))
    }

    /// Runs until `Input::Shutdown` (or every sender is gone), then waits briefly for
    /// in-flight deliveries and edits so their message ids are stored.
    #[tracing::instrument(name = "engine", skip_all)]
    pub async fn run(mut self) {
        // Prompts that ended while we were down still show buttons: finish them now.
        let ended: Vec<ApprovalId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.outcome.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.finish_all(&id);
        }
        while let Some(input) = self.rx.recv().await {
            if matches!(input, Input::Shutdown) {
                break;
            }
            self.handle(input);
        }
        self.draining = true;
        let deadline = tokio::time::Instant::now() + DRAIN;
        while self.inflight > 0 {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(
                    input @ (Input::Delivered { .. }
                    | Input::Finished { .. }
                    | Input::DigestUpdated { .. }
                    | Input::ResolveDone { .. }),
                )) => self.handle(input),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.audit_cut_off_resolves();
        tracing::info!(inflight = self.inflight, "engine stopped");
    }

    /// Every recorded answer ends its audit trail with what became of it. One the drain
    /// cut off says so: a resolve the gateway has not answered may or may not have been
    /// applied (the gateway's record, replayed at the next start, decides); an answer still
    /// waiting (for its prompt's delivery, or for an earlier answer's resolve) was not sent.
    fn audit_cut_off_resolves(&self) {
        let cut_off = |id: &ApprovalId, responder: &Responder, error: String| {
            Event::ResolveFailed {
                id,
                responder,
                error,
            }
            .emit(&self.store, &self.metrics);
        };
        for (id, entry) in &self.entries {
            // A resolve that succeeded set the outcome; one that failed left `resolving`.
            if entry.outcome.is_some() {
                continue;
            }
            for (responder, decision) in &entry.resolving {
                cut_off(
                    id,
                    responder,
                    format!(
                        "bridge stopped before the gateway answered ({decision}); it may or may not have been applied"
                    ),
                );
            }
        }
        let waiting = self
            .entries
            .iter()
            .flat_map(|(id, e)| e.held.iter().map(move |a| (id, a)));
        let queued = self
            .after_resolve
            .iter()
            .flat_map(|(id, v)| v.iter().map(move |a| (id, a)));
        for (id, answer) in waiting.chain(queued) {
            cut_off(
                id,
                &answer.responder,
                "bridge stopped before sending it to the gateway; nothing was decided".into(),
            );
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Gateway(ev) => self.on_gateway(ev),
            Input::Answer(a) => self.on_answer(a),
            Input::Delivered {
                target,
                ids,
                result,
            } => {
                self.inflight -= 1;
                self.on_delivered(target, ids, result)
            }
            Input::Finished { id, prompt, result } => {
                self.inflight -= 1;
                self.on_finished(id, prompt, result)
            }
            Input::DigestUpdated {
                prompt,
                ended,
                result,
            } => {
                self.inflight -= 1;
                self.on_digest_updated(prompt, ended, result)
            }
            Input::ResolveDone {
                answer,
                id,
                decision,
                result,
                took,
            } => {
                self.inflight -= 1;
                self.on_resolve_done(answer, id, decision, result, took)
            }
            Input::TargetReady {
                target,
                fresh,
                waited,
            } => self.send_next(&target, fresh, waited),
            Input::Retry(Retry::Lane(target)) => {
                if let Some(lane) = self.lanes.get_mut(&target) {
                    lane.busy = false;
                }
                self.pump(&target, false);
            }
            Input::Retry(Retry::Finish { id, prompt }) => self.finish_one(&id, &prompt),
            Input::Retry(Retry::Digest(prompt)) => {
                if let Some(d) = self.digests.get_mut(&prompt) {
                    d.updating = false;
                }
                self.update_digest(&prompt);
            }
            Input::Shutdown => {}
        }
        self.metrics.pending.set(self.pending_count() as i64);
    }

    fn pending_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.outcome.is_none())
            .count()
    }

    // ---- gateway ----

    fn on_gateway(&mut self, ev: GatewayEvent) {
        match ev {
            GatewayEvent::Connected { scopes, missing } => {
                self.metrics.gateway_up.set(1);
                if missing.is_empty() {
                    tracing::info!(?scopes, "gateway connected");
                } else {
                    tracing::error!(
                        ?missing,
                        "gateway connected WITHOUT needed scopes: the bridge is blind to approvals raised by agent runs, \
                         and the gateway denies those at once. Grant them (operator.admin) to this device."
                    );
                }
                self.link.send_modify(|l| {
                    l.connected = true;
                    l.missing_scopes = missing;
                    l.replayed = false;
                    l.pairing_request = None;
                    // Kept until the replay succeeds: a gateway that accepts the connection
                    // but refuses the calls is still down, and warned about once.
                });
            }
            GatewayEvent::Snapshot(pending) => self.on_snapshot(pending),
            GatewayEvent::Requested(a) => self.on_requested(a),
            GatewayEvent::Ended { id, outcome } => self.on_ended(&id, outcome),
            GatewayEvent::Disconnected { reason } => {
                self.metrics.gateway_up.set(0);
                // Once per reason: a gateway down for minutes is not a warning per attempt.
                if self.link.borrow().last_error.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(%reason, "gateway link still down; reconnecting");
                } else {
                    tracing::warn!(%reason, "gateway link down; reconnecting");
                }
                self.link.send_modify(|l| {
                    l.connected = false;
                    l.replayed = false;
                    l.last_error = Some(reason);
                });
            }
            GatewayEvent::PairingRequired { request_id } => {
                self.link.send_modify(|l| {
                    l.connected = false;
                    l.pairing_request = Some(request_id.unwrap_or_default());
                });
            }
        }
    }

    fn on_snapshot(&mut self, pending: Vec<Approval>) {
        let live: std::collections::HashSet<ApprovalId> =
            pending.iter().map(|a| a.id.clone()).collect();
        let count = pending.len();
        for a in pending {
            self.on_requested(a);
        }
        // Pending here but not at the gateway: it ended while we were away (or the
        // gateway restarted and forgot it). Never leave live buttons behind.
        let vanished: Vec<ApprovalId> = self
            .entries
            .iter()
            .filter(|(id, e)| e.outcome.is_none() && e.resolving.is_empty() && !live.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &vanished {
            self.on_ended(id, Outcome::Gone { at_ms: now_ms() });
        }
        self.link.send_modify(|l| {
            l.replayed = true;
            l.last_error = None;
        });
        if !self.ready_logged {
            self.ready_logged = true;
            tracing::info!(pending = count, finished_while_away = vanished.len(), channels = ?self.channels.keys().collect::<Vec<_>>(), "ready");
        } else {
            tracing::info!(
                pending = count,
                finished_while_away = vanished.len(),
                "replayed after reconnect"
            );
        }
    }

    fn on_requested(&mut self, approval: Approval) {
        let id = approval.id.clone();
        if !self.entries.contains_key(&id) {
            let requested = Event::Requested {
                approval: &approval,
            };
            match self.store.insert_approval(&approval, &requested.record()) {
                Ok(true) => requested.observe(&self.metrics),
                Ok(false) => {} // known from before a restart whose state is already loaded
                Err(e) => {
                    tracing::error!(%id, error = %e, "could not persist approval; prompting anyway")
                }
            }
            self.entries.insert(
                id.clone(),
                Entry {
                    approval,
                    outcome: None,
                    resolving: Vec::new(),
                    prompts: BTreeMap::new(),
                    waiting: Vec::new(),
                    held: Vec::new(),
                    seen: Instant::now(),
                },
            );
        }
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        if entry.outcome.is_some() {
            return;
        }
        let missing: Vec<Target> = self
            .channels
            .values()
            .flat_map(|c| c.targets())
            .filter(|t| !entry.prompts.contains_key(t))
            .collect();
        for target in missing {
            self.enqueue(&id, &target);
        }
    }

    fn on_ended(&mut self, id: &ApprovalId, outcome: Outcome) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.outcome.is_some() {
            return;
        }
        // Our own resolve usually comes back as this event before the RPC answer: credit
        // the responder who asked for that decision.
        let outcome = match outcome {
            Outcome::Decided {
                decision,
                by: Decider::Elsewhere { .. },
                at_ms,
            } if entry.resolving.iter().any(|(_, d)| *d == decision) => {
                let (who, _) = entry
                    .resolving
                    .iter()
                    .find(|(_, d)| *d == decision)
                    .cloned()
                    .unwrap_or_else(|| unreachable!());
                Outcome::Decided {
                    decision,
                    by: Decider::Responder(who),
                    at_ms,
                }
            }
            other => other,
        };
        self.set_outcome(id, outcome);
    }

    fn set_outcome(&mut self, id: &ApprovalId, outcome: Outcome) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.outcome.is_some() {
            return;
        }
        let ended = Event::Ended {
            approval: &entry.approval,
            outcome: &outcome,
        };
        if let Err(e) = self.store.set_outcome(id, &outcome, &ended.record()) {
            tracing::error!(%id, error = %e, "could not persist outcome");
        }
        ended.observe(&self.metrics);
        let waiting = std::mem::take(&mut entry.waiting);
        entry.outcome = Some(outcome.clone());
        for to in waiting {
            self.notify(
                &to,
                Notice::AlreadyFinished {
                    id: id.clone(),
                    outcome: outcome.clone(),
                },
            );
        }
        self.finish_all(id);
    }

    // ---- delivery and finishing ----

    /// Puts `id` in `target`'s delivery queue.
    fn enqueue(&mut self, id: &ApprovalId, target: &Target) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.outcome.is_some() || entry.prompts.contains_key(target) {
            return;
        }
        entry.prompts.insert(target.clone(), PromptState::Queued);
        let lane = self.lanes.entry(target.clone()).or_default();
        let idle = !lane.busy && lane.queue.is_empty();
        lane.queue.push_back(id.clone());
        self.pump(target, idle);
    }

    /// Starts the next delivery to `target` unless one is in flight: one prompt, or a
    /// digest of everything that queued up, up to the channel's digest capacity. A
    /// channel that sends digests is first asked to wait for the target's turn, so what
    /// queues up meanwhile is chosen for the same message.
    /// `fresh`: the lane was idle when the first approval came, so the time since the
    /// engine saw it is the bridge's own overhead (recorded as a metric).
    fn pump(&mut self, target: &Target, fresh: bool) {
        if self.draining {
            return;
        }
        let Some(channel) = self.channels.get(&target.channel).cloned() else {
            tracing::error!(%target, "no channel for target");
            return;
        };
        let Some(lane) = self.lanes.get_mut(target) else {
            return;
        };
        if lane.busy || lane.queue.is_empty() {
            return;
        }
        if channel.digest_capacity() <= 1 {
            return self.send_next(target, fresh, Duration::ZERO);
        }
        lane.busy = true;
        let (target, tx) = (target.clone(), self.tx.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            channel.ready(&target).await;
            let waited = start.elapsed();
            let _ = tx
                .send(Input::TargetReady {
                    target,
                    fresh,
                    waited,
                })
                .await;
        });
    }

    /// Takes the next prompt or digest off `target`'s queue and delivers it.
    fn send_next(&mut self, target: &Target, fresh: bool, waited: Duration) {
        let Some(channel) = self.channels.get(&target.channel).cloned() else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(target) else {
            return;
        };
        lane.busy = false;
        if self.draining {
            return;
        }
        let capacity = channel.digest_capacity().max(1);
        let mut ids = Vec::new();
        let mut approvals = Vec::new();
        while ids.len() < capacity
            && let Some(id) = lane.queue.pop_front()
        {
            // Skips approvals that ended while queued.
            if let Some(entry) = self.entries.get_mut(&id)
                && entry.outcome.is_none()
                && matches!(entry.prompts.get(target), Some(PromptState::Queued))
            {
                entry
                    .prompts
                    .insert(target.clone(), PromptState::Delivering);
                approvals.push(entry.approval.clone());
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return;
        }
        lane.busy = true;
        let seen = (fresh && ids.len() == 1)
            .then(|| self.entries.get(&ids[0]).map(|e| e.seen))
            .flatten();
        let (target, tx, metrics) = (target.clone(), self.tx.clone(), self.metrics.clone());
        self.inflight += 1;
        tokio::spawn(async move {
            if let Some(seen) = seen {
                metrics.overhead("prompt", seen.elapsed().saturating_sub(waited));
            }
            let result = match approvals.as_slice() {
                [one] => channel.deliver(&target, one).await.map(|m| (m, 1)),
                many => channel.deliver_digest(&target, many).await,
            };
            let _ = tx
                .send(Input::Delivered {
                    target,
                    ids,
                    result,
                })
                .await;
        });
    }

    fn on_delivered(
        &mut self,
        target: Target,
        ids: Vec<ApprovalId>,
        result: Result<(MessageRef, usize), ChannelError>,
    ) {
        let lane = self.lanes.entry(target.clone()).or_default();
        match result {
            Ok((prompt, carried)) => {
                lane.busy = false;
                lane.failures = 0;
                let carried = carried.clamp(1, ids.len());
                // What the message does not carry goes back to the front of the queue.
                self.requeue(&target, &ids[carried..]);
                let carried = &ids[..carried];
                if carried.len() > 1 {
                    self.digests.insert(
                        prompt.clone(),
                        Digest {
                            members: carried.to_vec(),
                            updating: false,
                            failures: 0,
                        },
                    );
                }
                for id in carried {
                    self.on_prompt_sent(id, &prompt);
                }
            }
            Err(err) => {
                let will_retry = err.is_transient();
                if will_retry {
                    let delay = backoff(lane.failures, retry_hint(&err));
                    lane.failures += 1;
                    self.later(delay, Input::Retry(Retry::Lane(target.clone())));
                } else {
                    lane.busy = false;
                }
                for id in &ids {
                    let Some(entry) = self.entries.get_mut(id) else {
                        continue;
                    };
                    Event::DeliveryFailed {
                        id,
                        target: &target,
                        error: err.to_string(),
                        will_retry: will_retry && entry.outcome.is_none(),
                    }
                    .emit(&self.store, &self.metrics);
                    if !will_retry {
                        entry.prompts.insert(target.clone(), PromptState::Failed);
                        self.release_held(id, &target);
                        self.forget_if_done(id);
                    }
                }
                if will_retry {
                    self.requeue(&target, &ids);
                }
            }
        }
        self.pump(&target, false);
    }

    /// Puts `ids` back at the front of `target`'s queue, in order; those that ended in
    /// the meantime will never be sent.
    fn requeue(&mut self, target: &Target, ids: &[ApprovalId]) {
        let lane = self.lanes.entry(target.clone()).or_default();
        for id in ids.iter().rev() {
            let Some(entry) = self.entries.get_mut(id) else {
                continue;
            };
            if entry.outcome.is_some() {
                entry.prompts.remove(target);
            } else {
                entry.prompts.insert(target.clone(), PromptState::Queued);
                lane.queue.push_front(id.clone());
            }
        }
        for id in ids {
            self.forget_if_done(id);
        }
    }

    /// Records that `prompt` (a plain prompt or a digest) shows approval `id`.
    fn on_prompt_sent(&mut self, id: &ApprovalId, prompt: &MessageRef) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if let Err(e) = self.store.insert_prompt(id, prompt, now_ms()) {
            tracing::error!(%id, error = %e, "could not persist prompt; its buttons will not survive a restart");
        }
        Event::Delivered {
            id,
            target: &prompt.target,
            message: &prompt.message,
            after: entry.seen.elapsed(),
        }
        .emit(&self.store, &self.metrics);
        let ended = entry.outcome.is_some();
        entry
            .prompts
            .insert(prompt.target.clone(), PromptState::Sent(prompt.clone()));
        if ended {
            self.finish_one(id, prompt);
        }
        self.release_held(id, &prompt.target);
    }

    /// Judges the presses held while the delivery to `target` was in flight.
    fn release_held(&mut self, id: &ApprovalId, target: &Target) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let (now, later): (Vec<Answer>, Vec<Answer>) = std::mem::take(&mut entry.held)
            .into_iter()
            .partition(|a| matches!(&a.via, Via::Prompt(m) if m.target == *target));
        entry.held = later;
        for answer in now {
            self.on_decide(answer, Instant::now());
        }
    }

    fn finish_all(&mut self, id: &ApprovalId) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        // Never sent, and now never will be.
        entry
            .prompts
            .retain(|_, p| !matches!(p, PromptState::Queued));
        let sent: Vec<MessageRef> = entry
            .prompts
            .values()
            .filter_map(|p| match p {
                PromptState::Sent(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        for prompt in sent {
            self.finish_one(id, &prompt);
        }
        self.forget_if_done(id);
    }

    fn finish_one(&mut self, id: &ApprovalId, prompt: &MessageRef) {
        if self.digests.contains_key(prompt) {
            return self.update_digest(prompt);
        }
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let Some(outcome) = entry.outcome.clone() else {
            return;
        };
        let attempt = match entry.prompts.get(&prompt.target) {
            Some(PromptState::Sent(_)) => 0,
            Some(PromptState::Finishing { attempt, .. }) => attempt + 1,
            _ => return,
        };
        let Some(channel) = self.channels.get(&prompt.target.channel).cloned() else {
            // The channel was removed from the config: nothing can edit this prompt.
            entry
                .prompts
                .insert(prompt.target.clone(), PromptState::Finished(prompt.clone()));
            return;
        };
        entry.prompts.insert(
            prompt.target.clone(),
            PromptState::Finishing {
                prompt: prompt.clone(),
                attempt,
            },
        );
        let (approval, prompt, tx) = (entry.approval.clone(), prompt.clone(), self.tx.clone());
        self.inflight += 1;
        tokio::spawn(async move {
            let result = channel.finish(&prompt, &approval, &outcome).await;
            let _ = tx
                .send(Input::Finished {
                    id: approval.id.clone(),
                    prompt,
                    result,
                })
                .await;
        });
    }

    fn on_finished(
        &mut self,
        id: ApprovalId,
        prompt: MessageRef,
        result: Result<(), ChannelError>,
    ) {
        let attempt = match self
            .entries
            .get(&id)
            .and_then(|e| e.prompts.get(&prompt.target))
        {
            Some(PromptState::Finishing { attempt, .. }) => *attempt,
            _ => 0,
        };
        if let Err(e) = &result
            && e.is_transient()
            && attempt + 1 < MAX_FINISH_ATTEMPTS
        {
            tracing::warn!(%id, target = %prompt.target, error = %e, "could not edit prompt; retrying");
            let delay = backoff(attempt, retry_hint(e));
            self.later(delay, Input::Retry(Retry::Finish { id, prompt }));
            return;
        }
        self.prompt_shows_outcome(&id, &prompt, &result);
        self.forget_if_done(&id);
    }

    /// Records that `prompt` now shows `id`'s outcome (or that trying gave up).
    fn prompt_shows_outcome(
        &mut self,
        id: &ApprovalId,
        prompt: &MessageRef,
        result: &Result<(), ChannelError>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let note = match result {
            Ok(()) => "edited",
            Err(ChannelError::MessageGone(_)) => "message gone",
            Err(e) => {
                tracing::error!(%id, target = %prompt.target, error = %e, "could not edit prompt; giving up");
                "edit failed"
            }
        };
        if let Err(e) = self.store.prompt_finished(id, prompt, now_ms()) {
            tracing::error!(%id, error = %e, "could not persist finished prompt");
        }
        Event::Finished {
            id,
            target: &prompt.target,
            note,
        }
        .emit(&self.store, &self.metrics);
        entry
            .prompts
            .insert(prompt.target.clone(), PromptState::Finished(prompt.clone()));
    }

    /// Rewrites a digest to show the rows that ended since its last rewrite; one rewrite
    /// per digest at a time, so a burst of outcomes costs one or two edits.
    fn update_digest(&mut self, prompt: &MessageRef) {
        let Some(digest) = self.digests.get_mut(prompt) else {
            return;
        };
        if digest.updating {
            return; // the rewrite in flight reports back, then this runs again
        }
        let ended: Vec<ApprovalId> = digest
            .members
            .iter()
            .filter(|id| {
                self.entries.get(*id).is_some_and(|e| {
                    e.outcome.is_some()
                        && matches!(e.prompts.get(&prompt.target), Some(PromptState::Sent(_)))
                })
            })
            .cloned()
            .collect();
        if ended.is_empty() {
            return;
        }
        let Some(channel) = self.channels.get(&prompt.target.channel).cloned() else {
            for id in &ended {
                if let Some(e) = self.entries.get_mut(id) {
                    e.prompts
                        .insert(prompt.target.clone(), PromptState::Finished(prompt.clone()));
                }
            }
            return;
        };
        let rows: Vec<DigestRow> = digest
            .members
            .iter()
            .filter_map(|id| self.entries.get(id))
            .map(|e| DigestRow {
                approval: e.approval.clone(),
                outcome: e.outcome.clone(),
            })
            .collect();
        for id in &ended {
            if let Some(e) = self.entries.get_mut(id) {
                e.prompts.insert(
                    prompt.target.clone(),
                    PromptState::Finishing {
                        prompt: prompt.clone(),
                        attempt: digest.failures,
                    },
                );
            }
        }
        digest.updating = true;
        let (prompt, tx) = (prompt.clone(), self.tx.clone());
        self.inflight += 1;
        tokio::spawn(async move {
            let result = channel.update_digest(&prompt, &rows).await;
            let _ = tx
                .send(Input::DigestUpdated {
                    prompt,
                    ended,
                    result,
                })
                .await;
        });
    }

    fn on_digest_updated(
        &mut self,
        prompt: MessageRef,
        ended: Vec<ApprovalId>,
        result: Result<(), ChannelError>,
    ) {
        let Some(digest) = self.digests.get_mut(&prompt) else {
            return;
        };
        if let Err(e) = &result
            && e.is_transient()
            && digest.failures + 1 < MAX_FINISH_ATTEMPTS
        {
            tracing::warn!(target = %prompt.target, message = %prompt.message, error = %e, "could not rewrite digest; retrying");
            let delay = backoff(digest.failures, retry_hint(e));
            digest.failures += 1;
            for id in &ended {
                if let Some(e) = self.entries.get_mut(id) {
                    e.prompts
                        .insert(prompt.target.clone(), PromptState::Sent(prompt.clone()));
                }
            }
            self.later(delay, Input::Retry(Retry::Digest(prompt)));
            return;
        }
        digest.updating = false;
        digest.failures = 0;
        for id in &ended {
            self.prompt_shows_outcome(id, &prompt, &result);
        }
        // Rows that ended while this rewrite was in flight.
        self.update_digest(&prompt);
        for id in &ended {
            self.forget_if_done(id);
        }
    }

    /// Drops a finished approval from memory; rows of a digest go together, once every
    /// row shows its outcome.
    fn forget_if_done(&mut self, id: &ApprovalId) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        if !entry.done() {
            return;
        }
        let digests: Vec<MessageRef> = entry
            .prompts
            .values()
            .filter_map(PromptState::message)
            .filter(|m| self.digests.contains_key(*m))
            .cloned()
            .collect();
        for m in &digests {
            let all_done = self.digests[m]
                .members
                .iter()
                .all(|other| self.entries.get(other).is_none_or(Entry::done));
            if !all_done {
                return;
            }
        }
        self.entries.remove(id);
        for m in digests {
            if let Some(d) = self.digests.remove(&m) {
                for other in d.members {
                    self.forget_if_done(&other);
                }
            }
        }
    }

    // ---- answers ----

    fn allows(&self, who: &Responder) -> bool {
        self.channels
            .get(&who.channel)
            .is_some_and(|c| c.allows(&who.user_id))
    }

    fn on_answer(&mut self, answer: Answer) {
        let received = Instant::now();
        let allowed = self.allows(&answer.responder);
        match answer.request.clone() {
            Request::ListPending => {
                Event::Answered {
                    id: None,
                    responder: &answer.responder,
                    decision: None,
                }
                .emit(&self.store, &self.metrics);
                if !allowed {
                    return self.refuse(&answer, None, Refusal::NotAllowed);
                }
                if !answer.in_dm {
                    return self.refuse(&answer, None, Refusal::NotDirectMessage);
                }
                let mut list: Vec<Approval> = self
                    .entries
                    .values()
                    .filter(|e| e.outcome.is_none())
                    .map(|e| e.approval.clone())
                    .collect();
                list.sort_by_key(|a| a.created_at_ms);
                self.notify(&answer.reply, Notice::Pending(list));
            }
            Request::Malformed { raw, .. } => {
                let reason = if allowed {
                    Refusal::Malformed
                } else {
                    Refusal::NotAllowed
                };
                Event::Refused {
                    id: None,
                    responder: &answer.responder,
                    reason,
                    raw: Some(&raw),
                }
                .emit(&self.store, &self.metrics);
                self.notify(&answer.reply, Notice::Refused(reason));
            }
            Request::Decide { id, decision, .. } => {
                let recorded = Event::Answered {
                    id: Some(&id),
                    responder: &answer.responder,
                    decision: Some(decision),
                }
                .try_emit(&self.store, &self.metrics);
                // Fail closed: an answer the audit log cannot hold is not acted on.
                if let Err(e) = recorded {
                    tracing::error!(%id, user = %answer.responder.user_id, error = %e,
                        "cannot record the answer in the database (disk full or read-only?); refusing it, the approval stays pending");
                    return self.refuse(&answer, Some(&id), Refusal::StoreUnavailable);
                }
                self.on_decide(answer, received)
            }
        }
    }

    /// `received`: when the engine got the answer (the bridge's own time starts there).
    fn on_decide(&mut self, answer: Answer, received: Instant) {
        let Request::Decide {
            id,
            decision,
            kind: claimed,
        } = answer.request.clone()
        else {
            return;
        };
        let allowed = self.allows(&answer.responder);
        // An allowed responder pressing on a finished approval learns the canonical
        // outcome; the prompt is never degraded.
        if allowed {
            let finished = match self.entries.get(&id) {
                Some(e) => e.outcome.clone(),
                None => self.store.outcome(&id).ok().flatten(),
            };
            if let Some(outcome) = finished {
                return self.notify(&answer.reply, Notice::AlreadyFinished { id, outcome });
            }
        }
        if let (Via::Prompt(msg), Some(entry)) = (&answer.via, self.entries.get_mut(&id))
            && matches!(
                entry.prompts.get(&msg.target),
                Some(PromptState::Delivering)
            )
        {
            entry.held.push(answer);
            return;
        }
        // One resolve per approval at a time. The gateway answers a repeated resolve of the
        // same approval (a double tap) with another success, so a second answer waits for
        // the first one's result and is judged again then: it learns the outcome, or gets
        // its own try if nothing was decided.
        if allowed
            && self
                .entries
                .get(&id)
                .is_some_and(|e| !e.resolving.is_empty())
        {
            self.after_resolve.entry(id).or_default().push(answer);
            return;
        }
        let entry = self.entries.get(&id);
        let our_prompts = entry.map(Entry::our_prompts).unwrap_or_default();
        let facts = Facts {
            allowed,
            in_dm: answer.in_dm,
            pending: entry.map(|e| &e.approval),
            via: &answer.via,
            our_prompts: &our_prompts,
            decision,
            kind: claimed,
        };
        if let Err(reason) = policy::authorize(&facts) {
            return self.refuse(&answer, Some(&id), reason);
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.resolving.push((answer.responder.clone(), decision));
        let (resolver, tx, kind, started, metrics) = (
            self.resolver.clone(),
            self.tx.clone(),
            entry.approval.kind,
            Instant::now(),
            self.metrics.clone(),
        );
        self.inflight += 1;
        tokio::spawn(async move {
            metrics.overhead("resolve", received.elapsed());
            let result = resolver.resolve(&id, kind, decision).await;
            let _ = tx
                .send(Input::ResolveDone {
                    answer,
                    id,
                    decision,
                    result,
                    took: started.elapsed(),
                })
                .await;
        });
    }

    fn on_resolve_done(
        &mut self,
        answer: Answer,
        id: ApprovalId,
        decision: Decision,
        result: Result<(), GatewayError>,
        took: Duration,
    ) {
        if let Some(entry) = self.entries.get_mut(&id)
            && let Some(pos) = entry
                .resolving
                .iter()
                .position(|(r, d)| *r == answer.responder && *d == decision)
        {
            let mine = entry.resolving.remove(pos);
            if result.is_ok() {
                // Keep the credit for a matching Ended that arrives after the RPC answer.
                entry.resolving.insert(0, mine);
            }
        }
        match result {
            Ok(()) => {
                Event::Resolved {
                    id: &id,
                    responder: &answer.responder,
                    decision,
                    after: took,
                }
                .emit(&self.store, &self.metrics);
                let outcome = Outcome::Decided {
                    decision,
                    by: Decider::Responder(answer.responder.clone()),
                    at_ms: now_ms(),
                };
                self.set_outcome(&id, outcome);
                if let Some(e) = self.entries.get_mut(&id) {
                    e.resolving
                        .retain(|(r, d)| !(*r == answer.responder && *d == decision));
                }
                // The canonical outcome may differ if another answer won the race.
                let notice = match self.entries.get(&id).and_then(|e| e.outcome.clone()) {
                    Some(Outcome::Decided {
                        decision: d,
                        by: Decider::Responder(r),
                        ..
                    }) if d == decision && r == answer.responder => Notice::Accepted {
                        id: id.clone(),
                        decision,
                    },
                    Some(outcome) => Notice::AlreadyFinished {
                        id: id.clone(),
                        outcome,
                    },
                    None => Notice::Accepted {
                        id: id.clone(),
                        decision,
                    },
                };
                self.notify(&answer.reply, notice);
                self.forget_if_done(&id);
            }
            Err(err @ (GatewayError::NotFound | GatewayError::AlreadyResolved)) => {
                // Terminal: someone else won, or the gateway forgot it. Never retried.
                Event::ResolveFailed {
                    id: &id,
                    responder: &answer.responder,
                    error: err.to_string(),
                }
                .emit(&self.store, &self.metrics);
                let known = match self.entries.get(&id) {
                    Some(e) => e.outcome.clone(),
                    None => self.store.outcome(&id).ok().flatten(),
                };
                let others_resolving = self
                    .entries
                    .get(&id)
                    .is_some_and(|e| !e.resolving.is_empty());
                match known {
                    Some(outcome) => self.notify(
                        &answer.reply,
                        Notice::AlreadyFinished {
                            id: id.clone(),
                            outcome,
                        },
                    ),
                    None if err == GatewayError::NotFound && !others_resolving => {
                        let outcome = Outcome::Gone { at_ms: now_ms() };
                        self.set_outcome(&id, outcome.clone());
                        self.notify(
                            &answer.reply,
                            Notice::AlreadyFinished {
                                id: id.clone(),
                                outcome,
                            },
                        );
                    }
                    // The resolved event with the canonical outcome is on its way.
                    None => {
                        if let Some(e) = self.entries.get_mut(&id) {
                            e.waiting.push(answer.reply.clone());
                        }
                    }
                }
                self.forget_if_done(&id);
            }
            Err(err @ GatewayError::Rejected { .. }) => {
                Event::ResolveFailed {
                    id: &id,
                    responder: &answer.responder,
                    error: err.to_string(),
                }
                .emit(&self.store, &self.metrics);
                self.notify(&answer.reply, Notice::Refused(Refusal::GatewayRejected));
            }
            Err(err @ GatewayError::Unavailable(_)) => {
                // Nothing was decided: the approval stays pending, the responder may retry.
                Event::ResolveFailed {
                    id: &id,
                    responder: &answer.responder,
                    error: err.to_string(),
                }
                .emit(&self.store, &self.metrics);
                self.notify(&answer.reply, Notice::Refused(Refusal::GatewayUnavailable));
            }
        }
        if self.entries.get(&id).is_none_or(|e| e.resolving.is_empty())
            && let Some(waiting) = self.after_resolve.remove(&id)
        {
            for answer in waiting {
                self.on_decide(answer, Instant::now());
            }
        }
    }

    fn refuse(&self, answer: &Answer, id: Option<&ApprovalId>, reason: Refusal) {
        Event::Refused {
            id,
            responder: &answer.responder,
            reason,
            raw: None,
        }
        .emit(&self.store, &self.metrics);
        self.notify(&answer.reply, Notice::Refused(reason));
    }

    fn notify(&self, to: &ReplyTo, notice: Notice) {
        let Some(channel) = self.channels.get(&to.channel).cloned() else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            if let Err(e) = channel.notify(&to, &notice).await {
                tracing::warn!(channel = %to.channel, error = %e, "could not notify responder");
            }
        });
    }

    fn later(&self, delay: Duration, input: Input) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(input).await;
        });
    }
}

fn retry_hint(e: &ChannelError) -> Option<Duration> {
    match e {
        ChannelError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// The pause before another try of a delivery or an edit: at least the service's own hint.
fn backoff(attempt: u32, hint: Option<Duration>) -> Duration {
    RETRY.pause_at_least(attempt, hint, &mut rand::thread_rng())
}

#[cfg(test)]
mod tests;
