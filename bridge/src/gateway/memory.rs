//! An in-memory `Resolver` for engine tests: first answer wins, like the real gateway (a
//! later one is `AlreadyResolved`), and an unknown id is `NotFound`. A test can make it
//! unreachable, or stall its answers.

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
    /// Resolves get no answer while set (a gateway that stopped responding).
    stalled: bool,
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

    /// While `stalled`, a resolve waits for an answer that does not come.
    pub fn set_stalled(&self, stalled: bool) {
        self.state().stalled = stalled;
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
        self.state().calls.push((id.clone(), decision));
        while self.state().stalled {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut s = self.state();
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

    /// Adds a pending approval `probe-<n>`; the test feeds its `requested` event.
    async fn raise_probe(&self, _: &str, _: u64) -> Result<ApprovalId, GatewayError> {
        let mut s = self.state();
        if s.unavailable {
            return Err(GatewayError::Unavailable("not connected".into()));
        }
        let id = ApprovalId(format!("probe-{}", s.pending.len()));
        s.pending.insert(id.clone(), None);
        Ok(id)
    }
}
