//! Matrix adapter against a real Synapse (testkit::synapse): the conformance suite, then the
//! whole bridge (real binary, real OpenClaw gateway, real Synapse) as in issue 3. The owner
//! and a stranger are second `matrix_sdk::Client`s with their own devices and stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::approval::{ApprovalId, Choice, Decision};
use bridge::channel::{Answer, Channel, MessageRef, Reach, Target};
use bridge::store::{SqliteStore, Store};
use channels::matrix::{Matrix, MatrixConfig, Options, PROMPT_KEY, Reply, render};
use serde_json::Value;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::conformance::{
    FaultyFixture, Fixture, PromptState, ReachLog, Running, approval, down, hostile_bulletin,
};
use testkit::fault_proxy::FaultProxy;
use testkit::openclaw::{Gateway, GatewayConfig, Operator};
use testkit::service_faults::Faults;
use testkit::synapse::matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use testkit::synapse::{MatrixUser, Synapse};

pub(crate) const BOT_PASSWORD: &str = "bot-password-1";
const WAIT: Duration = Duration::from_secs(20);

/// A homeserver with the bot's account, an owner and a stranger (both logged in).
pub(crate) struct Accounts {
    pub(crate) hs: Synapse,
    pub(crate) bot: String,
    pub(crate) owner: MatrixUser,
    pub(crate) stranger: MatrixUser,
}

pub(crate) async fn accounts() -> Accounts {
    let hs = Synapse::start().await.expect("start Synapse");
    let bot = hs.register("bot", BOT_PASSWORD, false).await.unwrap();
    hs.register("owner", "owner-password", false).await.unwrap();
    hs.register("stranger", "stranger-password", false)
        .await
        .unwrap();
    let (owner, stranger) = tokio::join!(
        MatrixUser::login(&hs, "owner", "owner-password"),
        MatrixUser::login(&hs, "stranger", "stranger-password")
    );
    Accounts {
        hs,
        bot,
        owner: owner.unwrap(),
        stranger: stranger.unwrap(),
    }
}

fn split(message: &str) -> (OwnedRoomId, OwnedEventId) {
    let (r, e) = message.split_once('|').expect("<room>|<event>");
    (r.try_into().unwrap(), e.try_into().unwrap())
}

/// What a reader of the room sees of one prompt.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) event_id: OwnedEventId,
    encrypted: bool,
    pub(crate) body: String,
    pub(crate) html: String,
    /// The bot's live reactions, in order.
    pub(crate) keys: Vec<String>,
    /// An `m.notice`, which clients do not notify for.
    pub(crate) notice: bool,
}

/// The prompt `event` (or the bot's prompt for approval `id`) as `user` sees it now; waits
/// until every bot event around it is decrypted.
pub(crate) async fn seen(
    user: &MatrixUser,
    room: &OwnedRoomId,
    bot: &str,
    find: impl Fn(&Value) -> bool,
    what: &str,
) -> Seen {
    let deadline = Instant::now() + WAIT;
    loop {
        let tl = user.timeline(room).await.unwrap_or_default();
        let utd = tl.iter().any(|v| v["utd"] == true && v["sender"] == bot);
        if let Some(p) = tl
            .iter()
            .find(|v| v["sender"] == bot && v["type"] == "m.room.message" && find(v))
            && !utd
        {
            let id = p["event_id"].as_str().unwrap().to_owned();
            let mut body = p["content"]["body"].as_str().unwrap_or_default().to_owned();
            let mut html = p["content"]["formatted_body"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for e in tl.iter().filter(|v| {
                v["sender"] == bot && v["content"]["m.relates_to"]["rel_type"] == "m.replace"
            }) {
                if e["content"]["m.relates_to"]["event_id"] == id.as_str() {
                    body = e["content"]["m.new_content"]["body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    html = e["content"]["m.new_content"]["formatted_body"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            let keys = tl
                .iter()
                .filter(|v| {
                    v["sender"] == bot
                        && v["type"] == "m.reaction"
                        && v["content"]["m.relates_to"]["event_id"] == id.as_str()
                        && v.pointer("/unsigned/redacted_because").is_none()
                })
                .filter_map(|v| {
                    v["content"]["m.relates_to"]["key"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            return Seen {
                event_id: id.try_into().unwrap(),
                encrypted: p["encrypted"] == true,
                body,
                html,
                keys,
                notice: p["content"]["msgtype"] == "m.notice",
            };
        }
        if Instant::now() > deadline {
            panic!("{what}: not visible (decrypted) within {WAIT:?}; timeline: {tl:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn is_prompt_for(id: &ApprovalId) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["content"][PROMPT_KEY]["id"] == id.as_str()
}

// ---- conformance ----

/// The bot's config with the homeserver behind a [`FaultProxy`] (the owner and the
/// stranger reach Synapse directly), and a fresh state directory.
async fn bot_behind_proxy(acc: &Accounts) -> (FaultProxy, MatrixConfig, tempfile::TempDir) {
    let proxy = acc.hs.fault_proxy().await.expect("fault proxy");
    let config: MatrixConfig = serde_json::from_value(serde_json::json!({
        "homeserver": proxy.url(),
        "user_id": acc.bot,
        "password": "env:MATRIX_PASSWORD",
        "allow_from": [acc.owner.user_id.as_str()],
    }))
    .expect("config");
    (proxy, config, tempfile::tempdir().unwrap())
}

pub struct MatrixFixture {
    acc: Accounts,
    /// The bot reaches Synapse through it (the owner and the stranger do not).
    proxy: FaultProxy,
    config: MatrixConfig,
    state: tempfile::TempDir,
    channel: Arc<Matrix>,
    room: OwnedRoomId,
    /// Live reactions sent by the fixture: (user, event, key) → reaction event.
    reactions: Mutex<Vec<(String, OwnedEventId, String, OwnedEventId)>>,
}

impl MatrixFixture {
    pub async fn start() -> MatrixFixture {
        let acc = accounts().await;
        let (proxy, config, state) = bot_behind_proxy(&acc).await;
        let channel = Arc::new(Self::build(&config, &state));
        // The first delivery creates the DM; the owner accepts the invitation meanwhile.
        let dm = Target {
            channel: "matrix".into(),
            chat: acc.owner.user_id.to_string(),
        };
        let warm_up = approval(&Decision::ALL);
        let (first, room) = tokio::join!(channel.deliver(&dm, &warm_up), async {
            let room = acc.owner.wait_invite(WAIT).await.unwrap();
            acc.owner.join(&room).await.unwrap();
            room
        });
        first.expect("first delivery after the owner joined");
        acc.owner
            .invite(&room, &acc.stranger.user_id)
            .await
            .unwrap();
        let r = acc.stranger.wait_invite(WAIT).await.unwrap();
        acc.stranger.join(&r).await.unwrap();
        MatrixFixture {
            acc,
            proxy,
            config,
            state,
            channel,
            room,
            reactions: Mutex::new(Vec::new()),
        }
    }

    fn build(config: &MatrixConfig, state: &tempfile::TempDir) -> Matrix {
        let options = Options {
            sync_timeout: Duration::from_secs(5),
            join_poll: Duration::from_millis(100),
            ..Options::default()
        };
        Matrix::with_options(config, BOT_PASSWORD, state.path(), options).expect("matrix channel")
    }

    fn user(&self, id: &str) -> &MatrixUser {
        if id == self.acc.owner.user_id.as_str() {
            &self.acc.owner
        } else {
            &self.acc.stranger
        }
    }

    async fn react(&self, prompt: &MessageRef, user: &str, key: &str) {
        let (room, event) = split(&prompt.message);
        let u = self.user(user);
        // As in Element: pressing your own reaction again first takes it back.
        let previous = {
            let mut r = self.reactions.lock().unwrap();
            let i = r
                .iter()
                .position(|(who, ev, k, _)| who == user && *ev == event && k == key);
            i.map(|i| r.remove(i).3)
        };
        if let Some(p) = previous {
            u.redact(&room, &p).await.unwrap();
        }
        let id = u.react(&room, &event, key).await.unwrap();
        self.reactions
            .lock()
            .unwrap()
            .push((user.to_owned(), event, key.to_owned(), id));
    }
}

impl Fixture for MatrixFixture {
    /// A reaction is on one prompt, which names the approval; it claims no kind.
    fn press_carries_kind(&self) -> bool {
        false
    }

    /// Only prompts carry reactions to press; a grant's use line says `/revoke <id>`.
    fn has_buttons(&self) -> bool {
        false
    }

    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(Self::build(&self.config, &self.state))
    }

    fn owner(&self) -> String {
        self.acc.owner.user_id.to_string()
    }

    fn stranger(&self) -> String {
        self.acc.stranger.user_id.to_string()
    }

    fn dm(&self) -> Target {
        Target {
            channel: "matrix".into(),
            chat: self.owner(),
        }
    }

    async fn press(&self, prompt: &MessageRef, user: &str, choice: Choice) {
        self.react(prompt, user, &choice.emoji()).await;
    }

    async fn press_raw(&self, prompt: &MessageRef, user: &str, raw: &str) {
        self.react(prompt, user, raw).await;
    }

    async fn type_in_dm(&self, user: &str, text: &str) {
        self.user(user).send_text(&self.room, text).await.unwrap();
    }

    fn forged_payloads(&self) -> Vec<String> {
        // A reaction carries nothing but its key, and keys that are no decision are ignored
        // on purpose (people react 👍 to say "seen"): see unknown_reactions_are_ignored.
        Vec::new()
    }

    async fn prompt_state(&self, prompt: &MessageRef) -> PromptState {
        let (room, event) = split(&prompt.message);
        let s = seen(
            &self.acc.owner,
            &room,
            &self.acc.bot,
            |v| v["event_id"] == event.as_str(),
            "prompt",
        )
        .await;
        let decisions = s
            .keys
            .iter()
            .map(|k| render::choice_of(k).expect("seeded keys are decisions"))
            .collect();
        PromptState {
            text: s.body,
            decisions,
            revokes: Vec::new(),
            silent: s.notice,
        }
    }

    async fn delete(&self, prompt: &MessageRef) {
        let (room, event) = split(&prompt.message);
        self.acc.owner.redact(&room, &event).await.unwrap();
    }

    async fn told(&self, answer: &Answer) -> String {
        let Reply { room, event } = answer.reply.handle::<Reply>().expect("a Matrix reply");
        let deadline = Instant::now() + WAIT;
        loop {
            let tl = self.acc.owner.timeline(room).await.unwrap_or_default();
            if let Some(m) = tl.iter().find(|v| {
                v["sender"] == self.acc.bot.as_str()
                    && v["utd"] == false
                    && v["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event.as_str()
            }) {
                return m["content"]["body"].as_str().unwrap_or_default().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no reply to {event} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl FaultyFixture for MatrixFixture {
    fn faults(&self) -> &Faults {
        self.proxy.faults()
    }

    /// Prompts for `id` in the DM that no finishing edit replaced: each can still be
    /// answered by a reaction.
    async fn live_prompts(&self, id: &ApprovalId) -> usize {
        let bot = self.acc.bot.as_str();
        let deadline = Instant::now() + WAIT;
        let tl = loop {
            let tl = self
                .acc
                .owner
                .timeline(&self.room)
                .await
                .unwrap_or_default();
            if !tl.iter().any(|v| v["utd"] == true && v["sender"] == bot) {
                break tl;
            }
            assert!(Instant::now() < deadline, "bot events stay undecryptable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let from_bot = || tl.iter().filter(|v| v["sender"] == bot);
        let replaced: Vec<&Value> = from_bot()
            .filter(|v| v["content"]["m.relates_to"]["rel_type"] == "m.replace")
            .map(|v| &v["content"]["m.relates_to"]["event_id"])
            .collect();
        from_bot()
            .filter(|v| v["type"] == "m.room.message" && is_prompt_for(id)(v))
            .filter(|v| !replaced.contains(&&v["event_id"]))
            .count()
    }
}

mod conformance {
    use super::MatrixFixture;
    testkit::channel_conformance!(MatrixFixture::start());
    testkit::channel_fault_conformance!(MatrixFixture::start());
}

/// The first prompt to an owner creates the direct room. When the `createRoom` answer is
/// lost after Synapse made the room (connection dropped), the retry uses that room: the
/// owner gets one invitation, and the prompt lands in the room they joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_room_answer_makes_no_second_room() {
    let acc = accounts().await;
    let (proxy, config, state) = bot_behind_proxy(&acc).await;
    let matrix = Arc::new(MatrixFixture::build(&config, &state));
    let ch: Arc<dyn Channel> = matrix.clone();
    ch.health().await.expect("log in");
    let run = Running::start(ch.clone());
    let dm = Target {
        channel: "matrix".into(),
        chat: acc.owner.user_id.to_string(),
    };
    let a = approval(&Decision::ALL);
    proxy
        .faults()
        .drop_next(1, testkit::service_faults::Moment::AfterProcessing);
    let first = ch.deliver(&dm, &a).await;
    assert!(
        matches!(&first, Err(e) if e.is_transient()),
        "the lost answer is a transient failure: {first:?}"
    );
    assert_eq!(proxy.faults().injected(), 1, "the createRoom call was hit");
    // The engine's retry, while the owner accepts the invitation.
    let (second, room) = tokio::join!(ch.deliver(&dm, &a), async {
        let room = acc.owner.wait_invite(WAIT).await.unwrap();
        acc.owner.join(&room).await.unwrap();
        room
    });
    let prompt = second.expect("the retry delivers");
    assert!(
        prompt.message.starts_with(&format!("{room}|")),
        "the prompt is in the room the owner joined: {}",
        prompt.message
    );
    // No second room was made: no invitation is left, and the bot is in one room.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let invites: Vec<String> = acc
        .owner
        .client
        .invited_rooms()
        .iter()
        .map(|r| r.room_id().to_string())
        .collect();
    assert_eq!(invites, Vec::<String>::new(), "a second invitation");
    let bot_rooms = matrix.client().await.unwrap().joined_rooms().len();
    assert_eq!(bot_rooms, 1, "rooms the bot is in");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reactions_and_reactions_on_other_events_are_ignored() {
    let f = MatrixFixture::start().await;
    let ch = f.channel();
    let mut run = Running::start(ch.clone());
    let a = approval(&Decision::ALL);
    let prompt = ch.deliver(&f.dm(), &a).await.unwrap();
    f.press_raw(&prompt, &f.owner(), "👍").await;
    let text = f
        .acc
        .owner
        .send_text(&f.room, "just chatting")
        .await
        .unwrap();
    f.acc.owner.react(&f.room, &text, "✅").await.unwrap();
    // Variants of ours still count: with U+FE0F and a skin tone.
    f.press_raw(&prompt, &f.owner(), "✅\u{FE0F}").await;
    let ans = run.next("the ✅️ after the ignored ones").await;
    assert_eq!(
        ans.request,
        bridge::channel::Request::Decide {
            id: a.id.clone(),
            choice: Decision::AllowOnce.into(),
            kind: None
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), run.answers.recv())
            .await
            .is_err(),
        "nothing else decodes"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_the_session_with_the_same_device() {
    let f = MatrixFixture::start().await;
    let before = f.channel.health().await.unwrap();
    let again = f.restarted();
    let after = again.health().await.unwrap();
    let device = |h: &str| {
        h.split("(device ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(device(&before), device(&after), "{before} / {after}");
    assert!(
        after.contains("join in"),
        "health reports the owner's membership: {after}"
    );
    let devices = f
        .acc
        .owner
        .client
        .encryption()
        .get_user_devices(&OwnedUserId::try_from(f.acc.bot.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        devices.devices().count(),
        1,
        "one bot device, not one per start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_answers_not_from_a_verified_device() {
    let f = MatrixFixture::start().await;
    let mut strict_config = f.config.clone();
    strict_config.strict = true;
    let strict: Arc<dyn Channel> = Arc::new(MatrixFixture::build(&strict_config, &f.state));
    let a = approval(&Decision::ALL);
    let prompt = f.channel().deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(strict.clone());
    // The owner's device is not verified by the bot: neither a reaction nor typed text counts.
    f.press(&prompt, &f.owner(), Decision::AllowOnce.into())
        .await;
    let ans = run.next("reaction in strict mode").await;
    assert!(
        matches!(&ans.request, bridge::channel::Request::Malformed { why, .. } if why.contains("verified device")),
        "{:?}",
        ans.request
    );
    f.type_in_dm(&f.owner(), &format!("/approve {} deny", a.id))
        .await;
    let ans = run.next("typed answer in strict mode").await;
    assert!(
        matches!(ans.request, bridge::channel::Request::Malformed { .. }),
        "{:?}",
        ans.request
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_login_uses_the_tokens_device_and_keeps_it() {
    let hs = Synapse::start().await.expect("start Synapse");
    let bot = hs.register("bot", BOT_PASSWORD, false).await.unwrap();
    hs.register("owner", "owner-password", false).await.unwrap();
    let (token, device) = hs.login_token("bot", BOT_PASSWORD).await.unwrap();
    let config: MatrixConfig = serde_json::from_value(serde_json::json!({
        "homeserver": hs.url(),
        "user_id": bot,
        "access_token": "env:MATRIX_ACCESS_TOKEN",
        "allow_from": ["@owner:localhost"],
    }))
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    for start in ["first start", "restart"] {
        let ch = Matrix::with_options(&config, &token, state.path(), Options::default()).unwrap();
        let h = ch.health().await.unwrap();
        assert!(h.contains(&format!("(device {device})")), "{start}: {h}");
        assert!(
            h.contains("@owner:localhost: no direct room yet"),
            "{start}: {h}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.path().join("matrix/session.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the saved session holds a token");
}

// ---- the whole bridge ----

struct World {
    gw: Gateway,
    acc: Accounts,
    op: Operator,
    bridge: BridgeProcess,
    room: Option<OwnedRoomId>,
}

pub(crate) fn matrix_toml(acc: &Accounts) -> String {
    format!(
        "[matrix]\nhomeserver = \"{}\"\nuser_id = \"{}\"\npassword = \"env:AB_TEST_MATRIX_PASSWORD\"\nallow_from = [\"{}\"]\n",
        acc.hs.url(),
        acc.bot,
        acc.owner.user_id
    )
}

async fn world_with(telegram: Option<&testkit::fake_telegram::FakeTelegram>) -> World {
    let (gw, acc) = tokio::join!(Gateway::start(GatewayConfig::default()), accounts());
    let gw = gw.expect("start the OpenClaw gateway");
    let mut setup = match telegram {
        Some(tg) => BridgeSetup::telegram_owner(&gw, tg, 111_111_111),
        None => BridgeSetup {
            gateway_url: gw.url(),
            gateway_token: gw.token().to_owned(),
            telegram_api_url: String::new(),
            bot_token: String::new(),
            allow_from: Vec::new(),
            targets: None,
            extra_toml: String::new(),
            env: Vec::new(),
        },
    };
    setup.extra_toml = matrix_toml(&acc);
    setup.env = vec![("AB_TEST_MATRIX_PASSWORD".into(), BOT_PASSWORD.into())];
    let bridge = BridgeProcess::start_healthy(&bridge_exe(), setup)
        .await
        .unwrap();
    let op = Operator::connect(&gw, "requester").await.unwrap();
    World {
        gw,
        acc,
        op,
        bridge,
        room: None,
    }
}

/// The bridge binary: `AB_BRIDGE_EXE` when set (a copy taken right after the build, safe
/// from concurrent builds sharing the target dir), else cargo's.
pub(crate) fn bridge_exe() -> std::path::PathBuf {
    std::env::var_os("AB_BRIDGE_EXE")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_approval-bridge").into())
}

async fn world() -> World {
    world_with(None).await
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- bridge log ----\n{}\n---- gateway log: {} ----",
                self.bridge.log(),
                self.gw.log_path().display()
            );
        }
    }
}

impl World {
    /// The owner accepts the bot's invitation (once).
    async fn join(&mut self) -> OwnedRoomId {
        if let Some(r) = &self.room {
            return r.clone();
        }
        let room = self.acc.owner.wait_invite(WAIT).await.unwrap();
        self.acc.owner.join(&room).await.unwrap();
        self.room = Some(room.clone());
        room
    }

    /// The prompt for `id` once its four reactions are seeded (✅ ❌ ♾️ and the default
    /// `[trust] durations = ["1h"]`'s ⏳1h).
    async fn prompt(&mut self, id: &ApprovalId) -> Seen {
        let room = self.join().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let s = seen(
                &self.acc.owner,
                &room,
                &self.acc.bot,
                is_prompt_for(id),
                "prompt",
            )
            .await;
            if s.keys.len() == 4 || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the prompt for `id` shows an outcome (no reactions left).
    async fn finished(&self, id: &ApprovalId) -> Seen {
        let room = self.room.clone().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let s = seen(
                &self.acc.owner,
                &room,
                &self.acc.bot,
                is_prompt_for(id),
                "prompt",
            )
            .await;
            if s.keys.is_empty() && !s.body.contains("/approve") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "prompt not finished within {WAIT:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn audit(&self) -> Vec<bridge::store::AuditRecord> {
        SqliteStore::open(&self.bridge.state_dir().join("bridge.sqlite"))
            .unwrap()
            .audit_log(None)
            .unwrap()
    }

    fn bot_device(&self) -> String {
        let text =
            std::fs::read_to_string(self.bridge.state_dir().join("matrix/session.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["device_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_reacts_in_the_encrypted_dm_to_decide_each_way() {
    let mut w = world().await;
    // ♾ without U+FE0F, as some clients send it; ✅ with one.
    for (decision, key) in [
        (Decision::AllowOnce, "✅\u{FE0F}"),
        (Decision::Deny, "❌"),
        (Decision::AllowAlways, "♾"),
    ] {
        let asked = Instant::now();
        let req =
            w.op.request_exec(&format!("echo {decision}"), 60_000)
                .await
                .unwrap();
        let p = w.prompt(&req.id).await;
        let visible = asked.elapsed();
        assert!(p.encrypted, "prompts are sent encrypted");
        // The default `[trust] durations = ["1h"]` seeds its ⏳1h after the decisions.
        assert_eq!(p.keys, ["✅", "❌", "♾️", "⏳1h"], "seeded reactions");
        assert!(
            p.body.contains(&format!("echo {decision}"))
                && p.body.contains(&format!("/approve {}", req.id)),
            "{}",
            p.body
        );
        let room = w.room.clone().unwrap();
        let reacted = Instant::now();
        w.acc.owner.react(&room, &p.event_id, key).await.unwrap();
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(decision));
        let decided = reacted.elapsed();
        let done = w.finished(&req_id(&p)).await;
        assert!(
            done.body.contains(decision.past()) && done.body.contains(w.acc.owner.user_id.as_str()),
            "{}",
            done.body
        );
        assert!(done.body.contains("via matrix"), "{}", done.body);
        eprintln!(
            "timing {decision}: requested → encrypted prompt visible to the owner {visible:?}; reaction → decision {decided:?}"
        );
    }
}

fn req_id(p: &Seen) -> ApprovalId {
    let id = p
        .body
        .split("/approve ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    ApprovalId(id.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn stranger_in_the_dm_cannot_decide_and_is_audited() {
    let mut w = world().await;
    let req =
        w.op.request_exec("rm -rf /important", 60_000)
            .await
            .unwrap();
    let p = w.prompt(&req.id).await;
    let room = w.room.clone().unwrap();
    w.acc
        .owner
        .invite(&room, &w.acc.stranger.user_id)
        .await
        .unwrap();
    let r = w.acc.stranger.wait_invite(WAIT).await.unwrap();
    w.acc.stranger.join(&r).await.unwrap();
    w.acc
        .stranger
        .react(&room, &p.event_id, "✅")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        if let Some(r) = w.audit().into_iter().find(|r| r.event == "refused") {
            break r;
        }
        assert!(Instant::now() < deadline, "stranger's reaction not audited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        refused.actor.as_deref(),
        Some(w.acc.stranger.user_id.as_str())
    );
    let still = seen(
        &w.acc.owner,
        &room,
        &w.acc.bot,
        is_prompt_for(&req.id),
        "prompt",
    )
    .await;
    assert_eq!(still.keys.len(), 4, "still pending, still actionable");
    w.acc.owner.react(&room, &p.event_id, "❌").await.unwrap();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_text_in_the_dm_decides_and_a_strangers_does_not() {
    let mut w = world().await;
    let req = w.op.request_exec("echo typed", 60_000).await.unwrap();
    let id = req.id.clone();
    w.prompt(&req.id).await;
    let room = w.room.clone().unwrap();
    w.acc
        .owner
        .invite(&room, &w.acc.stranger.user_id)
        .await
        .unwrap();
    let r = w.acc.stranger.wait_invite(WAIT).await.unwrap();
    w.acc.stranger.join(&r).await.unwrap();
    w.acc
        .stranger
        .send_text(&room, &format!("/approve {} allow-once", req.id))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !w.audit().iter().any(|r| {
        r.event == "refused" && r.actor.as_deref() == Some(w.acc.stranger.user_id.as_str())
    }) {
        assert!(Instant::now() < deadline, "stranger's /approve not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.acc
        .owner
        .send_text(&room, &format!("/approve {} deny", req.id))
        .await
        .unwrap();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    let done = w.finished(&id).await;
    assert!(done.body.contains("Denied"), "{}", done.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn html_in_the_command_is_shown_literally() {
    let mut w = world().await;
    let cmd = "echo '<b>bold</b> <a href=\"https://evil\">@room</a> & done'";
    let req = w.op.request_exec(cmd, 60_000).await.unwrap();
    let p = w.prompt(&req.id).await;
    assert!(
        p.body.contains(cmd),
        "plain body carries the command verbatim: {}",
        p.body
    );
    assert!(
        !p.html.contains("<b>bold") && !p.html.contains("<a "),
        "no markup from the request: {}",
        p.html
    );
    assert!(p.html.contains(&render::escape(cmd)), "{}", p.html);
    let room = w.room.clone().unwrap();
    w.acc.owner.react(&room, &p.event_id, "❌").await.unwrap();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_device_sends_no_duplicate_and_old_prompts_still_decide() {
    let mut w = world().await;
    let device = w.bot_device();
    let req =
        w.op.request_exec("echo across restarts", 120_000)
            .await
            .unwrap();
    let id = req.id.clone();
    let p = w.prompt(&req.id).await;
    assert!(
        w.bridge.terminate(Duration::from_secs(10)).await.unwrap(),
        "clean exit"
    );
    w.bridge.restart().await.unwrap();
    w.bridge
        .wait_healthy(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(w.bot_device(), device, "same device id after a restart");
    let room = w.room.clone().unwrap();
    w.acc.owner.react(&room, &p.event_id, "✅").await.unwrap();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    w.finished(&id).await;
    let prompts = w
        .acc
        .owner
        .timeline(&room)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| is_prompt_for(&id)(v))
        .count();
    assert_eq!(prompts, 1, "no duplicate prompt after the restart");
    let devices = w
        .acc
        .owner
        .client
        .encryption()
        .get_user_devices(&OwnedUserId::try_from(w.acc.bot.as_str()).unwrap())
        .await
        .unwrap();
    assert_eq!(devices.devices().count(), 1, "one bot device");
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_waits_for_the_owner_to_join_and_expired_ones_never_show() {
    let mut w = world().await;
    let expiring =
        w.op.request_exec("echo expires before the owner joins", 3_000)
            .await
            .unwrap();
    let room = w.acc.owner.wait_invite(WAIT).await.unwrap();
    assert_eq!(expiring.outcome(WAIT).await.unwrap(), None, "expired");
    let req =
        w.op.request_exec("echo after joining", 60_000)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.acc.owner.join(&room).await.unwrap();
    w.room = Some(room.clone());
    let p = w.prompt(&req.id).await;
    assert_eq!(p.keys.len(), 4, "three decisions and the default ⏳1h");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tl = w.acc.owner.timeline(&room).await.unwrap();
    let live_expired = tl
        .iter()
        .any(|v| is_prompt_for(&expiring_id(&tl, &req.id))(v));
    assert!(
        !live_expired,
        "no prompt for the approval that expired before the join"
    );
    w.acc.owner.react(&room, &p.event_id, "✅").await.unwrap();
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
}

/// Any approval id among the bot's prompts other than `keep`.
fn expiring_id(tl: &[Value], keep: &ApprovalId) -> ApprovalId {
    tl.iter()
        .filter_map(|v| v["content"][PROMPT_KEY]["id"].as_str())
        .find(|id| *id != keep.as_str())
        .map(|id| ApprovalId(id.to_owned()))
        .unwrap_or_else(|| ApprovalId("none".into()))
}

#[tokio::test(flavor = "multi_thread")]
async fn decided_on_telegram_the_matrix_prompt_shows_it() {
    let tg = testkit::fake_telegram::FakeTelegram::start("123456:TEST-token").await;
    let mut w = world_with(Some(&tg)).await;
    let req =
        w.op.request_exec("echo two channels", 60_000)
            .await
            .unwrap();
    let id = req.id.clone();
    let p = w.prompt(&req.id).await;
    assert_eq!(p.keys.len(), 4, "three decisions and the default ⏳1h");
    let needle = req.id.as_str().to_owned();
    let m = tg
        .wait_for(WAIT, "telegram prompt", |v| {
            v.bot_messages(111_111_111)
                .into_iter()
                .find(|m| m.raw.contains(&needle))
                .cloned()
        })
        .await;
    let data = m
        .buttons()
        .into_iter()
        .find(|(_, d)| d.ends_with("allow-once"))
        .unwrap()
        .1;
    tg.press(111_111_111, 111_111_111, m.message_id, &data);
    assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
    let done = w.finished(&id).await;
    assert!(
        done.body.contains("Allowed once") && done.body.contains("via telegram"),
        "{}",
        done.body
    );
}

// Issue 14, on a real Synapse: a bulletin is a plain `m.text` (no formatted body, mentioning
// nobody), so clients notify; a locked account (401 M_USER_LOCKED on sync) sets the channel
// down once, unlocking it sets it up after the next sync; a logged-out token
// (M_UNKNOWN_TOKEN) sets it down with the fix to log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletins_are_plain_text_and_a_refused_sync_is_down() {
    let f = MatrixFixture::start().await;
    let alert = hostile_bulletin();
    let post = f.channel.post(&f.dm(), &alert).await.unwrap();
    let (room, event) = split(&post.message);
    assert_eq!(room, f.room, "in the owner's DM");
    let deadline = Instant::now() + WAIT;
    let content = loop {
        let tl = f.acc.owner.timeline(&room).await.unwrap_or_default();
        // Decrypted (the DM is encrypted): until then it is no `m.room.message`.
        if let Some(v) = tl
            .iter()
            .find(|v| v["event_id"] == event.as_str() && v["type"] == "m.room.message")
        {
            break v["content"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the owner never saw the bulletin"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(content["msgtype"], "m.text", "a message clients notify for");
    assert_eq!(content["body"], alert.text().as_str());
    assert!(content.get("formatted_body").is_none(), "{content}");
    assert_eq!(content["m.mentions"], serde_json::json!({}));

    let log = ReachLog::start(&*f.channel);
    let run = Running::start(f.channel.clone());
    f.acc
        .hs
        .register("admin", "admin-password", true)
        .await
        .unwrap();
    let (admin, _) = f
        .acc
        .hs
        .login_token("admin", "admin-password")
        .await
        .unwrap();
    f.acc.hs.set_locked(&admin, &f.acc.bot, true).await.unwrap();
    let seen = log.wait(1, Duration::from_secs(30)).await;
    assert_eq!(
        seen[0],
        down(
            "the homeserver has locked the bot's account (M_USER_LOCKED)",
            "ask the homeserver's admin to unlock the account in matrix.user_id"
        )
    );
    f.acc
        .hs
        .set_locked(&admin, &f.acc.bot, false)
        .await
        .unwrap();
    assert_eq!(log.wait(2, Duration::from_secs(60)).await[1], Reach::Up);

    let token = f
        .channel
        .client()
        .await
        .unwrap()
        .access_token()
        .expect("logged in");
    f.acc.hs.logout(&token).await.unwrap();
    let seen = log.wait(3, Duration::from_secs(60)).await;
    assert_eq!(
        seen[2],
        down(
            "the homeserver no longer accepts the bot's access token (M_UNKNOWN_TOKEN)",
            "log the bot in again: put a new token in matrix.access_token, or (with a password) \
             delete matrix/session.json in the bridge's state directory; then restart the bridge"
        )
    );
    run.stop().await;
    assert_eq!(log.values().len(), 3, "no flapping: {:?}", log.values());
}
