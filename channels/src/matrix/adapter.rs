//! The Matrix channel (matrix-sdk): prompts in an encrypted direct room per owner,
//! answers by reaction (✅ ❌ ♾️) or `/approve` text.
//!
//! State lives in `<state dir>/matrix/`: `session.json` (user, device id, access token;
//! 0600) and `store/` (matrix-sdk's SQLite state and crypto store). A saved session is
//! always restored, never logged in over, so the device id and its keys survive restarts.
//!
//! A prompt's `MessageRef.message` is `<room id>|<event id>`; its `target.chat` is the
//! owner's user id. The prompt's content also carries `org.openclaw.approval.id`, which is
//! how a reaction (which names only the event) is tied back to its approval, also after a
//! restart.
//!
//! Delivery to an owner who has not joined the DM yet waits inside `deliver` (polling the
//! owner's membership) until they join or the approval expires; then it returns a transient
//! error, so the engine retries only while the approval is still pending. Nothing is queued
//! in memory that a restart could lose: the engine replays pending approvals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bridge::approval::{Approval, ApprovalId, Outcome, Responder, now_ms};
use bridge::channel::{
    Answer, Channel, ChannelError, MessageRef, Notice, ReplyTo, Request, Target, Via, command,
};
use matrix_sdk::authentication::SessionTokens;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::{IncludeRelations, RelationsOptions};
use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::StateEventType;
use matrix_sdk::ruma::events::relation::RelationType;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, HttpError, Room, SessionMeta};
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell, broadcast, mpsc};

use super::config::{self, ConfigError, MatrixConfig};
use super::render;

/// The channel's name, also `Target::channel` and `Responder::channel`.
pub const NAME: &str = "matrix";
/// Content key marking our prompts: `{"id": <approval id>}`.
pub const PROMPT_KEY: &str = "org.openclaw.approval";

/// Tunables with production defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct Options {
    /// Long-poll timeout of `/sync`.
    pub sync_timeout: Duration,
    /// How often `deliver` checks whether an invited owner has joined.
    pub join_poll: Duration,
    /// Longest wait inside one `deliver` for an owner to join (bounded by the expiry).
    pub max_join_wait: Duration,
    /// Longest pause between failed syncs.
    pub max_sync_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_timeout: Duration::from_secs(30),
            join_poll: Duration::from_secs(1),
            max_join_wait: Duration::from_secs(300),
            max_sync_backoff: Duration::from_secs(30),
        }
    }
}

enum Credential {
    Password(String),
    AccessToken(String),
}

/// How long a retry after an unanswered `createRoom` waits for the sync to show the room.
const UNANSWERED_CREATE_WAIT: Duration = Duration::from_secs(5);

/// The Matrix channel.
pub struct Matrix {
    config: MatrixConfig,
    credential: Credential,
    dir: PathBuf,
    options: Options,
    client: OnceCell<Client>,
    /// Events older than this instance are never answers (old timeline, restarts).
    created_ms: i64,
    /// The first sync's response (made while connecting), handed to `run`.
    initial: StdMutex<Option<SyncResponse>>,
    /// One find-or-create-and-wait at a time per owner; holds whether the last `createRoom`
    /// for that owner went unanswered (the room may exist).
    dm_locks: Mutex<HashMap<String, Arc<Mutex<bool>>>>,
    /// Direct rooms we know: room → owner.
    rooms: StdMutex<HashMap<OwnedRoomId, String>>,
    /// Reacted-to events: our prompt's approval id, or `None` for other events.
    prompts: StdMutex<HashMap<OwnedEventId, Option<ApprovalId>>>,
}

impl Matrix {
    /// Builds the adapter from its config, the resolved secret (the password or the access
    /// token, whichever the config names) and the bridge's state directory. No I/O: the
    /// first call needing the homeserver (normally `health`) logs in or restores.
    pub fn new(
        config: &MatrixConfig,
        secret: &str,
        state_dir: &Path,
    ) -> Result<Matrix, ConfigError> {
        Self::with_options(config, secret, state_dir, Options::default())
    }

    pub fn with_options(
        config: &MatrixConfig,
        secret: &str,
        state_dir: &Path,
        options: Options,
    ) -> Result<Matrix, ConfigError> {
        config.validate()?;
        let credential = if config.access_token.is_some() {
            Credential::AccessToken(secret.to_owned())
        } else {
            Credential::Password(secret.to_owned())
        };
        Ok(Matrix {
            config: config.clone(),
            credential,
            dir: state_dir.join("matrix"),
            options,
            client: OnceCell::new(),
            created_ms: now_ms(),
            initial: StdMutex::new(None),
            dm_locks: Mutex::new(HashMap::new()),
            rooms: StdMutex::new(HashMap::new()),
            prompts: StdMutex::new(HashMap::new()),
        })
    }

    /// The logged-in client (logs in or restores on first use).
    pub async fn client(&self) -> Result<&Client, ChannelError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    fn bot(&self) -> &str {
        self.config.user_id.as_str()
    }

    async fn connect(&self) -> Result<Client, ChannelError> {
        let perm = |what: &str, e: &dyn std::fmt::Display| {
            ChannelError::Permanent(format!("matrix {what}: {e}"))
        };
        let hs = config::parse_homeserver(&self.config.homeserver)
            .map_err(|e| perm("homeserver", &e))?;
        let user_id = OwnedUserId::try_from(self.bot()).map_err(|e| perm("user_id", &e))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| perm("state dir", &e))?;
        restrict(&self.dir, 0o700);
        let session_path = self.dir.join("session.json");
        let store = self.dir.join("store");
        let saved: Option<MatrixSession> = match std::fs::read_to_string(&session_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| perm("session.json", &e))?),
            Err(_) => None,
        };
        if saved.is_none() && store.exists() {
            // Keys without a session cannot be used again: logging in over them fails.
            tracing::warn!(store = %store.display(), "matrix store without a saved session: starting a new device");
            std::fs::remove_dir_all(&store).map_err(|e| perm("store", &e))?;
        }
        let client = Client::builder()
            .homeserver_url(hs.as_str())
            .sqlite_store(&store, None)
            .build()
            .await
            .map_err(|e| perm("client", &e))?;
        match (saved, &self.credential) {
            (Some(s), cred) => {
                if s.meta.user_id != user_id {
                    return Err(ChannelError::Permanent(format!(
                        "matrix: the saved session in {} belongs to {}, not {}; remove that directory to start over",
                        self.dir.display(),
                        s.meta.user_id,
                        user_id
                    )));
                }
                let session = match cred {
                    Credential::AccessToken(t) => MatrixSession {
                        tokens: SessionTokens {
                            access_token: t.clone(),
                            refresh_token: None,
                        },
                        ..s
                    },
                    Credential::Password(_) => s,
                };
                client.restore_session(session).await.map_err(classify)?;
                tracing::info!(device_id = ?client.device_id(), "matrix session restored");
            }
            (None, Credential::Password(p)) => {
                client
                    .matrix_auth()
                    .login_username(&user_id, p)
                    .initial_device_display_name("approval-bridge")
                    .await
                    .map_err(|e| match classify(e) {
                        ChannelError::Permanent(m) => ChannelError::Permanent(format!(
                            "matrix login as {user_id} failed: {m}"
                        )),
                        e => e,
                    })?;
                tracing::info!(device_id = ?client.device_id(), "matrix logged in with a new device");
            }
            (None, Credential::AccessToken(t)) => {
                let tokens = SessionTokens {
                    access_token: t.clone(),
                    refresh_token: None,
                };
                // Learn the token's device id with a throwaway client, then restore for real.
                let probe = Client::builder()
                    .homeserver_url(hs.as_str())
                    .build()
                    .await
                    .map_err(|e| perm("client", &e))?;
                probe
                    .restore_session(MatrixSession {
                        meta: SessionMeta {
                            user_id: user_id.clone(),
                            device_id: "PROBE".into(),
                        },
                        tokens: tokens.clone(),
                    })
                    .await
                    .map_err(classify)?;
                let who = probe.whoami().await.map_err(classify_http)?;
                if who.user_id != user_id {
                    return Err(ChannelError::Permanent(format!(
                        "matrix.access_token belongs to {}, not {user_id}",
                        who.user_id
                    )));
                }
                let device_id = who.device_id.ok_or_else(|| {
                    ChannelError::Permanent("matrix.access_token has no device".into())
                })?;
                client
                    .restore_session(MatrixSession {
                        meta: SessionMeta {
                            user_id: user_id.clone(),
                            device_id,
                        },
                        tokens,
                    })
                    .await
                    .map_err(classify)?;
            }
        }
        if let Some(session) = client.matrix_auth().session() {
            let text = serde_json::to_string_pretty(&session).map_err(|e| perm("session", &e))?;
            write_private(&session_path, &text).map_err(|e| perm("session.json", &e))?;
        }
        client.whoami().await.map_err(classify_http)?;
        let first = client
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await
            .map_err(classify)?;
        *self.initial.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
        Ok(client)
    }

    /// The direct room with `owner`, once they have joined it.
    async fn joined_dm(
        &self,
        client: &Client,
        owner: &OwnedUserId,
        approval: &Approval,
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
            .rooms
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
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room.room_id().to_owned(), owner.to_string());
        let limit = now_ms() + self.options.max_join_wait.as_millis() as i64;
        let deadline = approval.expires_at_ms.map_or(limit, |e| e.min(limit));
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
                    retry_after: Some(self.options.join_poll),
                });
            }
            tokio::time::sleep(self.options.join_poll).await;
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
                .is_some_and(|c| c.iter().any(|u| u.as_str() == self.bot()));
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
        let id = (v["sender"].as_str() == Some(self.bot()))
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

    /// Whose DM `room` is: (chat, in_dm).
    fn room_owner(&self, room: &Room) -> (String, bool) {
        if let Some(o) = self
            .rooms
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

    /// One timeline event as an answer, if it is one.
    async fn decode(&self, room: &Room, ev: &TimelineEvent) -> Option<Answer> {
        if let TimelineEventKind::UnableToDecrypt { utd_info, .. } = &ev.kind {
            tracing::warn!(room = %room.room_id(), event = ?ev.event_id(), reason = ?utd_info.reason, "undecryptable event ignored");
            return None;
        }
        let v: Value = ev.raw().deserialize_as().ok()?;
        let sender = v["sender"].as_str()?;
        if sender == self.bot() || v["origin_server_ts"].as_i64()? < self.created_ms {
            return None;
        }
        let event_id = v["event_id"].as_str()?;
        let (chat, in_dm) = self.room_owner(room);
        let content = &v["content"];
        let (mut request, via, raw) = match v["type"].as_str()? {
            "m.reaction" => {
                let rel = &content["m.relates_to"];
                if rel["rel_type"].as_str() != Some("m.annotation") {
                    return None;
                }
                let key = rel["key"].as_str()?;
                let Some(decision) = render::decision_of(key) else {
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
                    message: format!("{}|{target}", room.room_id()),
                };
                (
                    // A reaction names no kind: the prompt it is on names the approval.
                    Request::Decide {
                        id,
                        decision,
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
        if self.config.strict {
            let verified = ev.encryption_info().is_some_and(|i| {
                matches!(
                    i.verification_state,
                    matrix_sdk::deserialized_responses::VerificationState::Verified
                )
            });
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
            reply: ReplyTo {
                channel: NAME.to_owned(),
                handle: format!("{}|{event_id}", room.room_id()),
            },
        })
    }

    async fn handle_sync(
        &self,
        client: &Client,
        resp: SyncResponse,
        answers: &mpsc::Sender<Answer>,
    ) -> bool {
        for (room_id, update) in resp.rooms.joined {
            let Some(room) = client.get_room(&room_id) else {
                continue;
            };
            for ev in &update.timeline.events {
                if let Some(a) = self.decode(&room, ev).await
                    && answers.send(a).await.is_err()
                {
                    return false;
                }
            }
        }
        true
    }
}

/// `<room id>|<event id>` → both, or `None`.
fn split_ref(s: &str) -> Option<(OwnedRoomId, OwnedEventId)> {
    let (r, e) = s.split_once('|')?;
    Some((
        OwnedRoomId::try_from(r).ok()?,
        OwnedEventId::try_from(e).ok()?,
    ))
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

fn classify(e: impl Into<matrix_sdk::Error>) -> ChannelError {
    match e.into() {
        matrix_sdk::Error::Http(h) => classify_http(*h),
        e => ChannelError::Permanent(e.to_string()),
    }
}

/// Rate limits (with the server's `retry_after_ms`), 5xx and network faults are transient.
fn classify_http(e: HttpError) -> ChannelError {
    if let Some(api) = e.as_client_api_error() {
        return match api.error_kind() {
            Some(ErrorKind::LimitExceeded(d)) => ChannelError::Transient {
                message: e.to_string(),
                retry_after: match &d.retry_after {
                    Some(matrix_sdk::ruma::api::error::RetryAfter::Delay(d)) => Some(*d),
                    _ => None,
                },
            },
            _ if api.status_code.is_server_error() => ChannelError::Transient {
                message: e.to_string(),
                retry_after: None,
            },
            _ => ChannelError::Permanent(e.to_string()),
        };
    }
    match e {
        HttpError::Reqwest(_) => ChannelError::Transient {
            message: e.to_string(),
            retry_after: None,
        },
        HttpError::Api(_) => ChannelError::Transient {
            message: e.to_string(),
            retry_after: None,
        },
        e => ChannelError::Permanent(e.to_string()),
    }
}

fn restrict(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    restrict(&tmp, 0o600);
    std::fs::rename(tmp, path)
}

/// An empty `m.mentions` says the message mentions nobody, which also turns off the legacy
/// push rules that read `@room` or a display name out of the (untrusted) body text.
fn html_content(msgtype: &str, r: &render::Rendered) -> Value {
    json!({"msgtype": msgtype, "body": r.body, "format": "org.matrix.custom.html",
        "formatted_body": r.html, "m.mentions": {}})
}

#[async_trait]
impl Channel for Matrix {
    fn name(&self) -> &str {
        NAME
    }

    fn targets(&self) -> Vec<Target> {
        self.config
            .effective_targets()
            .into_iter()
            .map(|u| Target {
                channel: NAME.to_owned(),
                chat: u.0,
            })
            .collect()
    }

    fn allows(&self, user_id: &str) -> bool {
        self.config.allow_from.iter().any(|u| u.as_str() == user_id)
    }

    async fn health(&self) -> Result<String, ChannelError> {
        let client = self.client().await?;
        let who = client.whoami().await.map_err(classify_http)?;
        let mut desc = format!(
            "{} (device {})",
            who.user_id,
            who.device_id.as_deref().map_or("?", |d| d.as_str())
        );
        for t in self.config.effective_targets() {
            let Ok(owner) = OwnedUserId::try_from(t.as_str()) else {
                continue;
            };
            let state = match client.get_dm_room(&owner) {
                None => "no direct room yet".to_owned(),
                Some(room) => match membership(client, room.room_id(), &owner).await {
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
            };
            desc.push_str(&format!("; {owner}: {state}"));
        }
        Ok(desc)
    }

    #[tracing::instrument(skip_all, fields(target = %target, approval = %approval.id))]
    async fn deliver(
        &self,
        target: &Target,
        approval: &Approval,
    ) -> Result<MessageRef, ChannelError> {
        let owner = OwnedUserId::try_from(target.chat.as_str()).map_err(|_| {
            ChannelError::Permanent(format!("{:?} is not a Matrix user id", target.chat))
        })?;
        let client = self.client().await?;
        let room = self.joined_dm(client, &owner, approval).await?;
        let rendered = render::render(approval, render::Footer::Pending);
        let mut content = html_content("m.text", &rendered);
        content[PROMPT_KEY] = json!({"id": approval.id.as_str()});
        // One transaction id per approval and room: a retry of a send whose answer was lost
        // (here or after a restart) gets the event the homeserver already stored, instead
        // of posting a second prompt.
        let txn = format!("prompt.{}.{}", approval.id, room.room_id());
        let sent = room
            .send_raw("m.room.message", content)
            .with_transaction_id(txn.as_str().into())
            .await
            .map_err(classify)?;
        let event_id = sent.response.event_id;
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event_id.clone(), Some(approval.id.clone()));
        for d in render::seeded(approval) {
            let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": d.emoji()}});
            let txn = format!("seed.{}.{}.{d}", approval.id, room.room_id());
            let seeded = room
                .send_raw("m.reaction", reaction)
                .with_transaction_id(txn.as_str().into());
            if let Err(e) = seeded.await {
                tracing::warn!(error = %e, decision = %d, "could not seed a reaction; the /approve line still works");
            }
        }
        Ok(MessageRef {
            target: target.clone(),
            message: format!("{}|{event_id}", room.room_id()),
        })
    }

    #[tracing::instrument(skip_all, fields(message = %prompt.message, approval = %approval.id))]
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        let Some((room_id, event_id)) = split_ref(&prompt.message) else {
            return Err(ChannelError::MessageGone(format!(
                "{:?} is not <room>|<event>",
                prompt.message
            )));
        };
        let client = self.client().await?;
        let room = client
            .get_room(&room_id)
            .ok_or_else(|| ChannelError::MessageGone(format!("room {room_id} unknown")))?;
        match room.event(&event_id, None).await {
            Ok(ev) => {
                let v: Value = ev.raw().deserialize_as().unwrap_or_default();
                if v.pointer("/unsigned/redacted_because").is_some() {
                    return Err(ChannelError::MessageGone(format!("{event_id} was deleted")));
                }
            }
            Err(e) if e.client_api_error_kind() == Some(&ErrorKind::NotFound) => {
                return Err(ChannelError::MessageGone(format!("{event_id} not found")));
            }
            Err(e) => return Err(classify(e)),
        }
        let r = render::render(approval, render::Footer::Finished(outcome));
        let starred = render::Rendered {
            body: format!("* {}", r.body),
            html: format!("* {}", r.html),
        };
        let mut content = html_content("m.text", &starred);
        content["m.new_content"] = html_content("m.text", &r);
        content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": event_id});
        room.send_raw("m.room.message", content)
            .await
            .map_err(classify)?;
        // Remove the seeded reactions so nothing looks actionable.
        let opts = RelationsOptions {
            include_relations: IncludeRelations::RelationsOfType(RelationType::Annotation),
            limit: Some(100u32.into()),
            ..Default::default()
        };
        let related = room
            .relations(event_id.clone(), opts)
            .await
            .map_err(classify)?;
        for ev in related.chunk {
            let v: Value = ev.raw().deserialize_as().unwrap_or_default();
            if v["sender"].as_str() != Some(self.bot())
                || v.pointer("/unsigned/redacted_because").is_some()
            {
                continue;
            }
            if let Some(id) = v["event_id"]
                .as_str()
                .and_then(|s| OwnedEventId::try_from(s).ok())
            {
                room.redact(&id, Some("approval finished"), None)
                    .await
                    .map_err(classify_http)?;
            }
        }
        Ok(())
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        let (room_id, event_id) = split_ref(&to.handle).ok_or_else(|| {
            ChannelError::Permanent(format!("unknown reply handle {:?}", to.handle))
        })?;
        let client = self.client().await?;
        let room = client
            .get_room(&room_id)
            .ok_or_else(|| ChannelError::Permanent(format!("room {room_id} unknown")))?;
        let content = json!({
            "msgtype": "m.notice",
            "body": notice.text(),
            "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        });
        room.send_raw("m.room.message", content)
            .await
            .map_err(classify)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(channel = NAME))]
    async fn run(&self, answers: mpsc::Sender<Answer>, mut shutdown: broadcast::Receiver<()>) {
        let mut backoff = Duration::from_millis(500);
        let client = loop {
            let res = tokio::select! {
                _ = shutdown.recv() => return,
                r = self.client() => r,
            };
            match res {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "matrix login failed; backing off");
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.options.max_sync_backoff);
                }
            }
        };
        let first = self
            .initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(resp) = first
            && !self.handle_sync(client, resp, &answers).await
        {
            return;
        }
        backoff = Duration::from_millis(500);
        loop {
            let settings = SyncSettings::default().timeout(self.options.sync_timeout);
            let res = tokio::select! {
                _ = shutdown.recv() => return,
                r = client.sync_once(settings) => r,
            };
            let pause = match res {
                Ok(resp) => {
                    backoff = Duration::from_millis(500);
                    if !self.handle_sync(client, resp, &answers).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
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
                    let p = backoff.max(hint.unwrap_or_default());
                    backoff = (backoff * 2).min(self.options.max_sync_backoff);
                    p
                }
            };
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_mention_nobody_whatever_the_command_says() {
        let r = render::Rendered {
            body: "@room @owner:example.org".into(),
            html: "@room".into(),
        };
        assert_eq!(html_content("m.text", &r)["m.mentions"], json!({}));
    }

    #[test]
    fn message_refs_round_trip() {
        let (r, e) = split_ref("!abc:localhost|$ev123").unwrap();
        assert_eq!(r.as_str(), "!abc:localhost");
        assert_eq!(e.as_str(), "$ev123");
        assert!(split_ref("987654").is_none());
        assert!(split_ref("x|y").is_none());
    }
}
