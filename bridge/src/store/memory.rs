//! An in-memory [`Store`] for tests of the engine's runner: the same behaviour as the
//! SQLite store (the shared suite checks it), nothing on disk. `set_full` makes every
//! write fail as a full disk does; `started_at` fixes its first start for deterministic
//! tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{AuditRecord, OpenApproval, Store, StoreError, StoredPrompt};
use crate::approval::{Approval, ApprovalId, Outcome, now_ms};
use crate::channel::{MessageRef, Target};
use crate::grant::{Grant, GrantId, Revocation};
use crate::history::HistoryMark;

pub struct MemoryStore {
    state: Mutex<State>,
    first_start_ms: i64,
}

/// A fresh store, first started now.
impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::started_at(now_ms())
    }
}

#[derive(Default)]
struct State {
    approvals: BTreeMap<ApprovalId, Row>,
    /// Every prompt in the order it was recorded.
    prompts: Vec<PromptRow>,
    audit: Vec<AuditRecord>,
    history_mark: Option<HistoryMark>,
    /// In the order they were made.
    grants: Vec<Grant>,
    full: bool,
    fault: Option<String>,
}

struct Row {
    approval: Approval,
    outcome: Option<Outcome>,
}

struct PromptRow {
    id: ApprovalId,
    message: MessageRef,
    finished: bool,
}

impl MemoryStore {
    /// A fresh store whose first start was at `first_start_ms`.
    pub fn started_at(first_start_ms: i64) -> MemoryStore {
        MemoryStore {
            state: Mutex::default(),
            first_start_ms,
        }
    }

    /// While `full`, every write fails and changes nothing.
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Runs `change` unless the store is full; remembers the result for [`Store::fault`].
    fn write<T>(&mut self, change: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        if self.full {
            self.fault = Some(StoreError::Full.to_string());
            return Err(StoreError::Full);
        }
        self.fault = None;
        Ok(change(self))
    }
}

impl Store for MemoryStore {
    fn insert_approval(&self, a: &Approval, audit: &AuditRecord) -> Result<bool, StoreError> {
        self.state().write(|s| {
            if s.approvals.contains_key(&a.id) {
                return false;
            }
            let row = Row {
                approval: a.clone(),
                outcome: None,
            };
            s.approvals.insert(a.id.clone(), row);
            s.audit.push(audit.clone());
            true
        })
    }

    fn set_outcome(
        &self,
        id: &ApprovalId,
        outcome: &Outcome,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.state().write(|s| {
            let Some(row) = s.approvals.get_mut(id).filter(|r| r.outcome.is_none()) else {
                return false;
            };
            row.outcome = Some(outcome.clone());
            s.audit.push(audit.clone());
            true
        })
    }

    fn insert_prompt(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        _at_ms: i64,
    ) -> Result<(), StoreError> {
        self.state().write(|s| {
            let known = s
                .prompts
                .iter()
                .any(|p| p.id == *id && p.message.target == prompt.target);
            if !known {
                s.prompts.push(PromptRow {
                    id: id.clone(),
                    message: prompt.clone(),
                    finished: false,
                });
            }
        })
    }

    fn prompt_finished(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        _at_ms: i64,
    ) -> Result<(), StoreError> {
        self.state().write(|s| {
            for p in s.prompts.iter_mut() {
                if p.id == *id && p.message == *prompt {
                    p.finished = true;
                }
            }
        })
    }

    fn open_approvals(&self) -> Result<Vec<OpenApproval>, StoreError> {
        let s = self.state();
        let mut open: Vec<OpenApproval> = s
            .approvals
            .iter()
            .map(|(id, row)| {
                let mut prompts: Vec<StoredPrompt> = s
                    .prompts
                    .iter()
                    .filter(|p| p.id == *id)
                    .map(|p| StoredPrompt {
                        message: p.message.clone(),
                        finished: p.finished,
                        digest: s.prompts.iter().filter(|q| q.message == p.message).count() > 1,
                    })
                    .collect();
                prompts.sort_by(|a, b| a.message.target.cmp(&b.message.target));
                OpenApproval {
                    approval: row.approval.clone(),
                    outcome: row.outcome.clone(),
                    prompts,
                }
            })
            .filter(|o| o.outcome.is_none() || o.prompts.iter().any(|p| !p.finished))
            .collect();
        open.sort_by(|a, b| {
            (a.approval.created_at_ms, &a.approval.id)
                .cmp(&(b.approval.created_at_ms, &b.approval.id))
        });
        Ok(open)
    }

    fn recent_prompts(&self, per_target: usize) -> Result<Vec<MessageRef>, StoreError> {
        let s = self.state();
        let mut by_target: BTreeMap<&Target, Vec<&MessageRef>> = BTreeMap::new();
        for p in s.prompts.iter().rev() {
            let recent = by_target.entry(&p.message.target).or_default();
            if !recent.contains(&&p.message) && recent.len() < per_target {
                recent.push(&p.message);
            }
        }
        Ok(by_target.into_values().flatten().cloned().collect())
    }

    fn outcome(&self, id: &ApprovalId) -> Result<Option<Outcome>, StoreError> {
        Ok(self
            .state()
            .approvals
            .get(id)
            .and_then(|r| r.outcome.clone()))
    }

    fn audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        self.state().write(|s| s.audit.push(r.clone()))
    }

    fn audit_log(&self, approval: Option<&ApprovalId>) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self
            .state()
            .audit
            .iter()
            .filter(|r| approval.is_none_or(|a| r.approval_id.as_deref() == Some(a.as_str())))
            .cloned()
            .collect())
    }

    fn fault(&self) -> Option<String> {
        self.state().fault.clone()
    }

    fn history_mark(&self) -> Result<Option<HistoryMark>, StoreError> {
        Ok(self.state().history_mark.clone())
    }

    fn set_history_mark(&self, mark: &HistoryMark) -> Result<(), StoreError> {
        self.state().write(|s| {
            if s.history_mark.as_ref().is_none_or(|m| mark > m) {
                s.history_mark = Some(mark.clone());
            }
        })
    }

    fn first_start_ms(&self) -> i64 {
        self.first_start_ms
    }

    fn was_prompted(&self, id: &ApprovalId) -> Result<bool, StoreError> {
        Ok(self.state().prompts.iter().any(|p| p.id == *id))
    }

    fn insert_grant(&self, g: &Grant, audit: &AuditRecord) -> Result<bool, StoreError> {
        self.state().write(|s| {
            if s.grants.iter().any(|x| x.id == g.id) {
                return false;
            }
            s.grants.push(g.as_minted());
            s.audit.push(audit.clone());
            true
        })
    }

    fn grant_used(&self, id: &GrantId, audit: &AuditRecord) -> Result<bool, StoreError> {
        self.state().write(|s| {
            let Some(g) = s
                .grants
                .iter_mut()
                .find(|g| g.id == *id && g.revoked.is_none())
            else {
                return false;
            };
            g.uses += 1;
            s.audit.push(audit.clone());
            true
        })
    }

    fn revoke_grant(
        &self,
        id: &GrantId,
        revocation: &Revocation,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.state().write(|s| {
            let Some(g) = s
                .grants
                .iter_mut()
                .find(|g| g.id == *id && g.revoked.is_none())
            else {
                return false;
            };
            g.revoked = Some(revocation.clone());
            s.audit.push(audit.clone());
            true
        })
    }

    fn open_grants(&self, after_ms: i64) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .state()
            .grants
            .iter()
            .filter(|g| g.revoked.is_none() && g.until_ms > after_ms)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::store_conformance!(
        MemoryStore::default(),
        |s: &MemoryStore| s.set_full(true),
        |s: &MemoryStore| s.set_full(false)
    );
}
