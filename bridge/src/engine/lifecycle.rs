//! The approvals the engine holds: each one's request, its outcome once known, and the
//! state of its prompt in every target. An approval leaves memory once it is settled
//! (ended, every prompt showing the outcome) and nothing else waits on it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::approval::{Approval, ApprovalId, Kind, Outcome};
use crate::channel::{MessageRef, Target};

/// One approval's prompt in one target.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PromptState {
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
    /// The message, once there is one.
    pub(super) fn message(&self) -> Option<&MessageRef> {
        match self {
            PromptState::Sent(m)
            | PromptState::Finishing { prompt: m, .. }
            | PromptState::Finished(m) => Some(m),
            PromptState::Queued | PromptState::Delivering | PromptState::Failed => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub approval: Approval,
    pub outcome: Option<Outcome>,
    pub prompts: BTreeMap<Target, PromptState>,
    /// When the engine first saw it (this run).
    pub seen: Instant,
}

impl Entry {
    pub(super) fn new(approval: Approval, seen: Instant) -> Entry {
        Entry {
            approval,
            outcome: None,
            prompts: BTreeMap::new(),
            seen,
        }
    }

    /// Its prompts that are out and not being finished.
    pub(super) fn sent_prompts(&self) -> Vec<MessageRef> {
        self.prompts
            .values()
            .filter_map(|p| match p {
                PromptState::Sent(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub(super) struct Approvals {
    entries: HashMap<ApprovalId, Entry>,
}

impl Approvals {
    pub(super) fn from_entries(entries: HashMap<ApprovalId, Entry>) -> Approvals {
        Approvals { entries }
    }

    pub(super) fn contains(&self, id: &ApprovalId) -> bool {
        self.entries.contains_key(id)
    }

    pub(super) fn get(&self, id: &ApprovalId) -> Option<&Entry> {
        self.entries.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ApprovalId) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Starts holding a newly requested approval.
    pub(super) fn insert(&mut self, approval: Approval, seen: Instant) {
        self.entries
            .insert(approval.id.clone(), Entry::new(approval, seen));
    }

    pub(super) fn remove(&mut self, id: &ApprovalId) {
        self.entries.remove(id);
    }

    pub(super) fn outcome(&self, id: &ApprovalId) -> Option<&Outcome> {
        self.entries.get(id).and_then(|e| e.outcome.as_ref())
    }

    /// Sets the outcome of a held approval that has none yet; returns its kind then.
    pub(super) fn set_outcome(&mut self, id: &ApprovalId, outcome: &Outcome) -> Option<Kind> {
        let entry = self.entries.get_mut(id).filter(|e| e.outcome.is_none())?;
        entry.outcome = Some(outcome.clone());
        Some(entry.approval.kind)
    }

    pub(super) fn prompt(&self, id: &ApprovalId, target: &Target) -> Option<&PromptState> {
        self.entries.get(id).and_then(|e| e.prompts.get(target))
    }

    pub(super) fn has_prompt(&self, id: &ApprovalId, target: &Target) -> bool {
        self.prompt(id, target).is_some()
    }

    /// Sets `id`'s prompt state in `target` (nothing when `id` is not held).
    pub(super) fn set_prompt(&mut self, id: &ApprovalId, target: &Target, state: PromptState) {
        if let Some(e) = self.entries.get_mut(id) {
            e.prompts.insert(target.clone(), state);
        }
    }

    /// Messages that show `id` (sent, being finished, or finished).
    pub(super) fn prompt_messages(&self, id: &ApprovalId) -> Vec<MessageRef> {
        self.entries
            .get(id)
            .map(|e| {
                e.prompts
                    .values()
                    .filter_map(PromptState::message)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ended, and every prompt shows the outcome or could never be sent.
    pub(super) fn settled(&self, id: &ApprovalId) -> bool {
        self.entries.get(id).is_some_and(|e| {
            e.outcome.is_some()
                && e.prompts
                    .values()
                    .all(|p| matches!(p, PromptState::Finished(_) | PromptState::Failed))
        })
    }

    pub(super) fn pending_ids(&self) -> impl Iterator<Item = &ApprovalId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.outcome.is_none())
            .map(|(id, _)| id)
    }

    pub(super) fn pending_count(&self) -> usize {
        self.pending_ids().count()
    }

    /// The pending approvals, oldest first (`/pending`).
    pub(super) fn pending_list(&self) -> Vec<Approval> {
        let mut list: Vec<Approval> = self
            .entries
            .values()
            .filter(|e| e.outcome.is_none())
            .map(|e| e.approval.clone())
            .collect();
        list.sort_by_key(|a| a.created_at_ms);
        list
    }

    /// Approvals that ended but are still held (their prompts are not all finished).
    pub(super) fn ended(&self) -> Vec<ApprovalId> {
        let mut ids: Vec<ApprovalId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.outcome.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}
