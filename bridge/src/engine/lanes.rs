//! Prompts on their way out and back: one delivery queue per target with one delivery in
//! flight, approvals that queue up meanwhile sent as one digest where the channel offers
//! them, and the edits that make every prompt (or digest row) show its outcome, retried
//! on a backoff after transient faults.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::lifecycle::PromptState;
use super::{Core, Effect, MAX_FINISH_ATTEMPTS, Timer, Write};
use crate::approval::ApprovalId;
use crate::channel::{ChannelError, DigestRow, MessageRef, Target};
use crate::telemetry::Event;

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
#[derive(Debug, Default)]
struct Digest {
    members: Vec<ApprovalId>,
    /// A rewrite is in flight (or waits out a transient fault).
    updating: bool,
    failures: u32,
}

#[derive(Debug, Default)]
pub(super) struct Lanes {
    lanes: HashMap<Target, Lane>,
    digests: HashMap<MessageRef, Digest>,
}

impl Lanes {
    /// A digest row recorded before a restart.
    pub(super) fn restore_digest_row(&mut self, message: &MessageRef, id: &ApprovalId) {
        let digest = self.digests.entry(message.clone()).or_default();
        digest.members.push(id.clone());
    }

    /// The lane's pause after a transient fault is over.
    pub(super) fn unpause(&mut self, target: &Target) {
        if let Some(lane) = self.lanes.get_mut(target) {
            lane.busy = false;
        }
    }

    /// The digest's pause after a transient fault is over.
    pub(super) fn digest_retry_due(&mut self, prompt: &MessageRef) {
        if let Some(d) = self.digests.get_mut(prompt) {
            d.updating = false;
        }
    }

    /// Those of `messages` that are digests.
    pub(super) fn digests_of(&self, messages: Vec<MessageRef>) -> Vec<MessageRef> {
        messages
            .into_iter()
            .filter(|m| self.digests.contains_key(m))
            .collect()
    }

    pub(super) fn is_digest(&self, message: &MessageRef) -> bool {
        self.digests.contains_key(message)
    }

    pub(super) fn members(&self, digest: &MessageRef) -> &[ApprovalId] {
        self.digests
            .get(digest)
            .map(|d| d.members.as_slice())
            .unwrap_or_default()
    }

    /// Forgets a digest; returns its rows.
    pub(super) fn remove_digest(&mut self, digest: &MessageRef) -> Vec<ApprovalId> {
        self.digests
            .remove(digest)
            .map(|d| d.members)
            .unwrap_or_default()
    }
}

impl Core {
    /// How many approvals one message to `target` can carry (1: no digests); `None` when
    /// no channel serves it.
    fn digest_capacity(&self, target: &Target) -> Option<usize> {
        let channel = self.channels.get(&target.channel)?;
        Some(channel.digests().map_or(1, |d| d.capacity()))
    }

    /// Puts `id` in `target`'s delivery queue.
    pub(super) fn enqueue(&mut self, id: &ApprovalId, target: &Target) {
        let Some(entry) = self.approvals.get_mut(id) else {
            return;
        };
        if entry.outcome.is_some() || entry.prompts.contains_key(target) {
            return;
        }
        entry.prompts.insert(target.clone(), PromptState::Queued);
        let lane = self.lanes.lanes.entry(target.clone()).or_default();
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
    pub(super) fn pump(&mut self, target: &Target, fresh: bool) {
        if self.draining {
            return;
        }
        let Some(capacity) = self.digest_capacity(target) else {
            tracing::error!(%target, "no channel for target");
            return;
        };
        let Some(lane) = self.lanes.lanes.get_mut(target) else {
            return;
        };
        if lane.busy || lane.queue.is_empty() {
            return;
        }
        if capacity <= 1 {
            return self.send_next(target, fresh, Duration::ZERO);
        }
        lane.busy = true;
        self.emit(Effect::AwaitTurn {
            target: target.clone(),
            fresh,
        });
    }

    /// Takes the next prompt or digest off `target`'s queue and delivers it.
    pub(super) fn send_next(&mut self, target: &Target, fresh: bool, waited: Duration) {
        let Some(capacity) = self.digest_capacity(target) else {
            return;
        };
        let Some(lane) = self.lanes.lanes.get_mut(target) else {
            return;
        };
        lane.busy = false;
        if self.draining {
            return;
        }
        let mut approvals = Vec::new();
        while approvals.len() < capacity.max(1)
            && let Some(id) = lane.queue.pop_front()
        {
            // Skips approvals that ended while queued.
            if let Some(entry) = self.approvals.get_mut(&id)
                && entry.outcome.is_none()
                && entry.prompts.get(target) == Some(&PromptState::Queued)
            {
                entry
                    .prompts
                    .insert(target.clone(), PromptState::Delivering);
                approvals.push(entry.approval.clone());
            }
        }
        if approvals.is_empty() {
            return;
        }
        lane.busy = true;
        let seen = match approvals.as_slice() {
            [one] if fresh => self.approvals.get(&one.id).map(|e| e.seen),
            _ => None,
        };
        self.inflight += 1;
        self.emit(Effect::Deliver {
            target: target.clone(),
            approvals,
            seen,
            waited,
        });
    }

    pub(super) fn on_delivered(
        &mut self,
        target: Target,
        ids: Vec<ApprovalId>,
        result: Result<(MessageRef, usize), ChannelError>,
    ) {
        self.on_target_result(&target, result.as_ref().err());
        let lane = self.lanes.lanes.entry(target.clone()).or_default();
        match result {
            Ok((prompt, carried)) => {
                lane.busy = false;
                lane.failures = 0;
                let carried = carried.clamp(1, ids.len().max(1));
                // What the message does not carry goes back to the front of the queue.
                self.requeue(&target, ids.get(carried..).unwrap_or_default());
                let carried = ids.get(..carried).unwrap_or_default();
                if carried.len() > 1 {
                    let digest = Digest {
                        members: carried.to_vec(),
                        ..Digest::default()
                    };
                    self.lanes.digests.insert(prompt.clone(), digest);
                }
                for id in carried {
                    self.on_prompt_sent(id, &prompt);
                }
                self.probe_delivered(&target, carried, None);
            }
            Err(err) => {
                let will_retry = err.is_transient();
                if will_retry {
                    let failures = lane.failures;
                    lane.failures += 1;
                    let delay = self.backoff(failures, &err);
                    self.later(delay, Timer::Lane(target.clone()));
                } else {
                    lane.busy = false;
                }
                for id in &ids {
                    let Some(entry) = self.approvals.get(id) else {
                        continue;
                    };
                    let will_retry = will_retry && entry.outcome.is_none();
                    self.event(Event::DeliveryFailed {
                        id: id.clone(),
                        target: target.clone(),
                        error: err.to_string(),
                        will_retry,
                    });
                    if !err.is_transient() {
                        self.approvals.set_prompt(id, &target, PromptState::Failed);
                        self.release_held(id, &target);
                        self.forget_if_done(id);
                    }
                }
                if will_retry {
                    self.requeue(&target, &ids);
                }
                self.probe_delivered(&target, &ids, Some(&err));
            }
        }
        self.pump(&target, false);
    }

    /// Puts `ids` back at the front of `target`'s queue, in order; those that ended in
    /// the meantime will never be sent.
    fn requeue(&mut self, target: &Target, ids: &[ApprovalId]) {
        let lane = self.lanes.lanes.entry(target.clone()).or_default();
        for id in ids.iter().rev() {
            let Some(entry) = self.approvals.get_mut(id) else {
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
        let Some(entry) = self.approvals.get_mut(id) else {
            return;
        };
        let after = self.now.at.saturating_duration_since(entry.seen);
        let ended = entry.outcome.is_some();
        entry
            .prompts
            .insert(prompt.target.clone(), PromptState::Sent(prompt.clone()));
        self.emit(Effect::Store(Write::Prompt {
            id: id.clone(),
            prompt: prompt.clone(),
            at_ms: self.now.unix_ms,
        }));
        self.event(Event::Delivered {
            id: id.clone(),
            target: prompt.target.clone(),
            message: prompt.message.clone(),
            after,
        });
        if ended {
            self.finish_one(id, prompt);
        }
        self.release_held(id, &prompt.target);
    }

    /// Makes every prompt of the ended approval `id` show its outcome; drops those never sent.
    pub(super) fn finish_all(&mut self, id: &ApprovalId) {
        let Some(entry) = self.approvals.get_mut(id) else {
            return;
        };
        // Never sent, and now never will be.
        entry
            .prompts
            .retain(|_, p| !matches!(p, PromptState::Queued));
        let sent = entry.sent_prompts();
        for prompt in sent {
            self.finish_one(id, &prompt);
        }
        self.forget_if_done(id);
    }

    pub(super) fn finish_one(&mut self, id: &ApprovalId, prompt: &MessageRef) {
        if self.lanes.digests.contains_key(prompt) {
            return self.update_digest(prompt);
        }
        let Some(entry) = self.approvals.get_mut(id) else {
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
        let target = prompt.target.clone();
        if !self.channels.contains_key(&target.channel) {
            // The channel was removed from the config: nothing can edit this prompt.
            entry
                .prompts
                .insert(target, PromptState::Finished(prompt.clone()));
            return;
        }
        let finishing = PromptState::Finishing {
            prompt: prompt.clone(),
            attempt,
        };
        entry.prompts.insert(target, finishing);
        let approval = entry.approval.clone();
        self.inflight += 1;
        self.emit(Effect::Finish {
            prompt: prompt.clone(),
            approval,
            outcome,
        });
    }

    pub(super) fn on_finished(
        &mut self,
        id: ApprovalId,
        prompt: MessageRef,
        result: Result<(), ChannelError>,
    ) {
        let attempt = match self.approvals.prompt(&id, &prompt.target) {
            Some(PromptState::Finishing { attempt, .. }) => *attempt,
            _ => 0,
        };
        if let Err(e) = &result
            && e.is_transient()
            && attempt + 1 < MAX_FINISH_ATTEMPTS
        {
            tracing::warn!(%id, target = %prompt.target, error = %e, "could not edit prompt; retrying");
            let delay = self.backoff(attempt, e);
            return self.later(delay, Timer::Finish { id, prompt });
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
        if !self.approvals.contains(id) {
            return;
        }
        let note = match result {
            Ok(()) => "edited",
            Err(ChannelError::MessageGone(_)) => "message gone",
            Err(e) => {
                tracing::error!(%id, target = %prompt.target, error = %e, "could not edit prompt; giving up");
                "edit failed"
            }
        };
        self.emit(Effect::Store(Write::PromptFinished {
            id: id.clone(),
            prompt: prompt.clone(),
            at_ms: self.now.unix_ms,
        }));
        self.event(Event::Finished {
            id: id.clone(),
            target: prompt.target.clone(),
            note,
        });
        let finished = PromptState::Finished(prompt.clone());
        self.approvals.set_prompt(id, &prompt.target, finished);
    }

    /// Rewrites a digest to show the rows that ended since its last rewrite; one rewrite
    /// per digest at a time, so a burst of outcomes costs one or two edits.
    pub(super) fn update_digest(&mut self, prompt: &MessageRef) {
        let Some(digest) = self.lanes.digests.get_mut(prompt) else {
            return;
        };
        if digest.updating {
            return; // the rewrite in flight reports back, then this runs again
        }
        let target = &prompt.target;
        let ended: Vec<ApprovalId> = digest
            .members
            .iter()
            .filter(|id| {
                self.approvals.outcome(id).is_some()
                    && matches!(
                        self.approvals.prompt(id, target),
                        Some(PromptState::Sent(_))
                    )
            })
            .cloned()
            .collect();
        if ended.is_empty() {
            return;
        }
        if !self.channels.contains_key(&target.channel) {
            for id in &ended {
                let finished = PromptState::Finished(prompt.clone());
                self.approvals.set_prompt(id, target, finished);
            }
            return;
        }
        let rows: Vec<DigestRow> = digest
            .members
            .iter()
            .filter_map(|id| self.approvals.get(id))
            .map(|e| DigestRow {
                approval: e.approval.clone(),
                outcome: e.outcome.clone(),
            })
            .collect();
        for id in &ended {
            let finishing = PromptState::Finishing {
                prompt: prompt.clone(),
                attempt: digest.failures,
            };
            self.approvals.set_prompt(id, target, finishing);
        }
        digest.updating = true;
        self.inflight += 1;
        self.emit(Effect::UpdateDigest {
            prompt: prompt.clone(),
            rows,
            ended,
        });
    }

    pub(super) fn on_digest_updated(
        &mut self,
        prompt: MessageRef,
        ended: Vec<ApprovalId>,
        result: Result<(), ChannelError>,
    ) {
        let Some(digest) = self.lanes.digests.get_mut(&prompt) else {
            return;
        };
        if let Err(e) = &result
            && e.is_transient()
            && digest.failures + 1 < MAX_FINISH_ATTEMPTS
        {
            tracing::warn!(target = %prompt.target, message = %prompt.message, error = %e, "could not rewrite digest; retrying");
            let failures = digest.failures;
            digest.failures += 1;
            for id in &ended {
                let sent = PromptState::Sent(prompt.clone());
                self.approvals.set_prompt(id, &prompt.target, sent);
            }
            let delay = self.backoff(failures, e);
            return self.later(delay, Timer::Digest(prompt));
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
}
