//! The engine's I/O: one task that feeds [`Input`]s to the [`Core`] and carries out its
//! [`Effect`]s. Store writes and reads run inline, in order, and their completions go
//! straight back into the core before the next input; channel calls, resolves and timers
//! run on spawned tasks whose completions come back through the input queue, so a slow
//! or rate-limited chat never blocks answers. Timers wait in one queue the loop sleeps on
//! (a pending approval's reminders cost an entry each, not a task).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    AlertPolicy, Core, Effect, Input, LinkStatus, Now, ProbeBy, ProbeReport, SeenRow, Timer,
    TrustPolicy, Write,
};
use crate::channel::{Channel, ChannelError, RESUME_PROMPTS, Reach, Request};
use crate::gateway::GatewayPort;
use crate::store::{Store, StoreError};
use crate::telemetry::{Event, Metrics};

/// How long a shutdown waits for in-flight deliveries, edits and resolves to report back.
const DRAIN: Duration = Duration::from_secs(5);

/// The engine's runner; build with [`Runner::new`], drive with [`Runner::run`].
pub struct Runner {
    core: Core,
    channels: HashMap<String, Arc<dyn Channel>>,
    resolver: Arc<dyn GatewayPort>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    link: watch::Sender<LinkStatus>,
    /// The core's open incidents other than the link's, as `/healthz` lines.
    problems: watch::Sender<Vec<String>>,
    /// The core's [`Core::problems_changed`] when `problems` was last written.
    problems_seen: u64,
    desk: ProbeDesk,
    /// Armed timers by when they are due (the number keeps two at one instant apart and
    /// in arming order).
    timers: BTreeMap<(Instant, u64), Timer>,
    armed: u64,
}

/// Where probes asked for from outside the chats (`approval-bridge probe`, through the
/// HTTP listener) wait for their reports.
#[derive(Clone, Default)]
pub struct ProbeDesk {
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<ProbeReport>>>>,
    next: Arc<AtomicU64>,
}

impl ProbeDesk {
    /// A new ticket: the input that starts its probe, and where its report comes.
    pub fn ticket(&self, tap: bool) -> (Input, oneshot::Receiver<ProbeReport>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(n, tx);
        (
            Input::Probe {
                by: ProbeBy::Cli(n),
                tap,
            },
            rx,
        )
    }

    fn hand_in(&self, n: u64, report: ProbeReport) {
        if let Some(tx) = self.lock().remove(&n) {
            let _ = tx.send(report);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ProbeReport>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Runner {
    /// Loads unfinished work from the store and hands each channel its last recorded
    /// prompts. Returns the runner, the sender every input goes through, and a watch of
    /// the gateway link.
    pub fn new(
        channels: Vec<Arc<dyn Channel>>,
        resolver: Arc<dyn GatewayPort>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        alerts: AlertPolicy,
        trust: TrustPolicy,
    ) -> Result<(Runner, mpsc::Sender<Input>, watch::Receiver<LinkStatus>), StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let (link, link_rx) = watch::channel(LinkStatus::default());
        let open = store.open_approvals()?;
        let recorded = store.recent_prompts(RESUME_PROMPTS)?;
        for channel in &channels {
            let Some(sweep) = channel.restart_sweep() else {
                continue;
            };
            let mine: Vec<_> = recorded
                .iter()
                .filter(|m| m.target.channel == channel.name())
                .cloned()
                .collect();
            sweep.resume(&mine);
        }
        let history = (store.history_mark()?, store.first_start_ms());
        let now = now();
        // Grants whose window ended more than a day ago (by this clock) are not loaded:
        // they could cover nothing new, and a clock running ahead only drops more.
        let grants = store.open_grants(now.unix_ms - 86_400_000)?;
        let core = Core::new(
            channels.clone(),
            open,
            now,
            rand::random(),
            alerts,
            history,
            (trust, grants),
        );
        metrics.pending.set(core.pending_count() as i64);
        let runner = Runner {
            core,
            channels: channels
                .into_iter()
                .map(|c| (c.name().to_owned(), c))
                .collect(),
            resolver,
            store,
            metrics,
            tx: tx.clone(),
            rx,
            link,
            problems: watch::Sender::new(Vec::new()),
            problems_seen: 0,
            desk: ProbeDesk::default(),
            timers: BTreeMap::new(),
            armed: 0,
        };
        Ok((runner, tx, link_rx))
    }

    /// What is broken besides the gateway link (a channel, a chat, the scheduled probe), as
    /// the alerts tell it, kept current.
    pub fn problems(&self) -> watch::Receiver<Vec<String>> {
        self.problems.subscribe()
    }

    /// Where `approval-bridge probe` hands in its probes and gets their reports.
    pub fn probe_desk(&self) -> ProbeDesk {
        self.desk.clone()
    }

    /// Runs until `Input::Shutdown` (or every sender is gone), then waits briefly for
    /// in-flight work so message ids are stored and resolves hear back.
    #[tracing::instrument(name = "engine", skip_all)]
    pub async fn run(mut self) {
        for channel in self.channels.values() {
            if let Some(reach) = channel.reach() {
                self.watch_reach(channel.name().to_owned(), reach);
            }
        }
        self.feed(Input::Start);
        while let Some(input) = self.next_input().await {
            let stop = matches!(input, Input::Shutdown);
            self.feed(input);
            if stop {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + DRAIN;
        while self.core.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(input)) => self.feed(input),
                Ok(None) | Err(_) => break,
            }
        }
        self.feed(Input::DrainOver);
    }

    /// The next input: the earliest timer once it is due (first, so a busy queue cannot
    /// starve it), else the next from the queue.
    async fn next_input(&mut self) -> Option<Input> {
        let Some((&(at, n), _)) = self.timers.first_key_value() else {
            return self.rx.recv().await;
        };
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(at.into()) => {
                self.timers.remove(&(at, n)).map(Input::Timer)
            }
            input = self.rx.recv() => input,
        }
    }

    /// One input through the core, and every effect it asks for; store completions go
    /// back in at once, ahead of anything else.
    fn feed(&mut self, input: Input) {
        let mut now_due = VecDeque::from([input]);
        while let Some(input) = now_due.pop_front() {
            for effect in self.core.step(now(), input) {
                if let Some(done) = self.execute(effect) {
                    now_due.push_back(done);
                }
            }
        }
        self.metrics.pending.set(self.core.pending_count() as i64);
        let status = self.core.link();
        self.metrics.gateway_up.set(i64::from(status.connected));
        self.link.send_if_modified(|l| {
            let changed = l != status;
            if changed {
                *l = status.clone();
            }
            changed
        });
        let changes = self.core.problems_changed();
        if changes != self.problems_seen {
            self.problems_seen = changes;
            self.problems.send_replace(self.core.open_problems());
        }
    }

    /// Carries out one effect; returns the input that reports it done when that is
    /// known at once (store reads and the `answered` record).
    fn execute(&mut self, effect: Effect) -> Option<Input> {
        let effect = match inline(self.store.as_ref(), &self.metrics, || now().at, effect) {
            Inline::Done(done) => return done,
            Inline::Elsewhere(effect) => effect,
        };
        match effect {
            Effect::AwaitTurn { target, fresh } => {
                let channel = self.channel(&target.channel)?;
                self.spawn(async move {
                    let start = Instant::now();
                    if let Some(slot) = channel.send_slot() {
                        slot.ready(&target).await;
                    }
                    let waited = start.elapsed();
                    Input::TargetReady {
                        target,
                        fresh,
                        waited,
                    }
                });
            }
            Effect::Deliver {
                target,
                approvals,
                seen,
                waited,
            } => {
                let channel = self.channel(&target.channel)?;
                let metrics = self.metrics.clone();
                self.spawn(async move {
                    if let Some(seen) = seen {
                        metrics.overhead("prompt", seen.elapsed().saturating_sub(waited));
                    }
                    let result = match (approvals.as_slice(), channel.digests()) {
                        ([_, _, ..], Some(digests)) => {
                            digests.deliver_digest(&target, &approvals).await
                        }
                        // One, or a channel without digests: its own prompt for the first
                        // (the core puts the rest back in the queue).
                        _ => channel
                            .deliver(&target, &approvals[0])
                            .await
                            .map(|m| (m, 1)),
                    };
                    let ids = approvals.into_iter().map(|a| a.id).collect();
                    Input::Delivered {
                        target,
                        ids,
                        result,
                    }
                });
            }
            Effect::Finish {
                prompt,
                approval,
                outcome,
            } => {
                let channel = self.channel(&prompt.target.channel)?;
                self.spawn(async move {
                    let result = channel.finish(&prompt, &approval, &outcome).await;
                    Input::Finished {
                        id: approval.id,
                        prompt,
                        result,
                    }
                });
            }
            Effect::Refresh { prompt, approval } => {
                let channel = self.channel(&prompt.target.channel)?;
                tokio::spawn(async move {
                    let Some(refresh) = channel.refresh() else {
                        return;
                    };
                    if let Err(e) = refresh.refresh(&prompt, &approval).await {
                        tracing::debug!(approval = %approval.id, message = %prompt.message, error = %e, "prompt not refreshed");
                    }
                });
            }
            Effect::UpdateDigest {
                prompt,
                rows,
                ended,
            } => {
                let channel = self.channel(&prompt.target.channel)?;
                self.spawn(async move {
                    let result = match channel.digests() {
                        Some(digests) => digests.update_digest(&prompt, &rows).await,
                        None => Err(ChannelError::Permanent(format!(
                            "channel {} sends no digests",
                            channel.name()
                        ))),
                    };
                    Input::DigestUpdated {
                        prompt,
                        ended,
                        result,
                    }
                });
            }
            Effect::Resolve {
                by,
                id,
                kind,
                decision,
                received,
            } => {
                let (resolver, metrics) = (self.resolver.clone(), self.metrics.clone());
                self.spawn(async move {
                    metrics.overhead("resolve", received.elapsed());
                    let started = Instant::now();
                    let result = resolver.resolve(&id, kind, decision).await;
                    Input::ResolveDone {
                        by,
                        id,
                        decision,
                        result,
                        took: started.elapsed(),
                    }
                });
            }
            Effect::Notify { to, notice } => {
                let channel = self.channel(&to.channel)?;
                tokio::spawn(async move {
                    if let Err(e) = channel.notify(&to, &notice).await {
                        tracing::warn!(channel = %to.channel, error = %e, "could not notify responder");
                    }
                });
            }
            Effect::Post {
                target,
                bulletin,
                incident,
            } => {
                let channel = self.channel(&target.channel)?;
                self.spawn(async move {
                    let result = channel.post(&target, &bulletin).await;
                    Input::Posted {
                        target,
                        bulletin,
                        incident,
                        result,
                    }
                });
            }
            Effect::EditPost { post, bulletin } => {
                let channel = self.channel(&post.target.channel)?;
                tokio::spawn(async move {
                    if let Err(e) = channel.edit_post(&post, &bulletin).await {
                        tracing::debug!(target = %post.target, error = %e, "could not rewrite a bulletin");
                    }
                });
            }
            Effect::ReadHistory { mark, floor_ms } => {
                let (gateway, store) = (self.resolver.clone(), self.store.clone());
                self.spawn(async move {
                    let rows = gateway.history_since(mark.as_ref(), floor_ms).await;
                    // A row whose prompt state cannot be read counts as prompted: report
                    // nothing rather than something the owner did see.
                    let result = rows.map(|rows| {
                        rows.into_iter()
                            .map(|row| SeenRow {
                                prompted: store.was_prompted(&row.id).unwrap_or(true),
                                row,
                            })
                            .collect()
                    });
                    Input::HistoryRead { result }
                });
            }
            Effect::RaiseProbe {
                probe,
                command,
                timeout_ms,
            } => {
                let resolver = self.resolver.clone();
                self.spawn(async move {
                    let result = resolver.raise_probe(&command, timeout_ms).await;
                    Input::ProbeRaised { probe, result }
                });
            }
            Effect::ProbeDone { ticket, report } => self.desk.hand_in(ticket, report),
            Effect::Arm { at, timer } => {
                self.armed += 1;
                self.timers.insert((at, self.armed), timer);
            }
            Effect::Store(_)
            | Effect::Emit(_)
            | Effect::RecordAnswer { .. }
            | Effect::RecordGrant { .. }
            | Effect::RecordGrantUse { .. }
            | Effect::LookupOutcome { .. } => unreachable!("carried out inline"),
        }
        None
    }

    /// Feeds every change of a channel's reach to the core, the current one first.
    fn watch_reach(&self, channel: String, mut reach: watch::Receiver<Reach>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                let now = reach.borrow_and_update().clone();
                let input = Input::ChannelReach {
                    channel: channel.clone(),
                    reach: now,
                };
                if tx.send(input).await.is_err() || reach.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        let channel = self.channels.get(name).cloned();
        if channel.is_none() {
            tracing::error!(channel = name, "no such channel");
        }
        channel
    }

    /// Runs `work` on its own task and feeds what it returns back to the core.
    fn spawn(&self, work: impl Future<Output = Input> + Send + 'static) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(work.await).await;
        });
    }
}

/// What became of an effect offered to [`inline`].
pub(super) enum Inline {
    /// Carried out; it may report back at once.
    Done(Option<Input>),
    /// Not the store's: it runs elsewhere.
    Elsewhere(Effect),
}

/// Carries out `effect` at once when it is the store's (a write, an event, the `answered`
/// record, a lookup); `clock` tells when a write was done. The runner and the core's tests
/// share it.
pub(super) fn inline(
    store: &dyn Store,
    metrics: &Metrics,
    clock: impl Fn() -> Instant,
    effect: Effect,
) -> Inline {
    match effect {
        Effect::Store(w) => return Inline::Done(write(store, metrics, clock, w)),
        Effect::Emit(event) => event.emit(store, metrics),
        Effect::RecordAnswer { answer, received } => {
            let (id, decision) = match &answer.request {
                Request::Decide { id, choice, .. } => (Some(id.clone()), Some(*choice)),
                _ => (None, None),
            };
            let answered = Event::Answered {
                id,
                responder: answer.responder.clone(),
                decision,
            };
            let result = answered.try_emit(store, metrics).map_err(|e| e.to_string());
            return Inline::Done(Some(Input::AnswerRecorded {
                answer,
                received,
                result,
            }));
        }
        Effect::RecordGrant { grant, reply } => {
            let created = Event::GrantCreated {
                grant: grant.clone(),
            };
            let result = store
                .insert_grant(&grant, &created.record())
                .map_err(|e| e.to_string());
            if result == Ok(true) {
                created.observe(metrics);
            }
            return Inline::Done(Some(Input::GrantRecorded {
                grant,
                reply,
                result,
            }));
        }
        Effect::RecordGrantUse {
            grant,
            id,
            owner,
            until_ms,
        } => {
            let used = Event::GrantUsed {
                grant: grant.clone(),
                id: id.clone(),
                owner,
                until_ms,
            };
            let result = store
                .grant_used(&grant, &used.record())
                .map_err(|e| e.to_string());
            if result == Ok(true) {
                used.observe(metrics);
            }
            return Inline::Done(Some(Input::GrantUseRecorded { grant, id, result }));
        }
        Effect::LookupOutcome { answer, received } => {
            let outcome = match &answer.request {
                Request::Decide { id, .. } => store.outcome(id).ok().flatten(),
                _ => None,
            };
            return Inline::Done(Some(Input::OutcomeLooked {
                answer,
                received,
                outcome,
            }));
        }
        other => return Inline::Elsewhere(other),
    }
    Inline::Done(None)
}

/// A durable write; a failure is logged (and shows on `/healthz` through
/// [`Store::fault`]) and changes nothing else: only the `answered` record gates a decision.
/// A new approval's record reports back when it is done, so its prompt follows it.
fn write(
    store: &dyn Store,
    metrics: &Metrics,
    clock: impl Fn() -> Instant,
    write: Write,
) -> Option<Input> {
    match write {
        Write::Approval(approval) => {
            let requested = Event::Requested {
                approval: approval.clone(),
            };
            match store.insert_approval(&approval, &requested.record()) {
                Ok(true) => requested.observe(metrics),
                Ok(false) => {} // known from before a restart whose state is already loaded
                Err(e) => {
                    tracing::error!(id = %approval.id, error = %e, "could not persist approval; prompting anyway")
                }
            }
            return Some(Input::ApprovalRecorded {
                id: approval.id,
                at: clock(),
            });
        }
        Write::Outcome { id, kind, outcome } => {
            let ended = Event::Ended {
                id: id.clone(),
                kind,
                outcome: outcome.clone(),
            };
            if let Err(e) = store.set_outcome(&id, &outcome, &ended.record()) {
                tracing::error!(%id, error = %e, "could not persist outcome");
            }
            ended.observe(metrics);
        }
        Write::Prompt { id, prompt, at_ms } => {
            if let Err(e) = store.insert_prompt(&id, &prompt, at_ms) {
                tracing::error!(%id, error = %e, "could not persist prompt; its buttons will not survive a restart");
            }
        }
        Write::HistoryMark(mark) => {
            if let Err(e) = store.set_history_mark(&mark) {
                tracing::error!(error = %e, "could not persist the history mark; a restart may report those approvals again");
            }
        }
        Write::GrantRevoked {
            grant,
            revocation,
            by,
        } => {
            let revoked = Event::GrantRevoked {
                grant: grant.clone(),
                by,
            };
            match store.revoke_grant(&grant, &revocation, &revoked.record()) {
                Ok(_) => revoked.observe(metrics),
                Err(e) => {
                    tracing::error!(%grant, error = %e, "could not persist the revocation; the grant is revoked until the bridge restarts")
                }
            }
        }
        Write::PromptFinished { id, prompt, at_ms } => {
            if let Err(e) = store.prompt_finished(&id, &prompt, at_ms) {
                tracing::error!(%id, error = %e, "could not persist finished prompt");
            }
        }
    }
    None
}

/// The time of a step, read from tokio's clock (so a test's paused clock rules it too).
fn now() -> Now {
    Now {
        at: tokio::time::Instant::now().into_std(),
        unix_ms: crate::approval::now_ms(),
    }
}
