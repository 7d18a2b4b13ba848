//! The two ends of a run: at start, the approvals and digests rebuilt from what the store
//! still had open; at the end of a shutdown's drain, an audit record for every answer the
//! drain cut off, saying what became of it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::Core;
use super::lanes::Lanes;
use super::lifecycle::{Approvals, Entry, PromptState};
use crate::store::OpenApproval;
use crate::telemetry::Event;

/// The engine's state as the store left it: every open approval with its prompts (sent,
/// or already showing the outcome), and the digests they share.
pub(super) fn restore(open: Vec<OpenApproval>, now: Instant) -> (Approvals, Lanes) {
    let mut entries = HashMap::new();
    let mut lanes = Lanes::default();
    for o in open {
        let id = o.approval.id.clone();
        let mut prompts = BTreeMap::new();
        for p in o.prompts {
            if p.digest {
                lanes.restore_digest_row(&p.message, &id);
            }
            let state = if p.finished {
                PromptState::Finished(p.message.clone())
            } else {
                PromptState::Sent(p.message.clone())
            };
            prompts.insert(p.message.target, state);
        }
        let mut entry = Entry::new(o.approval, now);
        entry.outcome = o.outcome;
        entry.prompts = prompts;
        entries.insert(id, entry);
    }
    (Approvals::from_entries(entries), lanes)
}

impl Core {
    /// Every recorded answer ends its audit trail with what became of it. One the drain
    /// cut off says so: a resolve the gateway has not answered may or may not have been
    /// applied (the gateway's record, replayed at the next start, decides); an answer still
    /// waiting (for its prompt's delivery, or for an earlier answer's resolve) was not sent.
    pub(super) fn audit_cut_off(&mut self) {
        let cut = self.resolving.cut_off();
        for (id, responder, decision) in cut.sent {
            // A resolve that succeeded set the outcome.
            if self.approvals.outcome(&id).is_some() {
                continue;
            }
            self.event(Event::ResolveFailed {
                id,
                responder,
                error: format!(
                    "bridge stopped before the gateway answered ({decision}); it may or may not have been applied"
                ),
            });
        }
        for (id, responder) in cut.unsent {
            self.event(Event::ResolveFailed {
                id,
                responder,
                error: "bridge stopped before sending it to the gateway; nothing was decided"
                    .into(),
            });
        }
        tracing::info!(inflight = self.inflight, "engine stopped");
    }
}
