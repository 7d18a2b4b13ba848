//! Login and restore. State lives in `<state dir>/matrix/`: `session.json` (user, device id,
//! access token; 0600) and `store/` (matrix-sdk's SQLite state and crypto store). A saved
//! session is always restored, never logged in over: the device id and keys survive restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use bridge::channel::ChannelError;
use matrix_sdk::authentication::SessionTokens;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, SessionMeta};
use tokio::sync::OnceCell;

use super::config::{self, MatrixConfig};
use super::error::{classify, classify_http};

enum Credential {
    Password(String),
    AccessToken(String),
}

/// The bot's client, logged in or restored on first use.
pub(super) struct Session {
    homeserver: String,
    user_id: String,
    credential: Credential,
    dir: PathBuf,
    client: OnceCell<Client>,
    /// The first sync's response (made while connecting), handed to the receive loop.
    first_sync: StdMutex<Option<SyncResponse>>,
}

impl Session {
    /// `secret` is the password or the access token, whichever `config` names. No I/O.
    pub(super) fn new(config: &MatrixConfig, secret: &str, state_dir: &Path) -> Session {
        let credential = if config.access_token.is_some() {
            Credential::AccessToken(secret.to_owned())
        } else {
            Credential::Password(secret.to_owned())
        };
        Session {
            homeserver: config.homeserver.clone(),
            user_id: config.user_id.as_str().to_owned(),
            credential,
            dir: state_dir.join("matrix"),
            client: OnceCell::new(),
            first_sync: StdMutex::new(None),
        }
    }

    /// The logged-in client (logs in or restores on first use).
    pub(super) async fn client(&self) -> Result<&Client, ChannelError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    /// The sync made while connecting, once.
    pub(super) fn take_first_sync(&self) -> Option<SyncResponse> {
        self.first_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    async fn connect(&self) -> Result<Client, ChannelError> {
        let perm = |what: &str, e: &dyn std::fmt::Display| {
            ChannelError::Permanent(format!("matrix {what}: {e}"))
        };
        let hs = config::parse_homeserver(&self.homeserver).map_err(|e| perm("homeserver", &e))?;
        let user_id =
            OwnedUserId::try_from(self.user_id.as_str()).map_err(|e| perm("user_id", &e))?;
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
        *self.first_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
        Ok(client)
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
