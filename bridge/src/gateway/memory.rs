//! An in-memory `GatewayPort` for engine tests: first answer wins, like the real gateway (a
//! later one is `AlreadyResolved`), and an unknown id is `NotFound`. Its history holds the
//! rows a test records and answers `history_since` with the real client's rule
//! (`crate::history`). A test can make it unreachable, or stall its answers.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{GatewayError, GatewayPort};
use crate::approval::{ApprovalId, Decision, Kind};
use crate::history::{HistoryMark, HistoryRow};

#[derive(Default)]
pub struct MemoryGateway {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<ApprovalId, Option<Decision>>,
    calls: Vec<(ApprovalId, Decision)>,
    /// Terminal rows, in the order recorded.
    history: Vec<HistoryRow>,
    /// Every `history_since` call: the mark and the floor it was given.
    history_calls: Vec<(Option<HistoryMark>, i64)>,
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

    /// Adds a terminal row to the gateway's history (as the gateway records an approval
    /// that ended, decided or not).
    pub fn record_history(&self, row: HistoryRow) {
        self.state().history.push(row);
    }

    /// Every `history_since` call received, in order: (mark, floor).
    pub fn history_calls(&self) -> Vec<(Option<HistoryMark>, i64)> {
        self.state().history_calls.clone()
    }

    /// The decision recorded for `id`, if any.
    pub fn decision(&self, id: &ApprovalId) -> Option<Decision> {
        self.state().pending.get(id).copied().flatten()
    }
}

#[async_trait]
impl GatewayPort for MemoryGateway {
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

    async fn history_since(
        &self,
        mark: Option<&HistoryMark>,
        floor_ms: i64,
    ) -> Result<Vec<HistoryRow>, GatewayError> {
        let mut s = self.state();
        s.history_calls.push((mark.cloned(), floor_ms));
        if s.unavailable {
            return Err(GatewayError::Unavailable("not connected".into()));
        }
        let mut rows: Vec<HistoryRow> = s
            .history
            .iter()
            .filter(|r| r.is_after(mark) && r.resolved_at_ms >= floor_ms)
            .cloned()
            .collect();
        rows.sort_by_key(HistoryRow::mark);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(ms: i64, id: &str) -> HistoryRow {
        HistoryRow::from_gateway(&json!({
            "id": id, "status": "denied", "reason": "no-route", "decision": "deny",
            "resolvedAtMs": ms, "presentation": {"kind": "exec", "commandText": "ls"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn history_since_answers_oldest_first_after_the_mark_and_above_the_floor() {
        let gw = MemoryGateway::default();
        for (ms, id) in [(30, "c"), (10, "a"), (20, "b2"), (20, "b1"), (5, "old")] {
            gw.record_history(row(ms, id));
        }
        let ids = |rows: Vec<HistoryRow>| rows.into_iter().map(|r| r.id.0).collect::<Vec<_>>();
        assert_eq!(
            ids(gw.history_since(None, 10).await.unwrap()),
            ["a", "b1", "b2", "c"]
        );
        let mark = row(20, "b1").mark();
        assert_eq!(
            ids(gw.history_since(Some(&mark), 0).await.unwrap()),
            ["b2", "c"]
        );
        let last = row(30, "c").mark();
        assert!(gw.history_since(Some(&last), 0).await.unwrap().is_empty());
        gw.set_unavailable(true);
        assert!(matches!(
            gw.history_since(None, 0).await,
            Err(GatewayError::Unavailable(_))
        ));
        assert_eq!(gw.history_calls().len(), 4);
    }
}
