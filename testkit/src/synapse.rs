//! A real Synapse homeserver for the Matrix tests, and Matrix users driven by a second
//! `matrix_sdk::Client` each (the owner's phone, a stranger).
//!
//! Synapse comes from the pinned venv that `scripts/install-synapse` fills
//! (`SYNAPSE_VENV`, default `$HOME/.cache/approval-bridge/synapse-venv`). Each
//! [`Synapse::start`] generates its own config in a temp dir: `server_name: localhost`,
//! one client listener on a free 127.0.0.1 port, SQLite, a registration shared secret, no
//! federation, no key servers, `bcrypt_rounds: 4` and rate limits relaxed far beyond what
//! a test sends. The process is killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UInt};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::fault_proxy::FaultProxy;
use crate::service_faults::html_status;

/// The SDK the test users are built on, for tests that name its types.
pub use matrix_sdk;

/// A running homeserver. Dropping it kills the process.
pub struct Synapse {
    dir: tempfile::TempDir,
    port: u16,
    secret: String,
    _child: Child,
}

impl Synapse {
    /// Generates a config, starts Synapse and waits until `/health` answers.
    pub async fn start() -> Result<Synapse> {
        let venv = std::env::var_os("SYNAPSE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/approval-bridge/synapse-venv")
            });
        let python = venv.join("bin/python");
        if !python.exists() {
            bail!(
                "no Synapse venv at {}: run scripts/install-synapse",
                venv.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("synapse-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let seed: Vec<u8> = uuid::Uuid::new_v4()
            .as_bytes()
            .iter()
            .chain(uuid::Uuid::new_v4().as_bytes())
            .copied()
            .collect();
        std::fs::write(
            dir.path().join("signing.key"),
            format!("ed25519 a_test {}\n", base64_unpadded(&seed)),
        )?;
        let lots = json!({"per_second": 10000, "burst_count": 10000});
        // JSON is YAML: Synapse reads it as its config file.
        let config = json!({
            "server_name": "localhost",
            "pid_file": p("homeserver.pid"),
            "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": false,
                           "x_forwarded": false, "resources": [{"names": ["client"], "compress": false}]}],
            "database": {"name": "sqlite3", "args": {"database": p("homeserver.db")}},
            "media_store_path": p("media"),
            "signing_key_path": p("signing.key"),
            "registration_shared_secret": secret,
            "macaroon_secret_key": uuid::Uuid::new_v4().simple().to_string(),
            "form_secret": uuid::Uuid::new_v4().simple().to_string(),
            "report_stats": false,
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "federation_domain_whitelist": [],
            "bcrypt_rounds": 4,
            "enable_registration": false,
            "presence": {"enabled": false},
            "url_preview_enabled": false,
            "rc_message": lots,
            "rc_registration": lots,
            "rc_login": {"address": lots, "account": lots, "failed_attempts": lots},
            "rc_joins": {"local": lots, "remote": lots},
            "rc_joins_per_room": lots,
            "rc_invites": {"per_room": lots, "per_user": lots, "per_issuer": lots},
            "rc_admin_redaction": lots,
            "rc_3pid_validation": lots,
            "rc_key_requests": lots,
            "rc_presence": {"per_user": lots},
            "rc_delayed_event_mgmt": lots,
            "rc_reports": lots,
        });
        std::fs::write(
            dir.path().join("homeserver.yaml"),
            serde_json::to_string_pretty(&config)?,
        )?;
        let log = std::fs::File::create(dir.path().join("synapse.log"))?;
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.path().join("homeserver.yaml"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start Synapse")?;
        let mut hs = Synapse {
            dir,
            port,
            secret,
            _child: child,
        };
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/health", hs.url())).send().await
                && r.status().is_success()
            {
                tracing::info!(took = ?started.elapsed(), port, "synapse ready");
                return Ok(hs);
            }
            if let Some(status) = hs._child.try_wait()? {
                bail!("synapse exited with {status}:\n{}", hs.log());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("synapse not ready within 60 s:\n{}", hs.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A [`FaultProxy`] in front of this homeserver, for a client whose calls should meet
    /// service faults: a 500 answers Matrix's `M_UNKNOWN` JSON, a 502/503 a proxy's HTML
    /// page; slow answers and drops hit the calls that send or redact an event or create a
    /// room.
    pub async fn fault_proxy(&self) -> Result<FaultProxy> {
        fn is_write(method: &Method, path: &str) -> bool {
            (method == Method::PUT && (path.contains("/send/") || path.contains("/redact/")))
                || (method == Method::POST && path.ends_with("/createRoom"))
        }
        fn status(s: u16) -> Response {
            match s {
                500 => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})),
                )
                    .into_response(),
                _ => html_status(s),
            }
        }
        FaultProxy::start(&self.url(), is_write, status).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("synapse.log")).unwrap_or_default()
    }

    /// Registers `@user:localhost` through the shared-secret admin API; returns the user id.
    pub async fn register(&self, user: &str, password: &str, admin: bool) -> Result<String> {
        let http = reqwest::Client::new();
        let url = format!("{}/_synapse/admin/v1/register", self.url());
        let nonce: Value = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let nonce = nonce["nonce"].as_str().context("no nonce")?.to_owned();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes())?;
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        mac.update(b"\0");
        mac.update(if admin {
            b"admin".as_slice()
        } else {
            b"notadmin".as_slice()
        });
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({"nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac});
        let r = http.post(&url).json(&body).send().await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("register {user}: {status} {v}");
        }
        Ok(v["user_id"].as_str().context("no user_id")?.to_owned())
    }
}

impl Synapse {
    /// Locks or unlocks `user` through the admin API (`admin_token`: an admin's access
    /// token). A locked account's requests answer 401 `M_USER_LOCKED` until it is unlocked.
    pub async fn set_locked(&self, admin_token: &str, user: &str, locked: bool) -> Result<()> {
        reqwest::Client::new()
            .put(format!("{}/_synapse/admin/v2/users/{user}", self.url()))
            .bearer_auth(admin_token)
            .json(&json!({"locked": locked}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Logs `access_token` out: its later requests answer 401 `M_UNKNOWN_TOKEN`.
    pub async fn logout(&self, access_token: &str) -> Result<()> {
        reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/logout", self.url()))
            .bearer_auth(access_token)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// A plain password login over HTTP (no keys uploaded): the access token and its device id.
    pub async fn login_token(&self, user: &str, password: &str) -> Result<(String, String)> {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let v: Value = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/login", self.url()))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((
            v["access_token"]
                .as_str()
                .context("no access_token")?
                .to_owned(),
            v["device_id"].as_str().context("no device_id")?.to_owned(),
        ))
    }
}

fn base64_unpadded(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A Matrix user with their own client and store, syncing in the background: joins,
/// reacts, types, and reads rooms decrypted.
pub struct MatrixUser {
    pub client: Client,
    pub user_id: OwnedUserId,
    _dir: tempfile::TempDir,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for MatrixUser {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl MatrixUser {
    /// Logs in (new device, keys uploaded by a first sync) and keeps syncing.
    pub async fn login(hs: &Synapse, user: &str, password: &str) -> Result<MatrixUser> {
        let dir = tempfile::Builder::new().prefix("matrix-user-").tempdir()?;
        let client = Client::builder()
            .homeserver_url(hs.url())
            .sqlite_store(dir.path(), None)
            .build()
            .await?;
        client
            .matrix_auth()
            .login_username(user, password)
            .initial_device_display_name("test phone")
            .await?;
        client
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await?;
        let user_id = client.user_id().context("logged in")?.to_owned();
        let c = client.clone();
        let sync = tokio::spawn(async move {
            loop {
                if let Err(e) = c
                    .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
                    .await
                {
                    tracing::warn!(error = %e, "test user sync failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(MatrixUser {
            client,
            user_id,
            _dir: dir,
            sync,
        })
    }

    /// Waits for an invitation and returns its room.
    pub async fn wait_invite(&self, limit: Duration) -> Result<OwnedRoomId> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.client.invited_rooms().first() {
                return Ok(r.room_id().to_owned());
            }
            if Instant::now() > deadline {
                bail!("{} got no invitation within {limit:?}", self.user_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Joins `room`.
    pub async fn join(&self, room: &OwnedRoomId) -> Result<Room> {
        Ok(self.client.join_room_by_id(room).await?)
    }

    fn room(&self, room: &OwnedRoomId) -> Result<Room> {
        self.client
            .get_room(room)
            .with_context(|| format!("{} does not know {room}", self.user_id))
    }

    pub async fn invite(&self, room: &OwnedRoomId, user: &OwnedUserId) -> Result<()> {
        Ok(self.room(room)?.invite_user_by_id(user).await?)
    }

    /// Reacts with `key` to `event`; returns the reaction's event id.
    pub async fn react(
        &self,
        room: &OwnedRoomId,
        event: &OwnedEventId,
        key: &str,
    ) -> Result<OwnedEventId> {
        let content =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event, "key": key}});
        Ok(self
            .room(room)?
            .send_raw("m.reaction", content)
            .await?
            .response
            .event_id)
    }

    pub async fn redact(&self, room: &OwnedRoomId, event: &OwnedEventId) -> Result<()> {
        self.room(room)?.redact(event, None, None).await?;
        Ok(())
    }

    /// Sends a plain text message; returns its event id.
    pub async fn send_text(&self, room: &OwnedRoomId, text: &str) -> Result<OwnedEventId> {
        let content = json!({"msgtype": "m.text", "body": text});
        Ok(self
            .room(room)?
            .send_raw("m.room.message", content)
            .await?
            .response
            .event_id)
    }

    /// The room's last events, oldest first, decrypted where possible. Each is the event
    /// JSON plus `"encrypted": bool` and `"utd": bool` (could not decrypt).
    pub async fn timeline(&self, room: &OwnedRoomId) -> Result<Vec<Value>> {
        let room = self.room(room)?;
        let mut opts = MessagesOptions::backward();
        opts.limit = UInt::from(500u32);
        let msgs = room.messages(opts).await?;
        let mut out = Vec::new();
        for ev in msgs.chunk.iter().rev() {
            let mut v: Value = ev.raw().deserialize_as()?;
            v["encrypted"] = json!(ev.encryption_info().is_some());
            v["utd"] = json!(matches!(ev.kind, TimelineEventKind::UnableToDecrypt { .. }));
            out.push(v);
        }
        Ok(out)
    }
}
