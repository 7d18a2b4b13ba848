//! Path alerts: when the gateway link or a channel has been broken for longer than
//! `after`, every chat that still works is told once what is wrong and the fix; when it
//! works again, the alert is marked over and a "back" line follows. An incident is one
//! unbroken stretch of one problem kind; alerts never decide anything.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::{Core, Effect, Hop, ReminderPolicy, Timer};
use crate::bulletin::{Bulletin, Problem};
use crate::channel::{ChannelError, MessageRef, Reach, Target};
use crate::telemetry::Event;

/// When the owners hear of a broken path.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    /// How long a problem lasts before it is posted; `None`: never posted (the log and
    /// `/healthz` still tell).
    pub after: Option<Duration>,
    /// This bridge's device id, for the fixes that name it.
    pub device_id: String,
    /// Reminders before a pending approval expires, and escalation.
    pub reminders: ReminderPolicy,
    /// How often a delivery-only probe runs by itself (`[alerts] probe_every`); the first
    /// once the gateway link is first ready.
    pub probe_every: Option<Duration>,
}

impl Default for AlertPolicy {
    fn default() -> AlertPolicy {
        AlertPolicy {
            after: Some(Duration::from_secs(60)),
            device_id: String::new(),
            reminders: ReminderPolicy::default(),
            probe_every: None,
        }
    }
}

/// Where an incident is: which path is broken. The gateway link has one slot whose
/// problem may change kind (down, then waiting for pairing); each channel, and each
/// target a channel refused, has its own; so has the scheduled probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    Gateway,
    Channel(String),
    Target(Target),
    Probe,
}

#[derive(Debug)]
struct Incident {
    problem: Problem,
    /// Tells this incident's timer from a later one's on the same path.
    epoch: u64,
    since: Instant,
    since_ms: i64,
    /// Alerts posted for it: where, the message where the post reported one, and the
    /// problem it told of.
    posted: Vec<(Target, Option<MessageRef>, Problem)>,
    /// The problem kinds already posted in this incident.
    kinds_posted: Vec<String>,
}

/// The incidents open now and the rate bound's memory.
#[derive(Debug, Default)]
pub(super) struct Alerts {
    pub(super) policy: AlertPolicy,
    open: BTreeMap<Path, Incident>,
    /// When each (problem kind, target) was last alerted.
    last_alert: HashMap<(String, Target), Instant>,
    next_epoch: u64,
    /// Counts changes to `open`, so readers of [`Core::open_problems`] know when to look.
    changes: u64,
}

impl Alerts {
    pub(super) fn new(policy: AlertPolicy) -> Alerts {
        Alerts {
            policy,
            ..Alerts::default()
        }
    }
}

impl Core {
    /// The gateway link's problem as the link status now says, if any. `None` while
    /// connected and replayed with every scope; unchanged while a connect is replaying.
    fn link_problem(&self) -> Option<Option<Problem>> {
        let l = &self.link;
        if let Some(id) = &l.pairing_request {
            return Some(Some(Problem::Pairing {
                request_id: (!id.is_empty()).then(|| id.clone()),
            }));
        }
        if !l.connected {
            let reason = l
                .last_error
                .clone()
                .unwrap_or_else(|| "not connected yet".to_owned());
            return Some(Some(if reason.starts_with("gateway refused") {
                Problem::GatewayRefused { reason }
            } else {
                Problem::GatewayDown { reason }
            }));
        }
        if !l.missing_scopes.is_empty() {
            return Some(Some(Problem::GatewayBlind {
                missing: l.missing_scopes.clone(),
                device_id: self.alerts.policy.device_id.clone(),
            }));
        }
        // Connected, replay under way: the last word stands until it succeeds or fails.
        l.replayed.then_some(None)
    }

    /// Grows whenever an incident opens, changes or ends.
    pub fn problems_changed(&self) -> u64 {
        self.alerts.changes
    }

    /// What is broken now besides the gateway link (whose [`LinkStatus`](super::LinkStatus)
    /// tells itself): each open channel, chat and probe incident with its fix, for `/healthz`.
    pub fn open_problems(&self) -> Vec<String> {
        self.alerts
            .open
            .iter()
            .filter(|(path, _)| **path != Path::Gateway)
            .map(|(_, i)| format!("{} (fix: {})", i.problem.what(), i.problem.fix()))
            .collect()
    }

    /// After every gateway event: opens, changes or closes the gateway link's incident.
    pub(super) fn check_link(&mut self) {
        if let Some(problem) = self.link_problem() {
            self.set_problem(Path::Gateway, problem);
        }
    }

    /// A channel reported whether it reaches its chats.
    pub(super) fn on_channel_reach(&mut self, channel: String, reach: Reach) {
        let problem = match reach {
            Reach::Up => None,
            Reach::Down { reason, fix } => Some(Problem::ChannelDown {
                channel: channel.clone(),
                reason,
                fix,
            }),
        };
        self.set_problem(Path::Channel(channel), problem);
    }

    /// The scheduled probe ended. A failure is an incident of its own only while no other
    /// is open (a gateway or channel alert already tells what broke); a pass ends it.
    pub(super) fn on_scheduled_probe(&mut self, broken: Option<&Hop>) {
        let problem = broken.map(|h| Problem::ProbeFailed {
            hop: h.name.clone(),
            detail: h.detail.clone(),
        });
        let others = self.alerts.open.keys().any(|p| *p != Path::Probe);
        if problem.is_some() && others {
            return;
        }
        self.set_problem(Path::Probe, problem);
    }

    /// A delivery to `target` came back: a refusal that retrying cannot fix (the owner
    /// blocked the bot, the chat is gone) opens its incident, a sent prompt closes it.
    pub(super) fn on_target_result(&mut self, target: &Target, err: Option<&ChannelError>) {
        let problem = match err {
            None => None,
            Some(ChannelError::Permanent(reason)) => Some(Problem::ChannelDown {
                channel: target.channel.clone(),
                reason: format!("chat {}: {reason}", target.chat),
                fix: format!(
                    "open a direct chat with the bot from {} again (unblock it, press Start) and check \
                     that the bot may write there",
                    target.chat
                ),
            }),
            // Transient faults are retried; a gone message is not about the chat.
            Some(_) => return,
        };
        self.set_problem(Path::Target(target.clone()), problem);
    }

    fn set_problem(&mut self, path: Path, problem: Option<Problem>) {
        if problem.is_some() || self.alerts.open.contains_key(&path) {
            self.alerts.changes += 1;
        }
        match (self.alerts.open.get_mut(&path), problem) {
            (None, None) => {}
            (Some(_), None) => self.close_incident(&path),
            (Some(incident), Some(problem)) => {
                let changed_kind = incident.problem.key() != problem.key();
                incident.problem = problem;
                if changed_kind {
                    let epoch = incident.epoch;
                    self.alert_due(&path, epoch);
                }
            }
            (None, Some(problem)) => {
                let epoch = self.alerts.next_epoch;
                self.alerts.next_epoch += 1;
                tracing::debug!(path = ?path, kind = %problem.key(), "incident opened");
                self.alerts.open.insert(
                    path.clone(),
                    Incident {
                        problem,
                        epoch,
                        since: self.now.at,
                        since_ms: self.now.unix_ms,
                        posted: Vec::new(),
                        kinds_posted: Vec::new(),
                    },
                );
                self.alert_due(&path, epoch);
            }
        }
    }

    /// Posts the incident's alert once it has lasted `after` (arming a timer until then)
    /// to every target that may hear of it and was not alerted of its kind within the
    /// last `after`.
    fn alert_due(&mut self, path: &Path, epoch: u64) {
        let Some(after) = self.alerts.policy.after else {
            return;
        };
        let Some(incident) = self.alerts.open.get(path).filter(|i| i.epoch == epoch) else {
            return;
        };
        let key = incident.problem.key();
        if incident.kinds_posted.contains(&key) {
            return;
        }
        let due = incident.since + after;
        let targets = self.healthy_targets(path);
        let bound = |t: &Target| {
            self.alerts
                .last_alert
                .get(&(key.clone(), t.clone()))
                .map_or(due, |last| due.max(*last + after))
        };
        let next = targets.iter().map(bound).min().unwrap_or(due);
        if next > self.now.at {
            let timer = Timer::Alert {
                path: path.clone(),
                epoch,
            };
            return self.emit(Effect::Arm { at: next, timer });
        }
        let (problem, since_ms) = (incident.problem.clone(), incident.since_ms);
        let (now_at, ready): (Instant, Vec<Target>) = (
            self.now.at,
            targets
                .into_iter()
                .filter(|t| bound(t) <= self.now.at)
                .collect(),
        );
        if ready.is_empty() {
            return;
        }
        let incident = self.alerts.open.get_mut(path).expect("looked up above");
        incident.kinds_posted.push(key.clone());
        for target in ready {
            self.alerts
                .last_alert
                .insert((key.clone(), target.clone()), now_at);
            self.emit(Effect::Post {
                target,
                bulletin: Bulletin::Alert {
                    problem: problem.clone(),
                    since_ms,
                },
                incident: Some((path.clone(), epoch)),
            });
        }
    }

    pub(super) fn on_alert_timer(&mut self, path: &Path, epoch: u64) {
        self.alert_due(path, epoch);
    }

    /// A posted alert reported back: remember its message for the "over" edit.
    pub(super) fn on_posted(
        &mut self,
        target: Target,
        bulletin: &Bulletin,
        incident: Option<(Path, u64)>,
        result: Result<MessageRef, ChannelError>,
    ) {
        let key = match bulletin {
            Bulletin::Alert { problem, .. } | Bulletin::Back { problem, .. } => problem.key(),
            Bulletin::AlertOver { problem, .. } => problem.key(),
            Bulletin::Reminder { .. } => "reminder".to_owned(),
            Bulletin::Escalated { .. } => "escalated".to_owned(),
            Bulletin::Missed { .. } => "missed".to_owned(),
            Bulletin::GrantUsed { .. } => "grant_used".to_owned(),
        };
        self.event(Event::Posted {
            kind: key,
            target: target.clone(),
            text: bulletin.text(),
            result: result
                .as_ref()
                .map(|m| m.message.clone())
                .map_err(|e| e.to_string()),
        });
        let Some((path, epoch)) = incident else {
            return;
        };
        match self.alerts.open.get_mut(&path).filter(|i| i.epoch == epoch) {
            Some(incident) => {
                if let Bulletin::Alert { problem, .. } = bulletin {
                    incident.posted.push((target, result.ok(), problem.clone()));
                }
            }
            // Over before its alert was out: the owner must not be left with the alert alone.
            None => {
                if let (Ok(post), Bulletin::Alert { problem, since_ms }) = (result, bulletin) {
                    let lasted_ms = self.now.unix_ms - since_ms;
                    let bulletin = Bulletin::AlertOver {
                        problem: problem.clone(),
                        since_ms: *since_ms,
                        lasted_ms,
                    };
                    self.emit(Effect::EditPost { post, bulletin });
                    self.post_back(&target, problem, lasted_ms);
                }
            }
        }
    }

    /// The incident on `path` is over: where an alert went out, it is marked over and a
    /// "back" line follows.
    fn close_incident(&mut self, path: &Path) {
        let Some(incident) = self.alerts.open.remove(path) else {
            return;
        };
        let lasted = self.now.at.saturating_duration_since(incident.since);
        tracing::debug!(path = ?path, kind = %incident.problem.key(), lasted_ms = lasted.as_millis() as u64, "incident over");
        let lasted_ms = lasted.as_millis() as i64;
        let mut told: Vec<Target> = Vec::new();
        for (target, message, problem) in incident.posted {
            if let Some(post) = message {
                self.emit(Effect::EditPost {
                    post,
                    bulletin: Bulletin::AlertOver {
                        problem,
                        since_ms: incident.since_ms,
                        lasted_ms,
                    },
                });
            }
            if !told.contains(&target) {
                told.push(target);
            }
        }
        for target in told {
            self.post_back(&target, &incident.problem, lasted_ms);
        }
    }

    fn post_back(&mut self, target: &Target, problem: &Problem, lasted_ms: i64) {
        self.emit(Effect::Post {
            target: target.clone(),
            bulletin: Bulletin::Back {
                problem: problem.clone(),
                lasted_ms,
            },
            incident: None,
        });
    }

    /// Every target that can hear of a problem on `path`: those of channels with no
    /// incident of their own, less the target the problem is about.
    pub(super) fn healthy_targets(&self, path: &Path) -> Vec<Target> {
        self.channels
            .values()
            .filter(|c| {
                !self
                    .alerts
                    .open
                    .contains_key(&Path::Channel(c.name().to_owned()))
            })
            .flat_map(|c| c.targets())
            .filter(|t| !self.alerts.open.contains_key(&Path::Target(t.clone())))
            .filter(|t| path != &Path::Target(t.clone()))
            .collect()
    }
}
