//! An in-memory `Channel` for engine tests: records what the engine asked of it and lets
//! a test script failures. No wire format, no escaping.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, watch};

use super::{
    Answer, Channel, ChannelError, DigestRow, Digests, MessageRef, Notice, Reach, Refresh, ReplyTo,
    RestartSweep, SendSlot, Target,
};
use crate::approval::{Approval, ApprovalId, Outcome};
use crate::bulletin::Bulletin;

/// A digest rewrite as recorded: the message and each row's outcome.
pub type DigestUpdate = (MessageRef, Vec<(ApprovalId, Option<Outcome>)>);

#[derive(Default)]
struct State {
    next_message: u64,
    delivered: Vec<(ApprovalId, MessageRef)>,
    finished: Vec<(MessageRef, Outcome)>,
    notices: Vec<(ReplyTo, Notice)>,
    /// Transient failures still to return from `deliver`.
    fail_deliveries: u32,
    digest_capacity: usize,
    /// Each digest sent: the message and the approvals it carries.
    digests: Vec<(MessageRef, Vec<ApprovalId>)>,
    /// Each digest rewrite: the message and its rows' outcomes.
    digest_updates: Vec<DigestUpdate>,
    /// Deliveries started and not yet through the `gate`.
    at_gate: usize,
    /// What `resume` was handed at start.
    resumed: Vec<MessageRef>,
    /// Each bulletin posted, and each rewrite of one.
    posts: Vec<(MessageRef, Bulletin)>,
    post_edits: Vec<(MessageRef, Bulletin)>,
}

pub struct MemoryChannel {
    name: String,
    targets: Vec<Target>,
    allow: HashSet<String>,
    state: Mutex<State>,
    /// Held by a test to keep deliveries in flight (so approvals queue up behind them).
    pub gate: tokio::sync::Mutex<()>,
    /// Held by a test to model a target that cannot take a message yet (a chat's rate
    /// limit): `ready` waits for it.
    pub turn: tokio::sync::Mutex<()>,
    reach: watch::Sender<Reach>,
}

impl MemoryChannel {
    pub fn new(name: &str, chats: &[&str], allow: &[&str]) -> MemoryChannel {
        MemoryChannel {
            name: name.to_owned(),
            targets: chats
                .iter()
                .map(|c| Target {
                    channel: name.to_owned(),
                    chat: (*c).to_owned(),
                })
                .collect(),
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            state: Mutex::new(State {
                next_message: 100,
                digest_capacity: 1,
                ..State::default()
            }),
            gate: tokio::sync::Mutex::new(()),
            turn: tokio::sync::Mutex::new(()),
            reach: watch::Sender::new(Reach::Up),
        }
    }

    /// Lets one digest carry up to `capacity` approvals.
    pub fn with_digests(self, capacity: usize) -> MemoryChannel {
        self.state().digest_capacity = capacity;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `n` deliveries fail transiently.
    pub fn fail_next_deliveries(&self, n: u32) {
        self.state().fail_deliveries = n;
    }

    pub fn delivered(&self) -> Vec<(ApprovalId, MessageRef)> {
        self.state().delivered.clone()
    }

    pub fn finished(&self) -> Vec<(MessageRef, Outcome)> {
        self.state().finished.clone()
    }

    pub fn notices(&self) -> Vec<(ReplyTo, Notice)> {
        self.state().notices.clone()
    }

    pub fn digests(&self) -> Vec<(MessageRef, Vec<ApprovalId>)> {
        self.state().digests.clone()
    }

    pub fn digest_updates(&self) -> Vec<DigestUpdate> {
        self.state().digest_updates.clone()
    }

    pub fn posts(&self) -> Vec<(MessageRef, Bulletin)> {
        self.state().posts.clone()
    }

    pub fn post_edits(&self) -> Vec<(MessageRef, Bulletin)> {
        self.state().post_edits.clone()
    }

    /// Reports the channel up or down, as an adapter's receive loop would.
    pub fn set_reach(&self, reach: Reach) {
        self.reach.send_replace(reach);
    }

    pub fn resumed(&self) -> Vec<MessageRef> {
        self.state().resumed.clone()
    }

    /// How many deliveries have started and wait at the `gate`.
    pub fn at_gate(&self) -> usize {
        self.state().at_gate
    }

    /// Passes the `gate`, counted in `at_gate` while waiting.
    async fn through_gate(&self) {
        self.state().at_gate += 1;
        drop(self.gate.lock().await);
        self.state().at_gate -= 1;
    }

    fn next_message(&self, target: &Target) -> Result<MessageRef, ChannelError> {
        let mut s = self.state();
        if s.fail_deliveries > 0 {
            s.fail_deliveries -= 1;
            return Err(ChannelError::Transient {
                message: "scripted failure".into(),
                retry_after: None,
            });
        }
        s.next_message += 1;
        Ok(MessageRef {
            target: target.clone(),
            message: s.next_message.to_string(),
        })
    }
}

#[async_trait]
impl Channel for MemoryChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    fn allows(&self, user_id: &str) -> bool {
        self.allow.contains(user_id)
    }

    async fn health(&self) -> Result<String, ChannelError> {
        Ok(format!("memory channel {}", self.name))
    }

    fn digests(&self) -> Option<&dyn Digests> {
        (self.state().digest_capacity > 1).then_some(self as &dyn Digests)
    }

    fn send_slot(&self) -> Option<&dyn SendSlot> {
        Some(self)
    }

    fn restart_sweep(&self) -> Option<&dyn RestartSweep> {
        Some(self)
    }

    fn refresh(&self) -> Option<&dyn Refresh> {
        Some(self)
    }

    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError> {
        self.through_gate().await;
        let m = self.next_message(target)?;
        self.state()
            .delivered
            .push((approval.id.clone(), m.clone()));
        Ok(m)
    }

    async fn finish(
        &self,
        prompt: &MessageRef,
        _: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        self.state()
            .finished
            .push((prompt.clone(), outcome.clone()));
        Ok(())
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        self.state().notices.push((to.clone(), notice.clone()));
        Ok(())
    }

    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError> {
        let m = self.next_message(target)?;
        self.state().posts.push((m.clone(), bulletin.clone()));
        Ok(m)
    }

    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError> {
        self.state()
            .post_edits
            .push((post.clone(), bulletin.clone()));
        Ok(())
    }

    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        Some(self.reach.subscribe())
    }

    async fn run(&self, _answers: mpsc::Sender<Answer>, mut shutdown: broadcast::Receiver<()>) {
        let _ = shutdown.recv().await;
    }
}

#[async_trait]
impl Digests for MemoryChannel {
    fn capacity(&self) -> usize {
        self.state().digest_capacity
    }

    async fn deliver_digest(
        &self,
        target: &Target,
        approvals: &[Approval],
    ) -> Result<(MessageRef, usize), ChannelError> {
        self.through_gate().await;
        let m = self.next_message(target)?;
        let mut s = self.state();
        for a in approvals {
            s.delivered.push((a.id.clone(), m.clone()));
        }
        let ids = approvals.iter().map(|a| a.id.clone()).collect();
        s.digests.push((m.clone(), ids));
        Ok((m, approvals.len()))
    }

    async fn update_digest(
        &self,
        prompt: &MessageRef,
        rows: &[DigestRow],
    ) -> Result<(), ChannelError> {
        let rows = rows
            .iter()
            .map(|r| (r.approval.id.clone(), r.outcome.clone()))
            .collect();
        self.state().digest_updates.push((prompt.clone(), rows));
        Ok(())
    }
}

#[async_trait]
impl SendSlot for MemoryChannel {
    async fn ready(&self, _: &Target) {
        let _turn = self.turn.lock().await;
    }
}

impl RestartSweep for MemoryChannel {
    fn resume(&self, recorded: &[MessageRef]) {
        self.state().resumed = recorded.to_vec();
    }
}

#[async_trait]
impl Refresh for MemoryChannel {
    async fn refresh(&self, _: &MessageRef, _: &Approval) -> Result<(), ChannelError> {
        Ok(())
    }
}
