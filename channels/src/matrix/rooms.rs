//! The encrypted direct room per owner: found (our record, the `m.direct` mark, or a room an
//! unanswered `createRoom` made, adopted) or created, the owner invited, and waited for until
//! they join.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bridge::approval::now_ms;
use bridge::channel::ChannelError;
use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::{Client, Room};
use serde_json::Value;
use tokio::sync::Mutex;

use super::error::{classify, classify_http};

/// How long a retry after an unanswered `createRoom` waits for the sync to show the room.
const UNANSWERED_CREATE_WAIT: Duration = Duration::from_secs(5);

/// The direct rooms of the bot's owners.
pub(super) struct Rooms {
    bot: String,
    /// How often `joined_dm` checks whether an invited owner has joined.
    join_poll: Duration,
    /// Longest wait inside one `joined_dm` for an owner to join (bounded by the expiry).
    max_join_wait: Duration,
    /// One find-or-create-and-wait at a time per owner; holds whether the last `createRoom`
    /// for that owner went unanswered (the room may exist).
    dm_locks: Mutex<HashMap<String, Arc<Mutex<bool>>>>,
    /// Direct rooms we know: room → owner.
    owners: StdMutex<HashMap<OwnedRoomId, String>>,
}

impl Rooms {
    pub(super) fn new(bot: &str, join_poll: Duration, max_join_wait: Duration) -> Rooms {
        Rooms {
            bot: bot.to_owned(),
            join_poll,
            max_join_wait,
            dm_locks: Mutex::new(HashMap::new()),
            owners: StdMutex::new(HashMap::new()),
        }
    }

    /// The direct room with `owner`, once they have joined it.
    ///
    /// An owner who has not joined yet is waited for here (polling their membership) until
    /// they join or `expires_at_ms` (the approval's expiry; `None` for a bulletin) passes,
    /// at most `max_join_wait`; then this returns a transient error, so the engine retries
    /// only while the approval is still pending. Nothing is queued in memory that a
    /// restart could lose: the engine replays pending approvals.
    pub(super) async fn joined_dm(
        &self,
        client: &Client,
        owner: &OwnedUserId,
        expires_at_ms: Option<i64>,
    ) -> Result<Room, ChannelError> {
        let lock = self
            .dm_locks
            .lock()
            .await
            .entry(owner.to_string())
            .or_default()
            .clone();
        let mut create_unanswered = lock.lock().await;
        let known = self
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, o)| o.as_str() == owner.as_str())
            .map(|(r, _)| r.clone());
        let room = match known
            .and_then(|r| client.get_room(&r))
            .or_else(|| client.get_dm_room(owner))
        {
            Some(r) => r,
            None => match self
                .unrecorded_dm(client, owner, *create_unanswered)
                .await?
            {
                Some(r) => r,
                None => {
                    tracing::info!(%owner, "creating an encrypted direct room");
                    let created = client.create_dm(owner).await.map_err(classify);
                    *create_unanswered = matches!(&created, Err(e) if e.is_transient());
                    created?
                }
            },
        };
        *create_unanswered = false;
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.room_id().to_owned(), owner.to_string());
        let limit = now_ms() + self.max_join_wait.as_millis() as i64;
        let deadline = expires_at_ms.map_or(limit, |e| e.min(limit));
        let mut invited = false;
        loop {
            match membership(client, room.room_id(), owner).await?.as_deref() {
                Some("join") => return Ok(room),
                Some("ban") => {
                    return Err(ChannelError::Permanent(format!(
                        "{owner} is banned from the bot's direct room"
                    )));
                }
                Some("invite") => {}
                _ if !invited => {
                    room.invite_user_by_id(owner).await.map_err(classify)?;
                    invited = true;
                }
                _ => {}
            }
            if now_ms() >= deadline {
                return Err(ChannelError::Transient {
                    message: format!(
                        "{owner} has not joined the direct room {} yet",
                        room.room_id()
                    ),
                    retry_after: Some(self.join_poll),
                });
            }
            tokio::time::sleep(self.join_poll).await;
        }
    }

    /// A room this bot created with `owner` invited or joined that is not marked as their
    /// DM: a `createRoom` whose answer was lost after the homeserver made the room (`create_dm`
    /// marks the room only once it hears back). Marked and used, so a retry makes no second
    /// room and sends no second invitation. The receive loop's sync brings such a room in;
    /// after an unanswered `createRoom` (`suspect`) this waits a little for it.
    async fn unrecorded_dm(
        &self,
        client: &Client,
        owner: &OwnedUserId,
        suspect: bool,
    ) -> Result<Option<Room>, ChannelError> {
        let deadline = tokio::time::Instant::now()
            + if suspect {
                UNANSWERED_CREATE_WAIT
            } else {
                Duration::ZERO
            };
        loop {
            if let Some(room) = self.created_for(client, owner).await? {
                tracing::info!(%owner, room = %room.room_id(), "adopting the direct room an unanswered createRoom made");
                client
                    .account()
                    .mark_as_dm(room.room_id(), std::slice::from_ref(owner))
                    .await
                    .map_err(classify)?;
                return Ok(Some(room));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A room the bot made, marked as nobody's DM, of at most two people, with `owner`
    /// invited or joined.
    async fn created_for(
        &self,
        client: &Client,
        owner: &OwnedUserId,
    ) -> Result<Option<Room>, ChannelError> {
        for room in client.joined_rooms() {
            let ours = room
                .creators()
                .is_some_and(|c| c.iter().any(|u| u.as_str() == self.bot));
            if !ours || !room.direct_targets().is_empty() || room.active_members_count() > 2 {
                continue;
            }
            let m = membership(client, room.room_id(), owner).await?;
            if matches!(m.as_deref(), Some("invite" | "join")) {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }

    /// Whose DM `room` is: (chat, in_dm).
    pub(super) fn owner_of(&self, room: &Room) -> (String, bool) {
        if let Some(o) = self
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room.room_id())
        {
            return (o.clone(), true);
        }
        let targets = room.direct_targets();
        if targets.len() == 1
            && let Some(t) = targets.iter().next()
        {
            return (t.to_string(), true);
        }
        (room.room_id().to_string(), false)
    }
}

/// The state of the direct room with `owner`, for the health check.
pub(super) async fn dm_state(client: &Client, owner: &OwnedUserId) -> String {
    match client.get_dm_room(owner) {
        None => "no direct room yet".to_owned(),
        Some(room) => match membership(client, room.room_id(), owner).await {
            Ok(Some(m)) => format!(
                "{m} in {}{}",
                room.room_id(),
                if room.encryption_state().is_encrypted() {
                    ", encrypted"
                } else {
                    ""
                }
            ),
            Ok(None) => format!("not invited to {}", room.room_id()),
            Err(e) => format!("unknown ({e})"),
        },
    }
}

/// The user's membership in the room as the homeserver sees it now (`None`: never a member).
async fn membership(
    client: &Client,
    room: &RoomId,
    user: &OwnedUserId,
) -> Result<Option<String>, ChannelError> {
    let req = get_state_event_for_key::v3::Request::new(
        room.to_owned(),
        StateEventType::RoomMember,
        user.to_string(),
    );
    match client.send(req).await {
        Ok(resp) => {
            let v: Value = serde_json::from_str(resp.event_or_content.get()).unwrap_or_default();
            let m = v
                .get("membership")
                .or_else(|| v.pointer("/content/membership"));
            Ok(m.and_then(Value::as_str).map(str::to_owned))
        }
        Err(e) if e.client_api_error_kind() == Some(&ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(classify_http(e)),
    }
}
