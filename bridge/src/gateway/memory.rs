//! An in-memory `Resolver` for engine tests: first answer wins, like the real gateway (a
//! later one is `AlreadyResolved`), and an unknown id is `NotFound`. A test can make it unreachable.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{GatewayError, Resolver};
use crate::approval::{ApprovalId, Decision, Kind};

#[derive(Default)]
pub struct MemoryGateway {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<ApprovalId, Option<Decision>>,
    calls: Vec<(ApprovalId, Decision)>,
    unavailable: bool,
}

impl MemoryGateway {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a pending approval.
    pub fn add(&self, id: &ApprovalId) {
        self.state().pending.insert(id.clone(), None);
    }

    /// Forgets every approval, as a restarted gateway does.
    pub fn forget_all(&self) {
        self.state().pending.clear();
    }

    pub fn set_unavailable(&self, down: bool) {
        self.state().unavailable = down;
    }

    /// Every resolve call received, in order.
    pub fn calls(&self) -> Vec<(ApprovalId, Decision)> {
        self.state().calls.clone()
    }

    /// The decision recorded for `id`, if any.
    pub fn decision(&self, id: &ApprovalId) -> Option<Decision> {
        self.state().pending.get(id).copied().flatten()
    }
}

#[async_trait]
impl Resolver for MemoryGateway {
    async fn resolve(
        &self,
        id: &ApprovalId,
        _kind: Kind,
        decision: Decision,
    ) -> Result<(), GatewayError> {
        let mut s = self.state();
        s.calls.push((id.clone(), decision));
        if s.unavailable {
            return Err(GatewayError::Unavailable("not connected".into()));
        }
        match s.pending.get_mut(id) {
            Some(slot @ None) => {
                *slot = Some(decision);
                Ok(())
            }
            Some(Some(_)) => Err(GatewayError::AlreadyResolved),
            None => Err(GatewayError::NotFound),
        }
    }
}
