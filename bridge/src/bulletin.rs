//! What the bridge tells the owners on its own, not in answer to anyone: that a path from
//! the gateway to them is broken and how to fix it, that it works again, that a prompt is
//! about to expire. Plain text in one place (channels escape it for their markup);
//! nothing here decides anything.

use crate::approval::ApprovalId;
use crate::grant::GrantId;
use crate::history::HistoryRow;
use crate::time::{clock, span};

/// How much of a command a bulletin quotes; the prompt has all of it.
const COMMAND_CHARS: usize = 200;
/// How many approvals one report of missed approvals lists; `/missed` has the rest.
const MISSED_LINES: usize = 8;

/// A broken path between the gateway and the owners, with what it means and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The gateway cannot be reached (or drops the link at once).
    GatewayDown { reason: String },
    /// The gateway refuses the bridge's credentials.
    GatewayRefused { reason: String },
    /// Connected without needed scopes: blind to the approvals agents raise.
    GatewayBlind {
        missing: Vec<String>,
        device_id: String,
    },
    /// The gateway waits for the owner to pair this device.
    Pairing { request_id: Option<String> },
    /// One channel cannot reach its chats (token revoked, bot blocked, another poller...).
    ChannelDown {
        channel: String,
        reason: String,
        fix: String,
    },
    /// The scheduled probe (`[alerts] probe_every`) broke at `hop`.
    ProbeFailed { hop: String, detail: Option<String> },
}

impl Problem {
    /// Stable key of the incident kind, for the rate bound, logs and the audit log.
    pub fn key(&self) -> String {
        match self {
            Problem::GatewayDown { .. } => "gateway_down".into(),
            Problem::GatewayRefused { .. } => "gateway_refused".into(),
            Problem::GatewayBlind { .. } => "gateway_blind".into(),
            Problem::Pairing { .. } => "gateway_pairing".into(),
            Problem::ChannelDown { channel, .. } => format!("channel_down:{channel}"),
            Problem::ProbeFailed { .. } => "probe_failed".into(),
        }
    }

    /// The channel this problem is about, whose own chats cannot be told.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Problem::ChannelDown { channel, .. } => Some(channel),
            _ => None,
        }
    }

    /// What is wrong, in one sentence without the time.
    pub fn what(&self) -> String {
        match self {
            Problem::GatewayDown { reason } => {
                format!("the bridge cannot reach the OpenClaw gateway ({reason})")
            }
            Problem::GatewayRefused { reason } => {
                format!("the OpenClaw gateway refuses the bridge ({reason})")
            }
            Problem::GatewayBlind { missing, .. } => format!(
                "the bridge is connected to the gateway without the scope{} {}, so it cannot see the \
                 approvals agents raise",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ),
            Problem::Pairing { .. } => {
                "the gateway waits for you to pair the bridge's device".to_owned()
            }
            Problem::ChannelDown {
                channel, reason, ..
            } => format!("{channel} cannot reach you ({reason})"),
            Problem::ProbeFailed { hop, detail } => match detail {
                Some(d) => format!("the scheduled probe broke at \"{hop}\" ({d})"),
                None => format!("the scheduled probe broke at \"{hop}\""),
            },
        }
    }

    /// What to do about it: the exact command where there is one.
    pub fn fix(&self) -> String {
        match self {
            Problem::GatewayDown { .. } => {
                "check that the gateway runs (`openclaw gateway status` on its host) \
                 and that gateway.url points at it"
                    .to_owned()
            }
            Problem::GatewayRefused { .. } => {
                "set gateway.token to the gateway's gateway.auth.token, then restart the bridge"
                    .to_owned()
            }
            Problem::GatewayBlind { missing, device_id } => {
                let scopes: String = missing.iter().map(|s| format!(" --scope {s}")).collect();
                format!(
                    "on the gateway host run `openclaw devices rotate --device {device_id} --role operator{scopes}` \
                     (or approve the device's scope upgrade in `openclaw devices list`)"
                )
            }
            Problem::Pairing {
                request_id: Some(id),
            } => format!("on the gateway host run `openclaw devices approve {id}`"),
            Problem::Pairing { request_id: None } => {
                "on the gateway host run `openclaw devices list` and approve the bridge's request"
                    .to_owned()
            }
            Problem::ChannelDown { fix, .. } => fix.clone(),
            Problem::ProbeFailed { .. } => {
                "send /probe (or run `approval-bridge probe`) to see every hop, and read the bridge's log"
                    .to_owned()
            }
        }
    }

    /// True when, while it lasts, the gateway denies agents' commands without asking.
    fn denies_unseen(&self) -> bool {
        !matches!(
            self,
            Problem::ChannelDown { .. } | Problem::ProbeFailed { .. }
        )
    }
}

/// A message the bridge posts to an owner's chat by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bulletin {
    /// `problem` has lasted since `since_ms` (Unix ms).
    Alert { problem: Problem, since_ms: i64 },
    /// The alert, rewritten once its problem is over after `lasted_ms`.
    AlertOver {
        problem: Problem,
        since_ms: i64,
        lasted_ms: i64,
    },
    /// A new line when the problem is over, so the phone notifies.
    Back { problem: Problem, lasted_ms: i64 },
    /// A pending approval has `left_ms` to be decided.
    Reminder {
        id: ApprovalId,
        command: String,
        agent: Option<String>,
        left_ms: i64,
    },
    /// Approvals that ended at the gateway without reaching anyone (oldest first).
    Missed { rows: Vec<HistoryRow> },
    /// Nobody answered for `waited_ms`: this chat is asked too (the prompt follows).
    Escalated {
        id: ApprovalId,
        command: String,
        /// The chats asked so far (`telegram:111`, ...).
        asked: Vec<String>,
        waited_ms: i64,
        left_ms: i64,
    },
    /// The bridge allowed approval `id` under `grant`, on its owner's behalf: one quiet
    /// line to that owner, with a Revoke button where the channel has buttons.
    GrantUsed {
        grant: GrantId,
        id: ApprovalId,
        command: String,
        until_ms: i64,
    },
}

impl Bulletin {
    /// Posted without a notification where the channel can send silently.
    pub fn quiet(&self) -> bool {
        matches!(self, Bulletin::GrantUsed { .. })
    }

    /// The grant a Revoke button on this bulletin ends.
    pub fn revokes(&self) -> Option<&GrantId> {
        match self {
            Bulletin::GrantUsed { grant, .. } => Some(grant),
            _ => None,
        }
    }

    /// Plain text for the owner; channels escape it for their markup.
    pub fn text(&self) -> String {
        match self {
            Bulletin::Alert { problem, since_ms } => {
                let mut s = format!(
                    "⚠️ Approvals cannot reach you: since {}, {}.",
                    clock(*since_ms),
                    problem.what()
                );
                if problem.denies_unseen() {
                    s.push_str(
                        "\nWhile this lasts, commands that need your approval are denied without asking you.",
                    );
                }
                s.push_str(&format!("\nFix: {}.", problem.fix()));
                s
            }
            Bulletin::AlertOver {
                problem,
                since_ms,
                lasted_ms,
            } => format!(
                "✅ Resolved after {}: since {}, {}.",
                span(*lasted_ms),
                clock(*since_ms),
                problem.what()
            ),
            Bulletin::Back { problem, lasted_ms } => {
                let path = match problem {
                    Problem::ChannelDown { channel, .. } => format!("{channel} reaches you"),
                    Problem::ProbeFailed { .. } => "the scheduled probe passes".to_owned(),
                    _ => "approvals reach you".to_owned(),
                };
                format!(
                    "✅ Back: {path} again (the problem lasted {}).",
                    span(*lasted_ms)
                )
            }
            Bulletin::Reminder {
                id,
                command,
                agent,
                left_ms,
            } => {
                let agent = agent
                    .as_deref()
                    .map(|a| format!(" (agent {a})"))
                    .unwrap_or_default();
                format!(
                    "⏰ {} left to decide{agent}: {}\nUnanswered, it is denied then. Use the prompt's buttons, or /approve {id} allow-once|deny.",
                    span(*left_ms),
                    quote(command)
                )
            }
            Bulletin::Missed { rows } => {
                let (from, to) = (
                    rows.first().map_or(0, |r| r.resolved_at_ms),
                    rows.last().map_or(0, |r| r.resolved_at_ms),
                );
                let span = if clock(from) == clock(to) {
                    clock(from)
                } else {
                    format!("{}–{}", clock(from).trim_end_matches(" UTC"), clock(to))
                };
                let n = rows.len();
                let mut s = format!(
                    "🚫 While no approval could reach you ({span}), {n} command{} ended without asking you:",
                    if n == 1 { "" } else { "s" }
                );
                for r in rows.iter().take(MISSED_LINES) {
                    s.push_str(&format!("\n• {}", missed_line(r)));
                }
                if n > MISSED_LINES {
                    s.push_str(&format!(
                        "\n…and {} more: /missed lists them all.",
                        n - MISSED_LINES
                    ));
                }
                s
            }
            Bulletin::Escalated {
                command,
                asked,
                waited_ms,
                left_ms,
                ..
            } => format!(
                "🔔 Nobody has answered this approval for {}, so you are asked too (also asked: {}). {} left: {}",
                span(*waited_ms),
                asked.join(", "),
                span(*left_ms),
                quote(command)
            ),
            Bulletin::GrantUsed {
                grant,
                command,
                until_ms,
                ..
            } => format!(
                "⏳ Allowed by your grant {grant} (until {}): {}. Revoke it to be asked again (/revoke {grant}).",
                clock(*until_ms),
                quote(command)
            ),
        }
    }
}

/// `17:03 UTC touch /tmp/x (agent main, cron job nightly): Denied: no approval route…`
pub fn missed_line(r: &HistoryRow) -> String {
    let mut who: Vec<String> = Vec::new();
    if let Some(a) = &r.agent_id {
        who.push(format!("agent {a}"));
    }
    if let Some(job) = &r.cron_job {
        who.push(format!("cron job {job}"));
    }
    let who = if who.is_empty() {
        String::new()
    } else {
        format!(" ({})", who.join(", "))
    };
    format!(
        "{} {}{who}: {}",
        clock(r.resolved_at_ms),
        quote(&r.command),
        r.outcome().summary()
    )
}

/// The command as a bulletin quotes it: at most [`COMMAND_CHARS`], marked when cut.
fn quote(command: &str) -> String {
    if command.chars().count() <= COMMAND_CHARS {
        return command.to_owned();
    }
    let cut: String = command.chars().take(COMMAND_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_says_what_since_when_and_the_exact_fix() {
        let pairing = Bulletin::Alert {
            problem: Problem::Pairing {
                request_id: Some("req-7".into()),
            },
            since_ms: 1_795_000_005_999,
        };
        assert_eq!(
            pairing.text(),
            "⚠️ Approvals cannot reach you: since 11:06 UTC, the gateway waits for you to pair the bridge's device.\n\
             While this lasts, commands that need your approval are denied without asking you.\n\
             Fix: on the gateway host run `openclaw devices approve req-7`."
        );
        let blind = Problem::GatewayBlind {
            missing: vec!["operator.admin".into()],
            device_id: "d1".into(),
        };
        assert!(
            blind.fix().contains(
                "openclaw devices rotate --device d1 --role operator --scope operator.admin"
            ),
            "{}",
            blind.fix()
        );
        let down = Problem::ChannelDown {
            channel: "discord".into(),
            reason: "50007 cannot send messages to this user".into(),
            fix: "open a DM with the bot again".into(),
        };
        let text = Bulletin::Alert {
            problem: down.clone(),
            since_ms: 0,
        }
        .text();
        assert!(!text.contains("denied without asking"), "{text}");
        assert!(
            text.ends_with("Fix: open a DM with the bot again."),
            "{text}"
        );
        assert_eq!(down.key(), "channel_down:discord");
    }

    #[test]
    fn a_reminder_says_the_time_left_and_how_to_answer_and_cuts_a_long_command() {
        let r = Bulletin::Reminder {
            id: "a-1".into(),
            command: "x".repeat(300),
            agent: Some("main".into()),
            left_ms: 120_000,
        };
        let text = r.text();
        assert!(
            text.starts_with("⏰ 2 min left to decide (agent main): xxx"),
            "{text}"
        );
        assert!(text.contains(&format!("{}…\n", "x".repeat(199))), "{text}");
        assert!(text.ends_with("/approve a-1 allow-once|deny."), "{text}");
        let e = Bulletin::Escalated {
            id: "a-1".into(),
            command: "make deploy".into(),
            asked: vec!["telegram:111".into(), "matrix:@ann:hs".into()],
            waited_ms: 900_000,
            left_ms: 900_000,
        };
        assert_eq!(
            e.text(),
            "🔔 Nobody has answered this approval for 15 min, so you are asked too (also asked: \
             telegram:111, matrix:@ann:hs). 15 min left: make deploy"
        );
    }

    #[test]
    fn recovery_says_how_long_it_lasted() {
        let problem = Problem::GatewayDown {
            reason: "connection refused".into(),
        };
        assert_eq!(
            Bulletin::Back {
                problem: problem.clone(),
                lasted_ms: 192_000
            }
            .text(),
            "✅ Back: approvals reach you again (the problem lasted 3 min 12 s)."
        );
        assert_eq!(
            Bulletin::AlertOver {
                problem,
                since_ms: 0,
                lasted_ms: 60_000
            }
            .text(),
            "✅ Resolved after 1 min: since 00:00 UTC, the bridge cannot reach the OpenClaw gateway (connection refused)."
        );
    }
}
