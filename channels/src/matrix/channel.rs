//! The Matrix channel: [`Matrix`] puts the session, the owners' rooms and the send and
//! receive paths behind the `Channel` port. A prompt's (and a bulletin's) `MessageRef.message`
//! is `<room id>|<event id>`; its `target.chat` is the owner's user id.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bridge::approval::{Approval, Outcome};
use bridge::bulletin::Bulletin;
use bridge::channel::{Answer, Channel, ChannelError, MessageRef, Notice, Reach, ReplyTo, Target};
use matrix_sdk::Client;
use matrix_sdk::ruma::OwnedUserId;
use tokio::sync::{broadcast, mpsc, watch};

use super::config::{ConfigError, MatrixConfig};
use super::error::classify_http;
use super::ids::{NAME, Reply, message_ref, split_ref};
use super::receive::Inbox;
use super::rooms::{self, Rooms};
use super::send;
use super::session::Session;

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

/// The Matrix channel.
pub struct Matrix {
    config: MatrixConfig,
    session: Session,
    rooms: Rooms,
    inbox: Inbox,
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
        let bot = config.user_id.as_str();
        Ok(Matrix {
            config: config.clone(),
            session: Session::new(config, secret, state_dir),
            rooms: Rooms::new(bot, options.join_poll, options.max_join_wait),
            inbox: Inbox::new(
                bot,
                config.strict,
                options.sync_timeout,
                options.max_sync_backoff,
            ),
        })
    }

    /// The logged-in client (logs in or restores on first use).
    pub async fn client(&self) -> Result<&Client, ChannelError> {
        self.session.client().await
    }

    /// The joined room and event a `<room id>|<event id>` ref names.
    async fn referenced(
        &self,
        message: &MessageRef,
    ) -> Result<(matrix_sdk::Room, matrix_sdk::ruma::OwnedEventId), ChannelError> {
        let Some((room_id, event_id)) = split_ref(&message.message) else {
            return Err(ChannelError::MessageGone(format!(
                "{:?} is not <room>|<event>",
                message.message
            )));
        };
        let client = self.client().await?;
        let room = client
            .get_room(&room_id)
            .ok_or_else(|| ChannelError::MessageGone(format!("room {room_id} unknown")))?;
        Ok((room, event_id))
    }
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
            let state = rooms::dm_state(client, &owner).await;
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
        let room = self
            .rooms
            .joined_dm(client, &owner, approval.expires_at_ms)
            .await?;
        let event_id = send::prompt(&room, approval).await?;
        self.inbox
            .prompt_sent(event_id.clone(), approval.id.clone());
        send::seed_reactions(&room, approval, &event_id).await;
        Ok(MessageRef {
            target: target.clone(),
            message: message_ref(room.room_id(), event_id.as_str()),
        })
    }

    #[tracing::instrument(skip_all, fields(message = %prompt.message, approval = %approval.id))]
    async fn finish(
        &self,
        prompt: &MessageRef,
        approval: &Approval,
        outcome: &Outcome,
    ) -> Result<(), ChannelError> {
        let (room, event_id) = self.referenced(prompt).await?;
        send::finish(
            &room,
            &event_id,
            approval,
            outcome,
            self.config.user_id.as_str(),
        )
        .await
    }

    async fn notify(&self, to: &ReplyTo, notice: &Notice) -> Result<(), ChannelError> {
        let Reply { room, event } = to
            .handle::<Reply>()
            .ok_or_else(|| ChannelError::Permanent(format!("not a Matrix reply handle: {to:?}")))?;
        let client = self.client().await?;
        let room = client
            .get_room(room)
            .ok_or_else(|| ChannelError::Permanent(format!("room {room} unknown")))?;
        send::notice(&room, event, &notice.text()).await
    }

    #[tracing::instrument(skip_all, fields(target = %target))]
    async fn post(&self, target: &Target, bulletin: &Bulletin) -> Result<MessageRef, ChannelError> {
        let owner = OwnedUserId::try_from(target.chat.as_str()).map_err(|_| {
            ChannelError::Permanent(format!("{:?} is not a Matrix user id", target.chat))
        })?;
        let client = self.client().await?;
        let room = self.rooms.joined_dm(client, &owner, None).await?;
        let event_id = send::bulletin(&room, &bulletin.text(), bulletin.quiet()).await?;
        Ok(MessageRef {
            target: target.clone(),
            message: message_ref(room.room_id(), event_id.as_str()),
        })
    }

    #[tracing::instrument(skip_all, fields(message = %post.message))]
    async fn edit_post(&self, post: &MessageRef, bulletin: &Bulletin) -> Result<(), ChannelError> {
        let (room, event_id) = self.referenced(post).await?;
        send::edit_bulletin(&room, &event_id, &bulletin.text()).await
    }

    fn reach(&self) -> Option<watch::Receiver<Reach>> {
        Some(self.inbox.reach())
    }

    #[tracing::instrument(skip_all, fields(channel = NAME))]
    async fn run(&self, answers: mpsc::Sender<Answer>, shutdown: broadcast::Receiver<()>) {
        self.inbox
            .run(&self.session, &self.rooms, answers, shutdown)
            .await;
    }
}
