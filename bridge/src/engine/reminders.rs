//! Never miss the window: at set points of a pending approval's life its prompts get a
//! reminder as a new message (so the phone notifies), quiet hours aside, and at one point
//! the escalation targets get the prompt, told who else was asked. Neither decides.

use std::time::{Duration, Instant};

use jiff::civil::Time;
use jiff::tz::TimeZone;

use super::{Core, Effect, Timer};
use crate::approval::{Approval, ApprovalId};
use crate::bulletin::Bulletin;
use crate::channel::{MessageRef, Target};

/// A point in an approval's life: when a share of it has passed, or when this much is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// `50%`: half of the time to decide has passed.
    Share(u8),
    /// `2m`: two minutes are left.
    Left(Duration),
}

impl Point {
    /// How long after creation the point comes in a life of `life`; `None` when the life is
    /// too short for it (a "2 minutes left" in a one-minute approval).
    fn offset(self, life: Duration) -> Option<Duration> {
        match self {
            Point::Share(p) => Some(life * u32::from(p) / 100).filter(|o| *o < life),
            Point::Left(left) => life.checked_sub(left).filter(|o| !o.is_zero()),
        }
    }
}

/// Hours in which reminders are not sent: `23:00-07:00` in the configured time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Quiet {
    pub from: Time,
    pub to: Time,
    pub zone: TimeZone,
}

impl Quiet {
    /// Whether `unix_ms` falls in these hours (a range may wrap midnight).
    fn covers(&self, unix_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(unix_ms) else {
            return false;
        };
        let t = ts.to_zoned(self.zone.clone()).time();
        if self.from <= self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

/// When the owners are reminded of a pending approval, and who is asked besides them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReminderPolicy {
    pub points: Vec<Point>,
    pub quiet: Option<Quiet>,
    /// Chats that get the prompt at `escalate_at` when nobody answered by then.
    pub escalate_to: Vec<Target>,
    pub escalate_at: Option<Point>,
}

/// What a reminder timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudge {
    /// Remind every chat that shows the prompt; `left` is the time to decide then.
    Remind {
        left: Duration,
    },
    Escalate {
        waited: Duration,
        left: Duration,
    },
}

impl Core {
    /// Arms the reminders and the escalation of approval `id`, just prompted. The life is
    /// the gateway's (`expiresAtMs - createdAtMs`); how much of it has passed is read from
    /// the wall clock only when that is plausible (a bridge clock days off counts as none).
    pub(super) fn arm_nudges(&mut self, id: &ApprovalId) {
        let Some(entry) = self.approvals.get(id) else {
            return;
        };
        let a = &entry.approval;
        let Some(life_ms) = a
            .expires_at_ms
            .map(|e| e - a.created_at_ms)
            .filter(|l| *l > 0)
        else {
            return;
        };
        let life = Duration::from_millis(life_ms as u64);
        let passed_ms = self.now.unix_ms - a.created_at_ms;
        let passed = Duration::from_millis(if (0..life_ms).contains(&passed_ms) {
            passed_ms as u64
        } else {
            0
        });
        let policy = &self.reminders;
        let mut due: Vec<(Duration, Nudge)> = policy
            .points
            .iter()
            .filter_map(|p| p.offset(life))
            .map(|o| (o, Nudge::Remind { left: life - o }))
            .collect();
        if !policy.escalate_to.is_empty()
            && let Some(o) = policy.escalate_at.and_then(|p| p.offset(life))
        {
            due.push((
                o,
                Nudge::Escalate {
                    waited: o,
                    left: life - o,
                },
            ));
        }
        due.sort_by_key(|(o, _)| *o);
        // Two reminders at one moment are one message; a reminder and the escalation at
        // one moment (the defaults: "50%" and "50%") are both due.
        due.dedup_by(|b, a| {
            a.0 == b.0 && matches!((&a.1, &b.1), (Nudge::Remind { .. }, Nudge::Remind { .. }))
        });
        for (offset, nudge) in due {
            if offset <= passed {
                continue;
            }
            let at: Instant = self.now.at + (offset - passed);
            let timer = Timer::Nudge {
                id: id.clone(),
                nudge,
            };
            self.emit(Effect::Arm { at, timer });
        }
    }

    pub(super) fn on_nudge(&mut self, id: &ApprovalId, nudge: Nudge) {
        let Some(entry) = self.approvals.get(id).filter(|e| e.outcome.is_none()) else {
            return;
        };
        let approval = entry.approval.clone();
        let shown: Vec<Target> = entry
            .prompts
            .iter()
            .filter(|(_, p)| p.message().is_some())
            .map(|(t, _)| t.clone())
            .collect();
        match nudge {
            Nudge::Remind { left } => {
                self.refresh_prompts(id);
                if self
                    .reminders
                    .quiet
                    .as_ref()
                    .is_some_and(|q| q.covers(self.now.unix_ms))
                {
                    tracing::debug!(%id, "quiet hours: reminder not sent");
                    return;
                }
                for target in shown {
                    self.post(target, reminder(&approval, left));
                }
            }
            Nudge::Escalate { waited, left } => {
                let asked: Vec<String> = entry.prompts.keys().map(Target::to_string).collect();
                let fresh: Vec<Target> = self
                    .reminders
                    .escalate_to
                    .iter()
                    .filter(|t| !self.approvals.has_prompt(id, t))
                    .cloned()
                    .collect();
                for target in fresh {
                    let bulletin = Bulletin::Escalated {
                        id: approval.id.clone(),
                        command: approval.command.clone(),
                        asked: asked.clone(),
                        waited_ms: waited.as_millis() as i64,
                        left_ms: left.as_millis() as i64,
                    };
                    self.post(target.clone(), bulletin);
                    self.enqueue(id, &target);
                }
            }
        }
    }

    /// Rewrites the approval's own prompts (not digest rows) where a channel's edits are
    /// cheap, so the time left they show is current; quiet hours allow it (nobody is woken).
    fn refresh_prompts(&mut self, id: &ApprovalId) {
        let Some(entry) = self.approvals.get(id) else {
            return;
        };
        let sent: Vec<MessageRef> = entry
            .sent_prompts()
            .into_iter()
            .filter(|m| !self.lanes.is_digest(m))
            .filter(|m| {
                self.channels
                    .get(&m.target.channel)
                    .is_some_and(|c| c.refresh().is_some())
            })
            .collect();
        let approval = entry.approval.clone();
        for prompt in sent {
            let approval = approval.clone();
            self.emit(Effect::Refresh { prompt, approval });
        }
    }

    fn post(&mut self, target: Target, bulletin: Bulletin) {
        self.emit(Effect::Post {
            target,
            bulletin,
            incident: None,
        });
    }
}

fn reminder(a: &Approval, left: Duration) -> Bulletin {
    Bulletin::Reminder {
        id: a.id.clone(),
        command: a.command.clone(),
        agent: a.agent_id.clone(),
        left_ms: left.as_millis() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_fall_inside_the_life_or_not_at_all() {
        let min = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(Point::Share(50).offset(min(30)), Some(min(15)));
        assert_eq!(Point::Left(min(2)).offset(min(30)), Some(min(28)));
        assert_eq!(
            Point::Left(min(2)).offset(min(1)),
            None,
            "shorter than the point"
        );
        assert_eq!(Point::Left(min(2)).offset(min(2)), None);
        assert_eq!(Point::Share(100).offset(min(2)), None);
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_their_zone() {
        let q = Quiet {
            from: Time::constant(23, 0, 0, 0),
            to: Time::constant(7, 0, 0, 0),
            zone: TimeZone::fixed(jiff::tz::offset(2)),
        };
        let at = |h: i64, m: i64| ((h - 2) * 3600 + m * 60) * 1000 + 86_400_000;
        assert!(q.covers(at(23, 0)));
        assert!(q.covers(at(2, 30)));
        assert!(!q.covers(at(7, 0)));
        assert!(!q.covers(at(12, 0)));
        let day = Quiet {
            from: Time::constant(12, 0, 0, 0),
            to: Time::constant(13, 0, 0, 0),
            zone: TimeZone::UTC,
        };
        assert!(day.covers(12 * 3_600_000 + 5));
        assert!(!day.covers(13 * 3_600_000));
    }
}
