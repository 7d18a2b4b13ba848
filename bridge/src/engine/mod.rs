//! The approval lifecycle, and the only place that decides. [`Core`] is a state machine
//! without I/O: one [`Input`] and the time in, the [`Effect`]s to carry out back; it never
//! spawns, sleeps, reads a clock or touches the store. [`Runner`] owns the tasks, executes
//! the effects against the ports and feeds their completions back as inputs.
//!
//! The state is split by what each part owns: [`lifecycle`] the approvals and their
//! prompts, [`lanes`] the per-target delivery queues and digests, [`resolving`] the one
//! resolve per approval and the answers waiting behind it; [`restore`] rebuilds them from
//! the store at start and audits what a shutdown cut off; [`alerts`] tells the owners when
//! the path to them is broken, [`reminders`] that a pending approval is about to expire;
//! [`trust`] holds the owners' time-boxed grants and allows what one covers;
//! [`probe`] follows a harmless approval through every hop; [`missed`] reports what the
//! gateway denied while nobody could see it.

mod alerts;
mod lanes;
mod lifecycle;
mod missed;
mod probe;
mod reminders;
mod resolving;
mod restore;
mod runner;
mod trust;

pub use alerts::{AlertPolicy, Path};
pub use missed::SeenRow;
pub use probe::{Hop, ProbeBy, ProbeReport};
pub use reminders::{Nudge, Point, Quiet, ReminderPolicy};
pub use runner::{ProbeDesk, Runner};
pub use trust::TrustPolicy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::approval::{Approval, ApprovalId, Decider, Decision, Kind, Outcome, Responder};
use crate::bulletin::Bulletin;
use crate::channel::{
    Answer, Channel, ChannelError, DigestRow, MessageRef, Notice, Reach, ReplyTo, Target,
};
use crate::gateway::{GatewayError, GatewayEvent};
use crate::grant::{Grant, GrantId, Revocation};
use crate::history::HistoryMark;
use crate::retry::Backoff;
use crate::store::OpenApproval;
use crate::telemetry::Event;

use alerts::Alerts;
use lanes::Lanes;
use lifecycle::Approvals;
use missed::Missed;
use probe::Probes;
use resolving::Resolving;
use trust::Trust;

/// The time of one step, as data: the monotonic instant (for durations and deadlines) and
/// the wall clock in Unix milliseconds (for what is recorded and shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: i64,
}

/// On whose behalf a resolve asks the gateway.
#[derive(Debug, Clone)]
pub enum Asker {
    /// A person's answer.
    Answer(Answer),
    /// The bridge, under `owner`'s time-boxed `grant`.
    Grant { grant: GrantId, owner: Responder },
}

impl Asker {
    /// The person the decision is credited to.
    pub fn responder(&self) -> &Responder {
        match self {
            Asker::Answer(a) => &a.responder,
            Asker::Grant { owner, .. } => owner,
        }
    }
}

/// Everything that can move the engine. The completions (`ApprovalRecorded` to
/// `ResolveDone`) answer effects the core asked for; `Timer` fires a deadline it armed.
#[derive(Debug)]
pub enum Input {
    /// The runner's first input: prompts that ended while the bridge was down still show
    /// buttons, so they are finished.
    Start,
    Gateway(GatewayEvent),
    Answer(Answer),
    /// A new approval's `requested` record was written (or could not be) at `at`.
    ApprovalRecorded {
        id: ApprovalId,
        at: Instant,
    },
    /// The `answered` audit record of an answer to decide was written, or could not be.
    AnswerRecorded {
        answer: Answer,
        received: Instant,
        result: Result<(), String>,
    },
    /// What the store knows of an approval the core no longer holds.
    OutcomeLooked {
        answer: Answer,
        received: Instant,
        outcome: Option<Outcome>,
    },
    /// `target` can take a prompt at once (see `SendSlot::ready`); `waited` is how long
    /// that took, which is not the bridge's own overhead.
    TargetReady {
        target: Target,
        fresh: bool,
        waited: Duration,
    },
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
        by: Asker,
        id: ApprovalId,
        decision: Decision,
        result: Result<(), GatewayError>,
        took: Duration,
    },
    /// A minted grant's `grant_created` record was written (`Ok(true)`), or not.
    GrantRecorded {
        grant: Grant,
        reply: ReplyTo,
        result: Result<bool, String>,
    },
    /// The `grant_used` record of `grant` allowing `id` was written (`Ok(true)`), or not.
    GrantUseRecorded {
        grant: GrantId,
        id: ApprovalId,
        result: Result<bool, String>,
    },
    /// Run the end-to-end probe; `tap`: wait for an owner to answer its prompt.
    Probe {
        by: ProbeBy,
        tap: bool,
    },
    /// The probe's approval was raised at the gateway (or not).
    ProbeRaised {
        probe: u64,
        result: Result<ApprovalId, GatewayError>,
    },
    /// The gateway's history since the mark, each row with whether a prompt of ours showed it.
    HistoryRead {
        result: Result<Vec<SeenRow>, GatewayError>,
    },
    /// A channel's own view of whether it reaches its chats changed.
    ChannelReach {
        channel: String,
        reach: Reach,
    },
    /// A bulletin was posted to `target` (or could not be); `incident` is the alert's.
    Posted {
        target: Target,
        bulletin: Bulletin,
        incident: Option<(Path, u64)>,
        result: Result<MessageRef, ChannelError>,
    },
    Timer(Timer),
    /// Stop: no new work starts; what is in flight may still report back.
    Shutdown,
    /// The runner stops waiting for what is in flight: audit what was cut off.
    DrainOver,
}

impl Input {
    /// Inputs that report back on work already started: the only ones a draining core takes.
    fn is_completion(&self) -> bool {
        matches!(
            self,
            Input::ApprovalRecorded { .. }
                | Input::AnswerRecorded { .. }
                | Input::OutcomeLooked { .. }
                | Input::Delivered { .. }
                | Input::Finished { .. }
                | Input::DigestUpdated { .. }
                | Input::ResolveDone { .. }
                | Input::GrantRecorded { .. }
                | Input::GrantUseRecorded { .. }
                | Input::DrainOver
        )
    }
}

/// Work to try again once its deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The target's delivery queue, paused after a transient fault.
    Lane(Target),
    Finish {
        id: ApprovalId,
        prompt: MessageRef,
    },
    Digest(MessageRef),
    /// An incident's alert may be due (`epoch` tells it from a later one on `path`).
    Alert {
        path: Path,
        epoch: u64,
    },
    /// A probe's time is up.
    Probe(u64),
    /// The next scheduled probe is due.
    ProbeDue,
    /// A pending approval's reminder or escalation is due.
    Nudge {
        id: ApprovalId,
        nudge: Nudge,
    },
}

/// A durable state change, written with its audit record where it has one.
// `Approval` carries a whole approval; writes are moved once, so no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new approval and its `requested` record, together.
    Approval(Approval),
    /// How an approval ended and its `ended` record, together (first write wins).
    Outcome {
        id: ApprovalId,
        kind: Kind,
        outcome: Outcome,
    },
    /// `prompt` shows approval `id` (one per approval and target).
    Prompt {
        id: ApprovalId,
        prompt: MessageRef,
        at_ms: i64,
    },
    /// `prompt` now shows approval `id`'s outcome.
    PromptFinished {
        id: ApprovalId,
        prompt: MessageRef,
        at_ms: i64,
    },
    /// The gateway's history has been read and reported up to here.
    HistoryMark(HistoryMark),
    /// `by` revoked `grant`, with its `grant_revoked` record.
    GrantRevoked {
        grant: GrantId,
        revocation: Revocation,
        by: Responder,
    },
}

/// What the core asks the runner to do, in order. The comment names the input that
/// reports back, where one does.
#[derive(Debug)]
pub enum Effect {
    /// A durable write (→ `ApprovalRecorded` for `Write::Approval`).
    Store(Write),
    /// One log line, one metric, one audit record.
    Emit(Event),
    /// Write the `answered` record of an answer to decide (→ `AnswerRecorded`). Nothing is
    /// resolved before it is confirmed.
    RecordAnswer { answer: Answer, received: Instant },
    /// Read the outcome of an approval the core no longer holds (→ `OutcomeLooked`).
    LookupOutcome { answer: Answer, received: Instant },
    /// Wait for `target`'s next free slot (→ `TargetReady`).
    AwaitTurn { target: Target, fresh: bool },
    /// Send one prompt, or a digest when `approvals` holds more (→ `Delivered`). `seen` is
    /// set when the time since then is the bridge's own overhead, less `waited`.
    Deliver {
        target: Target,
        approvals: Vec<Approval>,
        seen: Option<Instant>,
        waited: Duration,
    },
    /// Rewrite a prompt to show the outcome (→ `Finished`).
    Finish {
        prompt: MessageRef,
        approval: Approval,
        outcome: Outcome,
    },
    /// Rewrite a pending prompt so its time left is current; nothing reports back.
    Refresh {
        prompt: MessageRef,
        approval: Approval,
    },
    /// Rewrite a digest so every row shows its state (→ `DigestUpdated`).
    UpdateDigest {
        prompt: MessageRef,
        rows: Vec<DigestRow>,
        ended: Vec<ApprovalId>,
    },
    /// Write a minted grant with its `grant_created` record (→ `GrantRecorded`); it counts
    /// only once that is confirmed.
    RecordGrant { grant: Grant, reply: ReplyTo },
    /// Count one use of `grant` on `id` with its `grant_used` record (→ `GrantUseRecorded`):
    /// nothing is allowed under a grant before that is confirmed.
    RecordGrantUse {
        grant: GrantId,
        id: ApprovalId,
        owner: Responder,
        until_ms: i64,
    },
    /// Ask the gateway to decide (→ `ResolveDone`); `received` is when the answer came.
    Resolve {
        by: Asker,
        id: ApprovalId,
        kind: Kind,
        decision: Decision,
        received: Instant,
    },
    /// Tell one responder something; nothing reports back.
    Notify { to: ReplyTo, notice: Notice },
    /// Post a bulletin to `target` as a new message (→ `Posted`).
    Post {
        target: Target,
        bulletin: Bulletin,
        incident: Option<(Path, u64)>,
    },
    /// Read the gateway's history of ended approvals after `mark`, not older than `floor_ms`
    /// (→ `HistoryRead`).
    ReadHistory {
        mark: Option<HistoryMark>,
        floor_ms: i64,
    },
    /// Raise the probe's approval at the gateway (→ `ProbeRaised`).
    RaiseProbe {
        probe: u64,
        command: String,
        timeout_ms: u64,
    },
    /// A probe `approval-bridge probe` asked for (its ticket) is over: hand in its report.
    ProbeDone { ticket: u64, report: ProbeReport },
    /// Rewrite a posted bulletin where the channel can; nothing reports back.
    EditPost {
        post: MessageRef,
        bulletin: Bulletin,
    },
    /// Feed `Input::Timer(timer)` back at `at`.
    Arm { at: Instant, timer: Timer },
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

/// Deliveries, edits and digest rewrites after a transient fault: 0.5–1 s, doubling up to a minute.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
const MAX_FINISH_ATTEMPTS: u32 = 12;

/// The engine's state machine. Build with [`Core::new`], drive with [`Core::step`].
pub struct Core {
    /// Read only through the port's synchronous, I/O-free methods (`targets`, `allows`,
    /// the declared capabilities); every call that talks to a service is the runner's.
    channels: BTreeMap<String, Arc<dyn Channel>>,
    approvals: Approvals,
    lanes: Lanes,
    resolving: Resolving,
    trust: Trust,
    alerts: Alerts,
    reminders: ReminderPolicy,
    probes: Probes,
    missed: Missed,
    link: LinkStatus,
    /// Work started and not yet reported back (deliveries, edits, resolves).
    inflight: usize,
    /// Shutting down: in-flight work reports back, no new work starts.
    draining: bool,
    ready_logged: bool,
    /// Backoff jitter; seeded, so a test is repeatable.
    rng: StdRng,
    now: Now,
    fx: Vec<Effect>,
}

impl Core {
    /// A core holding what the store still had open (`open`, oldest first).
    pub fn new(
        channels: Vec<Arc<dyn Channel>>,
        open: Vec<OpenApproval>,
        now: Now,
        seed: u64,
        alerts: AlertPolicy,
        history: (Option<HistoryMark>, i64),
        trust: (TrustPolicy, Vec<Grant>),
    ) -> Core {
        let (approvals, lanes) = restore::restore(open, now.at);
        Core {
            channels: channels
                .into_iter()
                .map(|c| (c.name().to_owned(), c))
                .collect(),
            approvals,
            lanes,
            resolving: Resolving::default(),
            trust: Trust::new(trust.0, trust.1),
            reminders: alerts.reminders.clone(),
            probes: Probes::default(),
            missed: Missed::new(history.0, history.1),
            alerts: Alerts::new(alerts),
            link: LinkStatus::default(),
            inflight: 0,
            draining: false,
            ready_logged: false,
            rng: StdRng::seed_from_u64(seed),
            now,
            fx: Vec::new(),
        }
    }

    /// Takes one input at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Now, input: Input) -> Vec<Effect> {
        self.now = now;
        if self.draining && !input.is_completion() {
            return Vec::new();
        }
        match input {
            Input::Start => {
                for id in self.approvals.ended() {
                    self.finish_all(&id);
                }
                let mut pending: Vec<ApprovalId> = self.approvals.pending_ids().cloned().collect();
                pending.sort();
                for id in pending {
                    self.arm_nudges(&id);
                }
                self.check_link();
            }
            Input::Gateway(ev) => {
                self.on_gateway(ev);
                self.check_link();
            }
            Input::Answer(a) => self.on_answer(a),
            Input::ApprovalRecorded { id, at } => self.on_approval_recorded(&id, at),
            Input::AnswerRecorded {
                answer,
                received,
                result,
            } => self.on_answer_recorded(answer, received, result),
            Input::OutcomeLooked {
                answer,
                received,
                outcome,
            } => self.on_outcome_looked(answer, received, outcome),
            Input::TargetReady {
                target,
                fresh,
                waited,
            } => self.send_next(&target, fresh, waited),
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
                by,
                id,
                decision,
                result,
                took,
            } => {
                self.inflight -= 1;
                self.on_resolve_done(by, id, decision, result, took)
            }
            Input::GrantRecorded {
                grant,
                reply,
                result,
            } => self.on_grant_recorded(grant, reply, result),
            Input::GrantUseRecorded { grant, id, result } => {
                self.on_grant_use_recorded(grant, id, result)
            }
            Input::HistoryRead { result } => self.on_history_read(result),
            Input::Probe { by, tap } => self.start_probe(by, tap),
            Input::ProbeRaised { probe, result } => self.on_probe_raised(probe, result),
            Input::ChannelReach { channel, reach } => self.on_channel_reach(channel, reach),
            Input::Posted {
                target,
                bulletin,
                incident,
                result,
            } => self.on_posted(target, &bulletin, incident, result),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Shutdown => self.draining = true,
            Input::DrainOver => self.audit_cut_off(),
        }
        std::mem::take(&mut self.fx)
    }

    /// The gateway link as last heard of.
    pub fn link(&self) -> &LinkStatus {
        &self.link
    }

    /// Approvals pending now.
    pub fn pending_count(&self) -> usize {
        self.approvals.pending_count()
    }

    /// Deliveries, edits and resolves started and not yet reported back.
    pub fn in_flight(&self) -> usize {
        self.inflight
    }

    fn emit(&mut self, effect: Effect) {
        self.fx.push(effect);
    }

    fn event(&mut self, event: Event) {
        self.fx.push(Effect::Emit(event));
    }

    fn notify(&mut self, to: &ReplyTo, notice: Notice) {
        if self.channels.contains_key(&to.channel) {
            self.fx.push(Effect::Notify {
                to: to.clone(),
                notice,
            });
        }
    }

    /// Arms `timer` to fire after `delay`.
    fn later(&mut self, delay: Duration, timer: Timer) {
        let at = self.now.at + delay;
        self.fx.push(Effect::Arm { at, timer });
    }

    /// The pause before another try after `attempt` transient faults, at least the
    /// service's own hint.
    fn backoff(&mut self, attempt: u32, err: &ChannelError) -> Duration {
        let hint = match err {
            ChannelError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        };
        RETRY.pause_at_least(attempt, hint, &mut self.rng)
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Lane(target) => {
                self.lanes.unpause(&target);
                self.pump(&target, false);
            }
            Timer::Finish { id, prompt } => self.finish_one(&id, &prompt),
            Timer::Digest(prompt) => {
                self.lanes.digest_retry_due(&prompt);
                self.update_digest(&prompt);
            }
            Timer::Alert { path, epoch } => self.on_alert_timer(&path, epoch),
            Timer::Nudge { id, nudge } => self.on_nudge(&id, nudge),
            Timer::Probe(n) => self.on_probe_timer(n),
            Timer::ProbeDue => self.on_probe_due(),
        }
    }

    // ---- gateway ----

    fn on_gateway(&mut self, ev: GatewayEvent) {
        match ev {
            GatewayEvent::Connected { scopes, missing } => {
                if missing.is_empty() {
                    tracing::info!(?scopes, "gateway connected");
                } else {
                    tracing::error!(
                        ?missing,
                        "gateway connected WITHOUT needed scopes: the bridge is blind to approvals raised by agent runs, \
                         and the gateway denies those at once. Grant them (operator.admin) to this device."
                    );
                }
                let l = &mut self.link;
                l.connected = true;
                l.missing_scopes = missing;
                l.replayed = false;
                l.pairing_request = None;
                // `last_error` is kept until the replay succeeds: a gateway that accepts the
                // connection but refuses the calls is still down, and warned about once.
            }
            GatewayEvent::Snapshot(pending) => self.on_snapshot(pending),
            GatewayEvent::Requested(a) => self.on_requested(a),
            GatewayEvent::Ended { id, outcome } => self.on_ended(&id, outcome),
            GatewayEvent::Disconnected { reason } => {
                // Once per reason: a gateway down for minutes is not a warning per attempt.
                if self.link.last_error.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(%reason, "gateway link still down; reconnecting");
                } else {
                    tracing::warn!(%reason, "gateway link down; reconnecting");
                }
                let l = &mut self.link;
                l.connected = false;
                l.replayed = false;
                l.last_error = Some(reason);
            }
            GatewayEvent::PairingRequired { request_id } => {
                self.link.connected = false;
                self.link.pairing_request = Some(request_id.unwrap_or_default());
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
        let mut vanished: Vec<ApprovalId> = self
            .approvals
            .pending_ids()
            .filter(|id| !self.resolving.busy(id) && !live.contains(*id))
            .cloned()
            .collect();
        vanished.sort();
        for id in &vanished {
            let gone = Outcome::Gone {
                at_ms: self.now.unix_ms,
            };
            self.on_ended(id, gone);
        }
        self.link.replayed = true;
        self.link.last_error = None;
        self.read_history();
        self.start_scheduled_probes();
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

    /// A new approval is recorded first and prompted once that is done
    /// (`ApprovalRecorded`); one known already (replayed after a reconnect or restart) gets
    /// a prompt in every target that lacks one.
    fn on_requested(&mut self, approval: Approval) {
        if !self.approvals.contains(&approval.id) {
            let mut approval = approval;
            self.offer_windows(&mut approval);
            self.approvals.insert(approval.clone(), self.now.at);
            return self.emit(Effect::Store(Write::Approval(approval)));
        }
        self.prompt_everywhere(&approval.id);
    }

    /// The approval's `requested` record is written (or could not be: it is prompted
    /// anyway); `at` is when, and the time the bridge takes to prompt counts from there.
    /// One an owner's grant covers is allowed under it instead.
    fn on_approval_recorded(&mut self, id: &ApprovalId, at: Instant) {
        if let Some(entry) = self.approvals.get_mut(id) {
            entry.seen = at;
        }
        if self.try_grant(id) {
            return;
        }
        self.prompt_everywhere(id);
        self.arm_nudges(id);
    }

    /// Queues a prompt for the pending approval `id` in every target that has none.
    fn prompt_everywhere(&mut self, id: &ApprovalId) {
        if !self.approvals.contains(id)
            || self.approvals.outcome(id).is_some()
            || self.trust.allowing(id)
        {
            return;
        }
        let missing: Vec<Target> = self
            .channels
            .values()
            .flat_map(|c| c.targets())
            .filter(|t| !self.approvals.has_prompt(id, t))
            .collect();
        for target in missing {
            self.enqueue(id, &target);
        }
    }

    fn on_ended(&mut self, id: &ApprovalId, outcome: Outcome) {
        if !self.approvals.contains(id) || self.approvals.outcome(id).is_some() {
            return;
        }
        // Our own resolve usually comes back as this event before the RPC answer: credit
        // the responder who asked for that decision.
        let ours = match &outcome {
            Outcome::Decided {
                decision,
                by: Decider::Elsewhere { .. },
                ..
            } => self.resolving.asked_for(id, *decision),
            _ => None,
        };
        let outcome = match (outcome, ours) {
            (
                Outcome::Decided {
                    decision, at_ms, ..
                },
                Some(by),
            ) => Outcome::Decided {
                decision,
                by,
                at_ms,
            },
            (other, _) => other,
        };
        self.set_outcome(id, outcome);
    }

    /// Records how `id` ended (once), tells whoever waits for it, and finishes its prompts.
    fn set_outcome(&mut self, id: &ApprovalId, outcome: Outcome) {
        let Some(kind) = self.approvals.set_outcome(id, &outcome) else {
            return;
        };
        self.probe_ended(id, &outcome);
        self.emit(Effect::Store(Write::Outcome {
            id: id.clone(),
            kind,
            outcome: outcome.clone(),
        }));
        for to in self.resolving.take_waiting(id) {
            let notice = Notice::AlreadyFinished {
                id: id.clone(),
                outcome: outcome.clone(),
            };
            self.notify(&to, notice);
        }
        self.finish_all(id);
    }

    /// Whether everything about `id` is over: ended, no resolve in flight, every prompt
    /// shows the outcome (or could never be sent).
    fn done(&self, id: &ApprovalId) -> bool {
        self.approvals.settled(id) && !self.resolving.busy(id)
    }

    /// Drops a finished approval from memory; rows of a digest go together, once every
    /// row shows its outcome.
    fn forget_if_done(&mut self, id: &ApprovalId) {
        if !self.approvals.contains(id) || !self.done(id) {
            return;
        }
        let digests = self.lanes.digests_of(self.approvals.prompt_messages(id));
        let all_done = digests.iter().all(|m| {
            self.lanes
                .members(m)
                .iter()
                .all(|other| !self.approvals.contains(other) || self.done(other))
        });
        if !all_done {
            return;
        }
        self.approvals.remove(id);
        self.resolving.forget(id);
        for m in digests {
            for other in self.lanes.remove_digest(&m) {
                self.forget_if_done(&other);
            }
        }
    }
}

#[cfg(test)]
mod tests;
