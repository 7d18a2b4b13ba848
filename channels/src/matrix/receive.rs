//! The inbound path: the sync loop (login first, backoff after failures) and the timeline
//! events it brings decoded into `Answer`s: reactions on our prompts, `/approve` and
//! `/pending` text. A sync the homeserver refuses for the account's sake (`M_UNKNOWN_TOKEN`,
//! `M_FORBIDDEN`, `M_USER_LOCKED`, `M_USER_DEACTIVATED`) sets the channel's reach down; the
//! next sync that works sets it up.

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use bridge::approval::{ApprovalId, Responder, now_ms};
use bridge::channel::{
    Answer, ChannelError, MessageRef, Reach, ReplyTo, Request, Target, Via, command,
};
use bridge::retry::Backoff;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind, VerificationState};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, Room};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::error::classify;
use super::ids::{NAME, PROMPT_KEY, Reply, message_ref};
use super::render;
use super::rooms::Rooms;
use super::session::Session;
use crate::common::reach::ReachCell;

/// The pause after the first failed login or sync in a row (jittered, as every pause of a
/// `Backoff`); it doubles up to `Options::max_sync_backoff`.
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// What turns syncs into answers.
pub(super) struct Inbox {
    bot: String,
    /// Only encrypted answers from a verified device count (`[matrix] strict`).
    strict: bool,
    /// Events older than this instance are never answers (old timeline, restarts).
    created_ms: i64,
    /// Long-poll timeout of `/sync`.
    sync_timeout: Duration,
    /// Pauses between failed logins and syncs.
    backoff: Backoff,
    /// Reacted-to events: our prompt's approval id, or `None` for other events.
    prompts: StdMutex<HashMap<OwnedEventId, Option<ApprovalId>>>,
    /// Whether the homeserver lets the bot sync, as the loop last saw.
    reach: ReachCell,
}

/// Why the channel is down when the homeserver refuses a sync with `kind`, and the fix;
/// `None` for errors that pass (rate limits, outages, network).
fn refused(kind: &ErrorKind) -> Option<(&'static str, &'static str)> {
    match kind {
        ErrorKind::UnknownToken(_) => Some((
            "the homeserver no longer accepts the bot's access token (M_UNKNOWN_TOKEN)",
            "log the bot in again: put a new token in matrix.access_token, or (with a password) \
             delete matrix/session.json in the bridge's state directory; then restart the bridge",
        )),
        ErrorKind::Forbidden => Some((
            "the homeserver refuses the bot's sync (M_FORBIDDEN)",
            "check on the homeserver that the account in matrix.user_id is active and may log in",
        )),
        ErrorKind::UserLocked => Some((
            "the homeserver has locked the bot's account (M_USER_LOCKED)",
            "ask the homeserver's admin to unlock the account in matrix.user_id",
        )),
        ErrorKind::UserDeactivated => Some((
            "the bot's account is deactivated (M_USER_DEACTIVATED)",
            "register a new account for the bridge and set matrix.user_id and its secret",
        )),
        _ => None,
    }
}

impl Inbox {
    pub(super) fn new(
        bot: &str,
        strict: bool,
        sync_timeout: Duration,
        max_backoff: Duration,
    ) -> Inbox {
        Inbox {
            bot: bot.to_owned(),
            strict,
            created_ms: now_ms(),
            sync_timeout,
            backoff: Backoff::new(FIRST_PAUSE, max_backoff),
            prompts: StdMutex::new(HashMap::new()),
            reach: ReachCell::new(NAME),
        }
    }

    pub(super) fn reach(&self) -> watch::Receiver<Reach> {
        self.reach.subscribe()
    }

    /// Remembers that `event` is our prompt for `id`.
    pub(super) fn prompt_sent(&self, event: OwnedEventId, id: ApprovalId) {
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event, Some(id));
    }

    /// Logs in (retrying), then syncs until shutdown or until nobody takes answers.
    pub(super) async fn run(
        &self,
        session: &Session,
        rooms: &Rooms,
        answers: mpsc::Sender<Answer>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        let mut backoff = self.backoff.attempts();
        let client = loop {
            let res = tokio::select! {
                _ = shutdown.recv() => return,
                r = session.client() => r,
            };
            match res {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "matrix login failed; backing off");
                    let pause = backoff.next_pause();
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        };
        if let Some(resp) = session.take_first_sync()
            && !self.handle_sync(client, rooms, resp, &answers).await
        {
            return;
        }
        backoff.reset();
        loop {
            let settings = SyncSettings::default().timeout(self.sync_timeout);
            let res = tokio::select! {
                _ = shutdown.recv() => return,
                r = client.sync_once(settings) => r,
            };
            let pause = match res {
                Ok(resp) => {
                    backoff.reset();
                    self.reach.up();
                    if !self.handle_sync(client, rooms, resp, &answers).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    if let Some((reason, fix)) = e.client_api_error_kind().and_then(refused) {
                        self.reach.down(reason, fix);
                    }
                    let hint = match classify(e) {
                        ChannelError::Transient {
                            retry_after,
                            message,
                        } => {
                            tracing::warn!(error = %message, "matrix sync failed; backing off");
                            retry_after
                        }
                        e => {
                            tracing::error!(error = %e, "matrix sync failed; backing off");
                            None
                        }
                    };
                    backoff.next_pause().max(hint.unwrap_or_default())
                }
            };
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Hands on the answers in `resp`; false once nobody takes them.
    async fn handle_sync(
        &self,
        client: &Client,
        rooms: &Rooms,
        resp: SyncResponse,
        answers: &mpsc::Sender<Answer>,
    ) -> bool {
        for (room_id, update) in resp.rooms.joined {
            let Some(room) = client.get_room(&room_id) else {
                continue;
            };
            for ev in &update.timeline.events {
                if let Some(a) = self.decode(rooms, &room, ev).await
                    && answers.send(a).await.is_err()
                {
                    return false;
                }
            }
        }
        true
    }

    /// One timeline event as an answer, if it is one.
    async fn decode(&self, rooms: &Rooms, room: &Room, ev: &TimelineEvent) -> Option<Answer> {
        if let TimelineEventKind::UnableToDecrypt { utd_info, .. } = &ev.kind {
            tracing::warn!(room = %room.room_id(), event = ?ev.event_id(), reason = ?utd_info.reason, "undecryptable event ignored");
            return None;
        }
        let v: Value = ev.raw().deserialize_as().ok()?;
        let sender = v["sender"].as_str()?;
        if sender == self.bot || v["origin_server_ts"].as_i64()? < self.created_ms {
            return None;
        }
        let event_id = v["event_id"].as_str()?;
        let (chat, in_dm) = rooms.owner_of(room);
        let content = &v["content"];
        let (mut request, via, raw) = match v["type"].as_str()? {
            "m.reaction" => {
                let rel = &content["m.relates_to"];
                if rel["rel_type"].as_str() != Some("m.annotation") {
                    return None;
                }
                let key = rel["key"].as_str()?;
                let Some(choice) = render::choice_of(key) else {
                    tracing::debug!(%sender, key, "reaction that is no decision ignored");
                    return None;
                };
                let target = OwnedEventId::try_from(rel["event_id"].as_str()?).ok()?;
                let Some(id) = self.prompt_of(room, &target).await else {
                    tracing::debug!(%sender, event = %target, "reaction on an event that is not our prompt ignored");
                    return None;
                };
                let prompt = MessageRef {
                    target: Target {
                        channel: NAME.to_owned(),
                        chat,
                    },
                    message: message_ref(room.room_id(), target.as_str()),
                };
                (
                    // A reaction names no kind: the prompt it is on names the approval.
                    Request::Decide {
                        id,
                        choice,
                        kind: None,
                    },
                    Via::Prompt(prompt),
                    key.to_owned(),
                )
            }
            "m.room.message" => {
                if content["m.relates_to"]["rel_type"].as_str() == Some("m.replace") {
                    return None;
                }
                let body = content["body"].as_str()?;
                let request = command::parse(body)?;
                (
                    request,
                    Via::Command {
                        chat: room.room_id().to_string(),
                    },
                    body.to_owned(),
                )
            }
            _ => return None,
        };
        if self.strict {
            let verified = ev
                .encryption_info()
                .is_some_and(|i| matches!(i.verification_state, VerificationState::Verified));
            if !verified {
                request = Request::Malformed {
                    raw,
                    why: "strict mode: only encrypted answers from a verified device count".into(),
                };
            }
        }
        let display = match room
            .get_member_no_sync(&OwnedUserId::try_from(sender).ok()?)
            .await
        {
            Ok(Some(m)) => m.display_name().map(str::to_owned),
            _ => None,
        };
        Some(Answer {
            responder: Responder {
                channel: NAME.to_owned(),
                user_id: sender.to_owned(),
                display,
            },
            request,
            via,
            in_dm,
            reply: ReplyTo::new(
                NAME,
                Reply {
                    room: room.room_id().to_owned(),
                    event: OwnedEventId::try_from(event_id).ok()?,
                },
            ),
        })
    }

    /// The approval id of our prompt `event`, or `None` when it is not one of ours.
    async fn prompt_of(&self, room: &Room, event: &OwnedEventId) -> Option<ApprovalId> {
        if let Some(known) = self
            .prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(event)
        {
            return known.clone();
        }
        let ev = match room.event(event, None).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(%event, error = %e, "cannot load the reacted-to event");
                return None;
            }
        };
        let v: Value = ev.raw().deserialize_as().ok()?;
        let id = (v["sender"].as_str() == Some(self.bot.as_str()))
            .then(|| {
                v["content"][PROMPT_KEY]["id"]
                    .as_str()
                    .map(|s| ApprovalId(s.to_owned()))
            })
            .flatten();
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event.clone(), id.clone());
        id
    }
}
