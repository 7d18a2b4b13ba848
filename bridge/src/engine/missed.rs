//! What was denied while nobody could see it: after every (re)connect the gateway's
//! history of ended approvals is read back to the last point recorded, and every approval
//! that ended without a human and without a prompt of ours (denied for want of a route,
//! cancelled by a gateway restart, expired unseen) is reported to the owners in one
//! bounded summary. The point reached is stored, so a restart neither repeats nor skips.

use std::collections::VecDeque;

use super::{Core, Effect, Path, Write};
use crate::approval::{CancelReason, Outcome};
use crate::bulletin::Bulletin;
use crate::gateway::GatewayError;
use crate::history::{HistoryMark, HistoryRow};
use crate::telemetry::Event;

/// How many rows `/missed` keeps (this run's newest).
const KEEP: usize = 200;

/// Where the history was read up to, and what this run reported.
#[derive(Debug, Default)]
pub(super) struct Missed {
    mark: Option<HistoryMark>,
    /// Rows older than this are from before the bridge's first start.
    floor_ms: i64,
    /// A read is under way: the next connect does not start a second one.
    reading: bool,
    /// The gateway has no `approval.history`: asked once, not again.
    unsupported: bool,
    reported: VecDeque<HistoryRow>,
}

impl Missed {
    pub(super) fn new(mark: Option<HistoryMark>, floor_ms: i64) -> Missed {
        Missed {
            mark,
            floor_ms,
            ..Missed::default()
        }
    }
}

/// One history row as the report needs it: the row and whether a prompt of ours showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRow {
    pub row: HistoryRow,
    pub prompted: bool,
}

impl Core {
    /// After a replay: read what ended at the gateway since the mark.
    pub(super) fn read_history(&mut self) {
        let m = &mut self.missed;
        if m.reading || m.unsupported {
            return;
        }
        m.reading = true;
        let (mark, floor_ms) = (m.mark.clone(), m.floor_ms);
        self.emit(Effect::ReadHistory { mark, floor_ms });
    }

    pub(super) fn on_history_read(&mut self, result: Result<Vec<SeenRow>, GatewayError>) {
        self.missed.reading = false;
        let rows = match result {
            Ok(rows) => rows,
            Err(GatewayError::Rejected { code, message }) if message.contains("unknown method") => {
                tracing::warn!(%code, %message, "this gateway keeps no approval history: approvals denied while the bridge could not see them are not reported");
                self.missed.unsupported = true;
                return;
            }
            Err(e) => {
                // Kept: the next connect reads from the same mark.
                tracing::warn!(error = %e, "could not read the gateway's approval history; trying again at the next connect");
                return;
            }
        };
        let Some(last) = rows.last().map(|r| r.row.mark()) else {
            return;
        };
        let unseen: Vec<HistoryRow> = rows
            .into_iter()
            .filter(|r| !r.prompted && ended_unseen(&r.row))
            .map(|r| r.row)
            .collect();
        for row in &unseen {
            self.event(Event::Missed { row: row.clone() });
        }
        if !unseen.is_empty() {
            tracing::warn!(
                count = unseen.len(),
                "approvals ended at the gateway without reaching anyone"
            );
            for target in self.healthy_targets(&Path::Gateway) {
                self.emit(Effect::Post {
                    target,
                    bulletin: Bulletin::Missed {
                        rows: unseen.clone(),
                    },
                    incident: None,
                });
            }
            let kept = &mut self.missed.reported;
            kept.extend(unseen);
            while kept.len() > KEEP {
                kept.pop_front();
            }
        }
        self.missed.mark = Some(last.clone());
        self.emit(Effect::Store(Write::HistoryMark(last)));
    }

    /// What `/missed` lists: this run's reported rows, newest first.
    pub(super) fn missed_list(&self) -> Vec<HistoryRow> {
        self.missed.reported.iter().rev().cloned().collect()
    }
}

/// Ended without a human's answer, in a way that denied the command: no route, expired,
/// cancelled by a restart, a corrupt record, or a way this version does not know. A run
/// that ended or a session that closed took its command with it: not reported.
fn ended_unseen(row: &HistoryRow) -> bool {
    !row.human_decided()
        && !matches!(
            row.outcome(),
            Outcome::Cancelled {
                reason: CancelReason::RunAborted | CancelReason::SessionEvicted,
                ..
            }
        )
}
