//! The Channel port: what the engine needs from a chat service (deliver a prompt, finish
//! it with an outcome, tell a responder something) and what a channel hands back (an
//! `Answer`). Adapters translate; only the engine decides.

pub mod action;
pub mod command;
pub mod memory;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::approval::{Approval, ApprovalId, Choice, Decision, Kind, Outcome, Responder};
use crate::bulletin::Bulletin;
use crate::grant::{Grant, GrantId};

/// Where a channel sends prompts: one chat (DM) of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub channel: String,
    /// The channel's chat id (Telegram chat id, Matrix user id, ...).
    pub chat: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel, self.chat)
    }
}

/// A prompt this bridge sent: enough for the channel to edit it later, also after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef {
    pub target: Target,
    /// The channel's message id, as text.
    pub message: String,
}

/// What a responder asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Decide an approval (and, for a time-boxed allow, open a grant).
    Decide {
        id: ApprovalId,
        choice: Choice,
        /// The approval kind the answer claims (a button payload's tag), checked against the
        /// approval's own. `None`: the answer's form carries no kind (a typed `/approve`, a
        /// Matrix reaction).
        kind: Option<Kind>,
    },
    /// List pending approvals (`/pending`).
    ListPending,
    /// Run the end-to-end probe and report each hop (`/probe`).
    Probe,
    /// List the approvals reported as ended without reaching anyone (`/missed`).
    ListMissed,
    /// List the time-boxed grants still open (`/grants`).
    ListGrants,
    /// End a time-boxed grant now (its Revoke button, `/revoke <grant>`).
    Revoke { grant: GrantId },
    /// Something that looked like an answer but could not be read (forged or garbled
    /// callback data, `/approve` with a bad decision). `raw` is kept for the audit log.
    Malformed { raw: String, why: String },
}

/// How the answer reached us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A button/reaction on a prompt message; the ref names that message.
    Prompt(MessageRef),
    /// A text command typed in a chat with the bot.
    Command { chat: String },
}

/// An answer as a channel decoded it. `reply` is the channel's handle for telling the
/// responder something (Telegram: the callback query id or the chat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub responder: Responder,
    pub request: Request,
    pub via: Via,
    /// True only when the chat is a one-to-one chat with the bot.
    pub in_dm: bool,
    pub reply: ReplyTo,
}

/// The channel's way back to a responder: a value of the adapter's own type (a callback
/// query id, an interaction token, a chat and the message to reply to...), carried through
/// the engine untouched. Only the adapter that made it can read it ([`ReplyTo::handle`]).
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub channel: String,
    handle: Arc<dyn ReplyHandle>,
}

impl ReplyTo {
    pub fn new(channel: impl Into<String>, handle: impl ReplyHandle) -> ReplyTo {
        ReplyTo {
            channel: channel.into(),
            handle: Arc::new(handle),
        }
    }

    /// The handle, when it is of the adapter's type `H`.
    pub fn handle<H: ReplyHandle>(&self) -> Option<&H> {
        self.handle.as_any().downcast_ref()
    }
}

impl PartialEq for ReplyTo {
    fn eq(&self, other: &ReplyTo) -> bool {
        self.channel == other.channel && self.handle.same(other.handle.as_any())
    }
}

impl Eq for ReplyTo {}

/// What an adapter's reply handle must be: any plain value that compares and prints.
pub trait ReplyHandle: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    /// Equal to `other`, which may be of another type.
    fn same(&self, other: &dyn Any) -> bool;
}

impl<H: Any + fmt::Debug + PartialEq + Send + Sync> ReplyHandle for H {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<H>() == Some(self)
    }
}

/// Why an answer did not count. Shown to the responder and written to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    NotAllowed,
    NotDirectMessage,
    UnknownApproval,
    NotOurPrompt,
    DecisionNotOffered,
    /// The answer names another kind of approval than the one its id belongs to (a
    /// `system_approve:` payload carrying an exec id): forged, never resolved.
    WrongKind,
    Malformed,
    /// The gateway could not be reached; the approval stays pending.
    GatewayUnavailable,
    /// The gateway refused the decision for another reason; nothing was decided.
    GatewayRejected,
    /// The answer could not be written to the audit log (disk full, read-only database):
    /// the bridge resolves nothing it cannot record.
    StoreUnavailable,
    /// A revoke names no grant this bridge holds.
    UnknownGrant,
}

impl Refusal {
    /// Stable key for logs, metrics and the audit log.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::NotDirectMessage => "not_dm",
            Refusal::UnknownApproval => "unknown_approval",
            Refusal::NotOurPrompt => "not_our_prompt",
            Refusal::DecisionNotOffered => "decision_not_offered",
            Refusal::WrongKind => "wrong_kind",
            Refusal::Malformed => "malformed",
            Refusal::GatewayUnavailable => "gateway_unavailable",
            Refusal::GatewayRejected => "gateway_rejected",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::UnknownGrant => "unknown_grant",
        }
    }

    /// What the responder reads.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "You are not allowed to decide approvals here.",
            Refusal::NotDirectMessage => {
                "Approvals are decided only in a direct chat with the bot."
            }
            Refusal::UnknownApproval => "No pending approval with that id.",
            Refusal::NotOurPrompt => "That message is not an approval prompt of this bridge.",
            Refusal::DecisionNotOffered => "That decision is not offered for this approval.",
            Refusal::WrongKind => {
                "That answer is for another kind of approval than this one; nothing was decided."
            }
            Refusal::Malformed => {
                "Could not read that answer. Use the buttons or /approve <id> allow-once|allow-always|deny."
            }
            Refusal::GatewayUnavailable => {
                "The gateway could not be reached; nothing was decided. Try again shortly."
            }
            Refusal::GatewayRejected => "The gateway refused that decision; nothing was decided.",
            Refusal::StoreUnavailable => {
                "The bridge cannot write its database (disk full or read-only), so it cannot record \
                 your answer; nothing was decided. Free the disk or fix the state directory, then answer again."
            }
            Refusal::UnknownGrant => "No grant with that id here; /grants lists them.",
        }
    }
}

/// What the engine tells a responder.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The decision was accepted by the gateway.
    Accepted {
        id: ApprovalId,
        decision: Decision,
    },
    Refused(Refusal),
    /// The approval had already ended; this is how.
    AlreadyFinished {
        id: ApprovalId,
        outcome: Outcome,
    },
    /// Answer to `/pending`.
    Pending(Vec<Approval>),
    /// Answer to `/probe`.
    Probe(crate::engine::ProbeReport),
    /// Answer to `/missed`, newest first.
    Missed(Vec<crate::history::HistoryRow>),
    /// Allowed once, and `grant` now allows exactly this request until its end.
    Granted {
        grant: Grant,
    },
    /// Allowed once, but the grant could not be stored, so none was made.
    GrantNotStored {
        id: ApprovalId,
    },
    /// Answer to `/grants`: the grants still open, oldest first.
    Grants(Vec<Grant>),
    /// `grant` was revoked (now, or `already` before).
    Revoked {
        grant: Grant,
        already: bool,
    },
}

/// Most Revoke buttons one `/grants` answer carries (the list itself is not cut).
pub const MAX_REVOKE_BUTTONS: usize = 10;

impl Notice {
    /// The grants this notice offers a Revoke button for: the first
    /// [`MAX_REVOKE_BUTTONS`] of a `/grants` list.
    pub fn revokes(&self) -> Vec<&GrantId> {
        match self {
            Notice::Grants(list) => list
                .iter()
                .take(MAX_REVOKE_BUTTONS)
                .map(|g| &g.id)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Plain text for the responder; channels escape it for their markup.
    pub fn text(&self) -> String {
        match self {
            Notice::Accepted { decision, .. } => format!("{}.", decision.past()),
            Notice::Refused(r) => r.message().to_owned(),
            Notice::AlreadyFinished { outcome, .. } => {
                format!("Already finished: {}.", outcome.summary())
            }
            Notice::Pending(list) if list.is_empty() => "No pending approvals.".to_owned(),
            Notice::Pending(list) => {
                let mut s = format!("{} pending:", list.len());
                for a in list {
                    s.push_str(&format!(
                        "\n{} {}",
                        a.id,
                        a.command.chars().take(80).collect::<String>()
                    ));
                }
                s
            }
            Notice::Probe(report) => report.text(),
            Notice::Missed(rows) if rows.is_empty() => {
                "No approval has ended without reaching you since the bridge started.".to_owned()
            }
            Notice::Missed(rows) => {
                let mut s = format!("{} ended without reaching you, newest first:", rows.len());
                for r in rows {
                    s.push_str(&format!("\n{} {}", r.id, crate::bulletin::missed_line(r)));
                }
                s
            }
            Notice::Granted { grant } => format!(
                "Allowed once, and for {}: exactly this command is allowed without asking until {} (grant {}; /revoke {} ends it).",
                grant.window.label(),
                crate::time::clock(grant.until_ms),
                grant.id,
                grant.id
            ),
            Notice::GrantNotStored { .. } => {
                "Allowed once. The time-boxed grant could not be stored (disk full or read-only?), \
                 so none was made: the next such command asks you again."
                    .to_owned()
            }
            Notice::Grants(list) if list.is_empty() => "No time-boxed grants are open.".to_owned(),
            Notice::Grants(list) => {
                let mut s = format!("{} open, oldest first (/revoke <id> ends one):", list.len());
                for g in list {
                    s.push_str(&format!("\n{}", g.line()));
                }
                s
            }
            Notice::Revoked {
                grant,
                already: false,
            } => format!("Revoked {}: that command asks you again.", grant.id),
            Notice::Revoked {
                grant,
                already: true,
            } => format!("{} was already revoked.", grant.id),
        }
    }
}

/// One approval's row in a digest, as the digest should now show it.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRow {
    pub approval: Approval,
    /// `None` while pending: the row keeps its buttons.
    pub outcome: Option<Outcome>,
}

/// A channel error, classified by whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Rate limited or a server/network fault: try again after the hint.
    #[error("transient: {message}")]
    Transient {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The message no longer exists or can no longer be edited: do not retry.
    #[error("message gone: {0}")]
    MessageGone(String),
    /// Anything else that retrying will not fix (bad token, chat not found, ...).
    #[error("{0}")]
    Permanent(String),
}

impl ChannelError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ChannelError::Transient { .. })
    }
}

/// How many of a target's last recorded prompts [`RestartSweep::resume`] is handed: an
/// orphan among them whose sweep kills kept cutting short is still found by later restarts.
pub const RESUME_PROMPTS: usize = 8;

/// One chat service. Implementations own their wire formats, escaping and rate limits.
/// What a service can do beyond one prompt per approval is declared, not implied: the
/// optional capabilities below (`None` by default) are small traits of their own.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Short stable name (`telegram`), also the `Target::channel` of its targets.
    fn name(&self) -> &str;

    /// Chats that receive every prompt.
    fn targets(&self) -> Vec<Target>;

    /// Whether this stable user id may decide (the channel's `allowFrom`).
    fn allows(&self, user_id: &str) -> bool;

    /// One message for a burst of approvals, where the service has room for it.
    fn digests(&self) -> Option<&dyn Digests> {
        None
    }

    /// A per-chat send slot the engine can wait for before it chooses what to send.
    fn send_slot(&self) -> Option<&dyn SendSlot> {
        None
    }

    /// A way to find prompts a kill left unrecorded and remove their buttons.
    fn restart_sweep(&self) -> Option<&dyn RestartSweep> {
        None
    }

    /// Rewriting a pending prompt is cheap here: its time left is kept current.
    fn refresh(&self) -> Option<&dyn Refresh> {
        None
    }

    /// Start-up check of credentials and reachability (Telegram `getMe`); returns a
    /// human description such as `@my_bot (id 42)`.
    async fn health(&self) -> Result<String, ChannelError>;

    /// Sends the prompt for `approval` to `target`. Retries its own transient faults
    /// (rate limits); an error here is final for this attempt.
    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError>;

    /// Rewrites a prompt to show the outcome and removes its buttons.
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError>;

    /// Tells one responder something (answers a callback query, or a message in the chat).
    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError>;

    /// Posts `bulletin` (an alert, a recovery line) to `target` as a new message, so the
    /// phone notifies.
    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError>;

    /// Rewrites a message [`Channel::post`] sent (an alert marked resolved). The ref is
    /// the one `post` returned, possibly before a restart.
    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError>;

    /// The channel's own view of whether it reaches its chats, kept current by its receive
    /// loop (a revoked token, another program polling the same bot...). `None`: it does
    /// not tell; the engine still sees its failed deliveries.
    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        None
    }

    /// Receives answers until `shutdown` fires, reconnecting by itself.
    async fn run(&self, answers: mpsc::Sender<Answer>, shutdown: broadcast::Receiver<()>);
}

/// Whether a channel reaches its chats, as the channel itself sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reach {
    #[default]
    Up,
    /// It cannot, for `reason`; `fix` says what the owner can do.
    Down { reason: String, fix: String },
}

/// A channel that sends approvals that queued up for one target as one message: a digest
/// with a row and buttons per approval.
#[async_trait]
pub trait Digests: Send + Sync {
    /// Most approvals one digest can carry (at least 2).
    fn capacity(&self) -> usize;

    /// Delivers `approvals` (first first) in one message. Returns the message and how many
    /// of them it carries: at least 1, and 1 means a plain prompt for the first (sent when
    /// the first does not fit a digest row).
    async fn deliver_digest(
        &self,
        target: &Target,
        approvals: &[Approval],
    ) -> Result<(MessageRef, usize), ChannelError>;

    /// Rewrites a digest so every row shows its state: buttons while pending, the
    /// outcome once ended. `rows` are the digest's rows in their original order.
    async fn update_digest(
        &self,
        prompt: &MessageRef,
        rows: &[DigestRow],
    ) -> Result<(), ChannelError>;
}

/// A channel that spaces messages per chat and can keep a free slot for the prompt that
/// follows. The engine waits for it before it chooses a digest's rows, so everything that
/// queued up meanwhile shares one message.
#[async_trait]
pub trait SendSlot: Send + Sync {
    /// Waits until `target` could take a new prompt at once, and keeps that slot for it.
    async fn ready(&self, target: &Target);
}

/// A channel that can rewrite a pending prompt in place, buttons kept, so the time left it
/// shows is current (an edit notifies nobody).
#[async_trait]
pub trait Refresh: Send + Sync {
    async fn refresh(&self, prompt: &MessageRef, approval: &Approval) -> Result<(), ChannelError>;
}

/// A channel whose chats number messages in order (Telegram) can find prompts a kill left
/// unrecorded, between a send and its record, and remove their buttons.
pub trait RestartSweep: Send + Sync {
    /// Called once at start with the prompts the store recorded before it, the last
    /// [`RESUME_PROMPTS`] per target.
    fn resume(&self, recorded: &[MessageRef]);
}
