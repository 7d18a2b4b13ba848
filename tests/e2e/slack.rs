//! Slack adapter against the fake Slack (Web API + Socket Mode on 127.0.0.1): the
//! conformance suite and the Slack specifics of issue 4 (Block Kit, escaping, acks,
//! reconnects, 429s); then the whole bridge — real binary, real OpenClaw gateway, fake
//! Slack standing in for the owner's workspace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::approval::{Approval, ApprovalId, Choice, Decision, Kind};
use bridge::bulletin::Bulletin;
use bridge::channel::{
    Answer, Channel, ChannelError, MessageRef, Notice, Reach, Refusal, Request, Target,
};
use channels::slack::{Options, Reply, Slack, SlackConfig, codec};
use testkit::conformance::{
    FaultyFixture, Fixture, PromptState, ReachLog, Running, approval, controls, down,
    hostile_bulletin,
};
use testkit::fake_slack::{self, FakeSlack};
use testkit::service_faults::Faults;

const BOT_TOKEN: &str = "xoxb-1111-2222-faketoken";
const APP_TOKEN: &str = "xapp-1-A0FAKEAPP-3333-fakeapptoken";
const OWNER: &str = "U0OWNER001";
const STRANGER: &str = "U0STRANGER";
const WAIT: Duration = Duration::from_secs(10);

pub struct SlackFixture {
    pub fake: FakeSlack,
    config: SlackConfig,
    channel: Arc<Slack>,
}

impl SlackFixture {
    pub async fn start() -> SlackFixture {
        let fake = FakeSlack::start(BOT_TOKEN, APP_TOKEN).await;
        let config: SlackConfig = serde_json::from_value(serde_json::json!({
            "bot_token": "env:SLACK_BOT_TOKEN",
            "app_token": "env:SLACK_APP_TOKEN",
            "api_url": fake.url(),
            "allow_from": [OWNER],
        }))
        .expect("config");
        let channel = Arc::new(Self::build(&config));
        SlackFixture {
            fake,
            config,
            channel,
        }
    }

    fn build(config: &SlackConfig) -> Slack {
        let options = Options {
            backoff: Duration::from_millis(100),
            ..Options::default()
        };
        Slack::with_options(config, BOT_TOKEN, APP_TOKEN, options).expect("slack channel")
    }

    fn ids(prompt: &MessageRef) -> (String, String) {
        let (c, ts) = prompt.message.split_once('|').expect("<channel>|<ts>");
        (c.to_owned(), ts.to_owned())
    }

    fn message(&self, prompt: &MessageRef) -> fake_slack::Message {
        let (c, ts) = Self::ids(prompt);
        self.fake.message(&c, &ts).expect("prompt exists")
    }
}

/// Visible text without zero-width spaces (a reader does not see them).
fn seen(text: &str) -> String {
    text.replace('\u{200B}', "")
}

impl FaultyFixture for SlackFixture {
    fn faults(&self) -> &Faults {
        self.fake.faults()
    }
    async fn live_prompts(&self, id: &ApprovalId) -> usize {
        self.fake
            .bot_messages(&fake_slack::dm_channel(OWNER))
            .iter()
            .filter(|m| {
                !m.deleted
                    && m.buttons()
                        .iter()
                        .any(|b| b.action_id.contains(id.as_str()))
            })
            .count()
    }
}

impl Fixture for SlackFixture {
    /// Slack has no silent send: every message notifies as the user's settings say.
    fn sends_silently(&self) -> bool {
        false
    }

    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(Self::build(&self.config))
    }

    fn owner(&self) -> String {
        OWNER.into()
    }

    fn stranger(&self) -> String {
        STRANGER.into()
    }

    fn dm(&self) -> Target {
        Target {
            channel: "slack".into(),
            chat: OWNER.into(),
        }
    }

    async fn press(&self, prompt: &MessageRef, user: &str, choice: Choice) {
        let (c, ts) = Self::ids(prompt);
        let m = self.message(prompt);
        let b = m
            .buttons()
            .into_iter()
            .find(|b| b.label == choice.label())
            .unwrap_or_else(|| panic!("no {choice} button on {:?}", m.buttons()));
        self.fake.press(user, &c, &ts, &b.action_id, &b.value);
    }

    async fn press_raw(&self, prompt: &MessageRef, user: &str, raw: &str) {
        let (c, ts) = Self::ids(prompt);
        self.fake.press(user, &c, &ts, raw, raw);
    }

    async fn type_in_dm(&self, user: &str, text: &str) {
        self.fake
            .send_text(user, &fake_slack::dm_channel(user), text);
    }

    fn forged_payloads(&self) -> Vec<String> {
        let id = uuid::Uuid::new_v4();
        vec![
            String::new(),
            "hello".into(),
            format!("exec_approve:{id}:allow"),
            format!("exec_approve:{id}:yes-please"),
            format!("exec_approve:{id}:allow-once{}", "x".repeat(300)), // over 255 characters
            format!("evil_approve:{id}:allow-once"),
            "exec_approve:<@U123>:deny".into(),
            "plugin_approve::deny".into(),
        ]
    }

    async fn prompt_state(&self, prompt: &MessageRef) -> PromptState {
        let m = self.message(prompt);
        let (decisions, revokes) = controls(m.buttons().into_iter().map(|b| {
            let action = codec::decode(&b.action_id, &b.value).expect("our buttons decode");
            (b.label, action)
        }));
        PromptState {
            text: seen(&m.text),
            decisions,
            revokes,
            silent: false,
        }
    }

    async fn delete(&self, prompt: &MessageRef) {
        let (c, ts) = Self::ids(prompt);
        self.fake.delete_message(&c, &ts);
    }

    async fn told(&self, answer: &Answer) -> String {
        let (c, ts) = match answer.reply.handle::<Reply>().expect("a Slack reply") {
            Reply::Ephemeral { channel, user, .. } => {
                let (c, u) = (channel.clone(), user.clone());
                // notify has returned: the latest ephemeral to this user here is the answer.
                return self
                    .fake
                    .wait_for(WAIT, "ephemeral answer", |v| {
                        v.ephemerals()
                            .iter()
                            .rev()
                            .find(|e| e.channel == c && e.user == u)
                            .map(|e| e.text.clone())
                    })
                    .await;
            }
            Reply::Message { channel, ts } => (channel.clone(), ts.clone()),
        };
        self.fake
            .wait_for(WAIT, "reply to the command", |v| {
                v.bot_messages(&c)
                    .into_iter()
                    .rev()
                    .find(|m| m.ts > ts)
                    .map(|m| m.text.clone())
            })
            .await
    }
}

mod conformance {
    testkit::channel_conformance!(super::SlackFixture::start());
    testkit::channel_fault_conformance!(super::SlackFixture::start());
}

fn exec(command: &str, allowed: &[Decision]) -> Approval {
    Approval {
        command: command.to_owned(),
        ..approval(allowed)
    }
}

const HOSTILE: &str = "echo <!channel> <!here> <@U123> <#C999> <https://evil.example|click me> ``` *bold* _it_ ~s~ ``` `tick` &amp; && done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_is_block_kit_with_styled_buttons_in_the_owners_dm() {
    let f = SlackFixture::start().await;
    let a = exec(
        "ls -la",
        &[Decision::AllowOnce, Decision::AllowAlways, Decision::Deny],
    );
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(
        prompt.message.split('|').next(),
        Some(fake_slack::dm_channel(OWNER).as_str())
    );
    let m = f.message(&prompt);
    let buttons: Vec<(String, Option<String>, String)> = m
        .buttons()
        .into_iter()
        .map(|b| (b.label, b.style, b.value))
        .collect();
    assert_eq!(
        buttons,
        vec![
            (
                "Allow once".into(),
                Some("primary".into()),
                format!("exec_approve:{}:allow-once", a.id)
            ),
            (
                "Allow always".into(),
                None,
                format!("exec_approve:{}:allow-always", a.id)
            ),
            (
                "Deny".into(),
                Some("danger".into()),
                format!("exec_approve:{}:deny", a.id)
            ),
        ]
    );
    for want in [
        "Exec approval",
        "ls -la",
        "cwd /srv",
        "agent main",
        "host gateway",
        "⚠️ deletes files",
        "expires",
    ] {
        assert!(m.text.contains(want), "{want:?} in {}", m.text);
    }
    let opened = f.fake.calls_to("conversations.open");
    assert_eq!(opened.last().unwrap().str("users"), Some(OWNER));
    let post = f.fake.calls_to("chat.postMessage");
    assert_eq!(post.len(), 1);
    assert_eq!(post[0].token, BOT_TOKEN);
    assert_eq!(post[0].params["unfurl_links"], false);
    eprintln!("measured: deliver (conversations.open + chat.postMessage) on loopback in {took:?}");
}

// Issue 4: hostile command text renders literally — no mention, broadcast, channel link
// or link can come from request text, and the code block cannot be closed early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_command_text_is_rendered_literally() {
    let f = SlackFixture::start().await;
    let mut a = exec(HOSTILE, &Decision::ALL);
    a.cwd = Some("/tmp/<@U999>`x`".into());
    a.warnings = vec!["<!everyone> & <https://x|y>".into()];
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let m = f.message(&prompt);
    assert!(
        m.markup.is_empty(),
        "live tokens from request text: {:?}",
        m.markup
    );
    assert!(
        seen(&m.text).contains(HOSTILE),
        "shown literally:\n{}",
        m.text
    );
    assert!(
        seen(&m.text).contains("<!everyone> & <https://x|y>"),
        "{}",
        m.text
    );
    let code = m.blocks[1]["text"]["text"].as_str().unwrap();
    assert_eq!(
        code.matches("```").count(),
        2,
        "exactly one code block: {code:?}"
    );
    assert!(
        !m.fallback.contains('<'),
        "notification text escaped too: {}",
        m.fallback
    );
    // Finishing keeps it literal.
    let o = bridge::approval::Outcome::Expired { at_ms: 0 };
    f.channel.finish(&prompt, &a, &o).await.unwrap();
    let m = f.message(&prompt);
    assert!(m.markup.is_empty() && m.buttons().is_empty());
    assert!(seen(&m.text).contains(HOSTILE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_acked_within_three_seconds() {
    let f = SlackFixture::start().await;
    let a = approval(&Decision::ALL);
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(f.channel.clone());
    let mut acks = Vec::new();
    for d in Decision::ALL {
        let (c, ts) = SlackFixture::ids(&prompt);
        let data = codec::encode(Kind::Exec, &a.id, d.into()).unwrap();
        let t0 = Instant::now();
        let env = f.fake.press(OWNER, &c, &ts, &data, &data);
        let ans = run.next("press").await;
        let decoded = t0.elapsed();
        assert_eq!(
            ans.request,
            Request::Decide {
                id: a.id.clone(),
                choice: d.into(),
                kind: Some(Kind::Exec)
            }
        );
        let ack = f.fake.wait_ack(&env, WAIT).await;
        assert!(ack < Duration::from_secs(3), "ack after {ack:?}");
        assert_eq!(f.fake.envelope(&env).unwrap().attempts, 1, "no redelivery");
        acks.push((ack, decoded));
    }
    eprintln!("measured: envelope ack / press-to-answer latencies {acks:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_disconnect_message_and_after_a_dropped_socket() {
    let f = SlackFixture::start().await;
    let mut run = Running::start(f.channel.clone());
    f.fake
        .wait_for(WAIT, "first connection", |v| {
            (v.live_sockets() == 1).then_some(())
        })
        .await;
    f.fake.disconnect("refresh_requested");
    f.fake
        .wait_for(WAIT, "second connection", |v| {
            (v.connections() >= 2 && v.live_sockets() >= 1).then_some(())
        })
        .await;
    f.fake
        .send_text(OWNER, &fake_slack::dm_channel(OWNER), "/pending");
    assert_eq!(
        run.next("/pending after refresh").await.request,
        Request::ListPending
    );
    f.fake.drop_sockets();
    // An envelope injected while no socket is up is delivered after the reconnect.
    f.fake
        .send_text(OWNER, &fake_slack::dm_channel(OWNER), "/pending");
    assert_eq!(
        run.next("/pending after a dropped socket").await.request,
        Request::ListPending
    );
    assert!(f.fake.connections() >= 3);
    let opens = f.fake.calls_to("apps.connections.open");
    assert!(
        opens.iter().all(|c| c.token == APP_TOKEN),
        "Socket Mode uses the app token"
    );
    run.stop().await;
}

// Issue 14: a bulletin is a new message in the owner's DM, its text mrkdwn-escaped (no
// live link or mention), without unfurls; edit_post updates that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_is_escaped_text_with_no_live_markup() {
    let f = SlackFixture::start().await;
    let alert = hostile_bulletin();
    let post = f.channel.post(&f.dm(), &alert).await.unwrap();
    let (c, ts) = SlackFixture::ids(&post);
    assert_eq!(c, fake_slack::dm_channel(OWNER), "in the owner's DM");
    let m = f.fake.message(&c, &ts).unwrap();
    assert_eq!(seen(&m.text), alert.text(), "reads literally");
    assert!(
        m.markup.is_empty(),
        "no live link or mention: {:?}",
        m.markup
    );
    assert!(m.buttons().is_empty());
    let sends = f.fake.calls_to("chat.postMessage");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].params["unfurl_links"], false);
    assert_eq!(sends[0].params["unfurl_media"], false);
    assert!(
        sends[0].params.get("thread_ts").is_none(),
        "a new message, not a reply"
    );
    let Bulletin::Alert { problem, since_ms } = alert else {
        unreachable!()
    };
    let over = Bulletin::AlertOver {
        problem,
        since_ms,
        lasted_ms: 180_000,
    };
    f.channel.edit_post(&post, &over).await.unwrap();
    let edited = f.fake.message(&c, &ts).unwrap();
    assert_eq!((edited.edits, seen(&edited.text)), (1, over.text()));
    assert_eq!(f.fake.calls_to("chat.update").len(), 1);
}

// Issue 14: a revoked bot token (auth.test at connect) and a revoked app token
// (apps.connections.open) each set the channel down once, with the fix for that token;
// the next hello sets it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_down_until_the_next_hello() {
    let f = SlackFixture::start().await;
    let log = ReachLog::start(&*f.channel);
    let run = Running::start(f.channel.clone());
    let connected = |n: u32| {
        let fake = &f.fake;
        async move {
            fake.wait_for(WAIT, "a socket", |v| {
                (v.connections() >= n && v.live_sockets() == 1).then_some(())
            })
            .await
        }
    };
    connected(1).await;
    f.fake.revoke_bot_token(true);
    f.fake.disconnect("refresh_requested");
    let seen = log.wait(1, WAIT).await;
    assert_eq!(
        seen[0],
        down(
            "Slack refuses the bot token (token_revoked)",
            "reinstall the Slack app to the workspace (api.slack.com/apps → your app → Install App) and put its Bot User OAuth Token (xoxb-) in slack.bot_token"
        )
    );
    f.fake
        .wait_for(WAIT, "three refused auth.tests", |v| {
            (v.calls().iter().filter(|c| c.method == "auth.test").count() >= 3).then_some(())
        })
        .await;
    assert_eq!(log.values().len(), 1, "down once: {:?}", log.values());
    f.fake.revoke_bot_token(false);
    assert_eq!(log.wait(2, WAIT).await[1], Reach::Up);
    connected(2).await;

    f.fake.revoke_app_token(true);
    f.fake.disconnect("refresh_requested");
    let seen = log.wait(3, WAIT).await;
    assert_eq!(
        seen[2],
        down(
            "Slack refuses the app token (token_revoked)",
            "create an app-level token with connections:write (api.slack.com/apps → your app → Basic Information → App-Level Tokens) and put it (xapp-) in slack.app_token"
        )
    );
    f.fake.revoke_app_token(false);
    assert_eq!(log.wait(4, WAIT).await[3], Reach::Up);
    run.stop().await;
    assert_eq!(log.values().len(), 4, "no flapping: {:?}", log.values());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_action_id_and_value_is_malformed() {
    let f = SlackFixture::start().await;
    let a = approval(&Decision::ALL);
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(f.channel.clone());
    let (c, ts) = SlackFixture::ids(&prompt);
    let deny = codec::encode(Kind::Exec, &a.id, Decision::Deny.into()).unwrap();
    let allow = codec::encode(Kind::Exec, &a.id, Decision::AllowAlways.into()).unwrap();
    f.fake.press(OWNER, &c, &ts, &deny, &allow);
    let ans = run.next("mismatched press").await;
    assert!(
        matches!(ans.request, Request::Malformed { .. }),
        "{:?}",
        ans.request
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_wait_for_retry_after() {
    let f = SlackFixture::start().await;
    f.fake.rate_limit_next("chat.postMessage", 1, 2);
    let a = approval(&Decision::ALL);
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After honoured, took {took:?}"
    );
    let posts = f.fake.calls_to("chat.postMessage");
    assert_eq!(
        posts.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(posts[1].at.duration_since(posts[0].at) >= Duration::from_secs(2));
    f.fake.rate_limit_next("chat.update", 1, 1);
    f.channel
        .finish(&prompt, &a, &bridge::approval::Outcome::Gone { at_ms: 0 })
        .await
        .unwrap();
    assert!(f.message(&prompt).buttons().is_empty());
    assert_eq!(
        f.fake
            .calls_to("chat.update")
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        vec![429, 200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_bot_and_a_bad_token_fails_loudly() {
    let f = SlackFixture::start().await;
    assert_eq!(
        f.channel.health().await.unwrap(),
        "@approval_bot (U0BOTUSER) in Fake Team (T0FAKETEAM)"
    );
    let bad = Slack::new(&f.config, "xoxb-wrong-token", APP_TOKEN).unwrap();
    let err = bad.health().await.unwrap_err();
    assert!(matches!(err, ChannelError::Permanent(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("rejected the bot token") && !err.contains("wrong-token"),
        "{err}"
    );
    let swapped = Slack::new(&f.config, APP_TOKEN, BOT_TOKEN)
        .err()
        .expect("swapped tokens refused");
    assert!(
        swapped
            .to_string()
            .contains("bot_token does not start with \"xoxb-\""),
        "{swapped}"
    );
    let stale = MessageRef {
        target: f.dm(),
        message: format!("{}|1.000001", fake_slack::dm_channel(OWNER)),
    };
    let o = bridge::approval::Outcome::Gone { at_ms: 0 };
    assert!(matches!(
        f.channel
            .finish(&stale, &approval(&Decision::ALL), &o)
            .await,
        Err(ChannelError::MessageGone(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_on_a_press_is_ephemeral_to_the_presser() {
    let f = SlackFixture::start().await;
    let a = approval(&Decision::ALL);
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mut run = Running::start(f.channel.clone());
    let (c, ts) = SlackFixture::ids(&prompt);
    let data = codec::encode(Kind::Exec, &a.id, Decision::AllowOnce.into()).unwrap();
    f.fake.press(STRANGER, &c, &ts, &data, &data);
    let ans = run.next("stranger press").await;
    f.channel
        .notify(&ans.reply, &Notice::Refused(Refusal::NotAllowed))
        .await
        .unwrap();
    let e = f
        .fake
        .wait_ephemeral(&c, STRANGER, "not allowed", WAIT)
        .await;
    assert_eq!(e.text, Refusal::NotAllowed.message());
    assert_eq!(
        f.fake.bot_messages(&c).len(),
        1,
        "no public message for a refusal"
    );
    run.stop().await;
}

/// The whole bridge against the real gateway and the fake Slack.
mod daemon {
    use super::*;
    use bridge::store::{SqliteStore, Store};
    use testkit::bridge::{BridgeProcess, BridgeSetup};
    use testkit::openclaw::{Gateway, GatewayConfig, Operator};

    const WAIT: Duration = Duration::from_secs(20);

    struct World {
        gw: Gateway,
        slack: FakeSlack,
        op: Operator,
        bridge: BridgeProcess,
    }

    impl Drop for World {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "---- bridge log ----\n{}\n---- gateway log: {} ----",
                    self.bridge.log(),
                    self.gw.log_path().display()
                );
                let calls: Vec<String> = self
                    .slack
                    .calls()
                    .iter()
                    .map(|c| {
                        format!(
                            "{:?} {} {} {:?} {}",
                            c.at, c.status, c.method, c.error, c.params
                        )
                    })
                    .collect();
                eprintln!("---- slack calls ----\n{}", calls.join("\n"));
            }
        }
    }

    async fn world() -> World {
        let (gw, slack) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeSlack::start(BOT_TOKEN, APP_TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let setup = BridgeSetup {
            gateway_url: gw.url(),
            gateway_token: gw.token().to_owned(),
            telegram_api_url: String::new(),
            bot_token: String::new(),
            allow_from: Vec::new(),
            targets: None,
            extra_toml: format!(
                "[slack]\nbot_token = \"env:AB_TEST_SLACK_BOT_TOKEN\"\napp_token = \"env:AB_TEST_SLACK_APP_TOKEN\"\n\
                 api_url = \"{}\"\nallow_from = [\"{OWNER}\"]\n",
                slack.url()
            ),
            env: vec![
                ("AB_TEST_SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
                ("AB_TEST_SLACK_APP_TOKEN".into(), APP_TOKEN.into()),
            ],
        };
        let bridge =
            BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
                .await
                .unwrap();
        let op = Operator::connect(&gw, "requester").await.unwrap();
        let w = World {
            gw,
            slack,
            op,
            bridge,
        };
        w.slack
            .wait_for(WAIT, "socket mode connected", |v| {
                (v.live_sockets() == 1).then_some(())
            })
            .await;
        w
    }

    fn dm() -> String {
        fake_slack::dm_channel(OWNER)
    }

    impl World {
        async fn prompt(&self, id: &ApprovalId) -> fake_slack::Message {
            let needle = id.as_str().to_owned();
            self.slack
                .wait_for(WAIT, &format!("prompt for {needle}"), |v| {
                    v.bot_messages(&dm())
                        .into_iter()
                        .find(|m| m.text.contains(&needle) && !m.buttons().is_empty())
                        .cloned()
                })
                .await
        }

        fn press(&self, m: &fake_slack::Message, user: &str, data: &str) -> String {
            self.slack.press(user, &m.channel, &m.ts, data, data)
        }

        fn tap(&self, m: &fake_slack::Message, decision: Decision) -> String {
            let b = m
                .buttons()
                .into_iter()
                .find(|b| b.label == decision.label())
                .expect("button");
            self.press(m, OWNER, &b.value)
        }

        async fn finished(&self, m: &fake_slack::Message, what: &str) -> fake_slack::Message {
            self.slack
                .wait_message(&m.channel, &m.ts, WAIT, what, |m| m.buttons().is_empty())
                .await
        }

        fn audit(&self) -> Vec<bridge::store::AuditRecord> {
            SqliteStore::open(&self.bridge.state_dir().join("bridge.sqlite"))
                .unwrap()
                .audit_log(None)
                .unwrap()
        }

        fn prompts_for(&self, id: &ApprovalId) -> usize {
            self.slack
                .bot_messages(&dm())
                .iter()
                .filter(|m| m.blocks.is_array() && m.text.contains(id.as_str()))
                .count()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn owner_clicks_decide_each_way() {
        let w = world().await;
        let mut latencies = Vec::new();
        for decision in [Decision::AllowOnce, Decision::Deny, Decision::AllowAlways] {
            let req =
                w.op.request_exec(&format!("echo slack {decision}"), 60_000)
                    .await
                    .unwrap();
            let prompt = w.prompt(&req.id).await;
            let labels: Vec<String> = prompt.buttons().into_iter().map(|b| b.label).collect();
            // The default `[trust] durations = ["1h"]` beside allow-once.
            assert_eq!(
                labels,
                ["Allow once", "Allow for 1 h", "Allow always", "Deny"]
            );
            let t0 = Instant::now();
            let env = w.tap(&prompt, decision);
            assert_eq!(req.outcome(WAIT).await.unwrap(), Some(decision));
            let click_to_decision = t0.elapsed();
            let done = w.finished(&prompt, "prompt finished").await;
            let click_to_update = t0.elapsed();
            let ack = w.slack.wait_ack(&env, WAIT).await;
            assert!(ack < Duration::from_secs(3), "ack after {ack:?}");
            assert!(
                done.text.contains(decision.past()) && done.text.contains(OWNER),
                "{}",
                done.text
            );
            w.slack
                .wait_ephemeral(&dm(), OWNER, decision.past(), WAIT)
                .await;
            latencies.push((decision, ack, click_to_decision, click_to_update));
        }
        for (d, ack, dec, upd) in &latencies {
            eprintln!(
                "measured: {d}: ack {ack:?}, click -> requester has decision {dec:?}, click -> chat.update {upd:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stranger_is_refused_ephemerally_and_audited_and_forgeries_do_nothing() {
        let w = world().await;
        let req =
            w.op.request_exec("rm -rf /important", 60_000)
                .await
                .unwrap();
        let prompt = w.prompt(&req.id).await;
        let data = prompt.buttons()[0].value.clone();
        w.press(&prompt, STRANGER, &data);
        let e = w
            .slack
            .wait_ephemeral(&dm(), STRANGER, "not allowed", WAIT)
            .await;
        assert_eq!(e.text, Refusal::NotAllowed.message());
        let other = uuid::Uuid::new_v4();
        let forged = [
            format!("exec_approve:{other}:allow-once"),
            format!("exec_approve:{}:yolo", req.id),
            "hello".to_owned(),
            format!("exec_approve:{}:allow-once{}", req.id, "x".repeat(300)),
        ];
        for data in &forged {
            w.press(&prompt, OWNER, data);
        }
        w.slack
            .wait_for(WAIT, "a refusal per forgery", |v| {
                (v.ephemerals().iter().filter(|e| e.user == OWNER).count() >= forged.len())
                    .then_some(())
            })
            .await;
        assert!(
            !w.slack
                .message(&prompt.channel, &prompt.ts)
                .unwrap()
                .buttons()
                .is_empty(),
            "still pending"
        );
        let refused: Vec<_> = w
            .audit()
            .into_iter()
            .filter(|r| r.event == "refused")
            .collect();
        assert_eq!(refused.len(), 1 + forged.len(), "{refused:?}");
        assert_eq!(refused[0].actor.as_deref(), Some(STRANGER));
        assert_eq!(refused[0].detail["reason"], "not_allowed");
        w.tap(&prompt, Decision::Deny);
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::Deny));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn decided_elsewhere_and_expiry_update_the_message() {
        let w = world().await;
        let req = w.op.request_exec("echo elsewhere", 60_000).await.unwrap();
        let prompt = w.prompt(&req.id).await;
        w.op.resolve(&req.id, Decision::Deny).await.unwrap();
        let done = w.finished(&prompt, "finished by another operator").await;
        assert!(done.text.contains("Denied elsewhere"), "{}", done.text);
        w.tap(&prompt, Decision::AllowOnce);
        w.slack
            .wait_ephemeral(&dm(), OWNER, "Denied elsewhere", WAIT)
            .await;
        let late = w.op.request_exec("echo too late", 3_000).await.unwrap();
        let prompt = w.prompt(&late.id).await;
        assert_eq!(late.outcome(WAIT).await.unwrap(), None);
        let done = w.finished(&prompt, "marked expired").await;
        assert!(done.text.contains("Expired"), "{}", done.text);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restart_without_duplicates_hostile_text_typed_commands_and_no_leaks() {
        let mut w = world().await;
        let req = w.op.request_exec(HOSTILE, 120_000).await.unwrap();
        let prompt = w.prompt(&req.id).await;
        assert!(prompt.markup.is_empty(), "{:?}", prompt.markup);
        assert!(seen(&prompt.text).contains(HOSTILE), "{}", prompt.text);
        w.bridge.kill9().await.unwrap();
        w.bridge.restart().await.unwrap();
        w.bridge
            .wait_healthy(Duration::from_secs(60))
            .await
            .unwrap();
        w.slack
            .wait_for(WAIT, "socket mode reconnected", |v| {
                (v.live_sockets() >= 1).then_some(())
            })
            .await;
        w.slack.send_text(OWNER, &dm(), "/pending");
        w.slack
            .wait_for(WAIT, "/pending answer", |v| {
                v.bot_messages(&dm())
                    .into_iter()
                    .find(|m| m.text.contains("1 pending") && m.text.contains(req.id.as_str()))
                    .cloned()
            })
            .await;
        w.slack
            .send_text(OWNER, &dm(), &format!("/approve {} allow-once", req.id));
        let id = req.id.clone();
        assert_eq!(req.outcome(WAIT).await.unwrap(), Some(Decision::AllowOnce));
        let done = w
            .finished(&prompt, "old prompt finished after restart")
            .await;
        assert!(seen(&done.text).contains(HOSTILE) && done.markup.is_empty());
        assert_eq!(w.prompts_for(&id), 1, "no duplicate prompt after restart");
        // Every call went to the fake, with the right token; nothing else was contacted.
        let calls = w.slack.calls();
        for m in [
            "auth.test",
            "apps.connections.open",
            "conversations.open",
            "chat.postMessage",
            "chat.update",
        ] {
            assert!(
                calls.iter().any(|c| c.method == m && c.status == 200),
                "{m} reached the fake"
            );
        }
        assert!(calls.iter().all(|c| c.error.is_none()), "no failed call");
        assert!(calls.iter().all(|c| c.token
            == if c.method == "apps.connections.open" {
                APP_TOKEN
            } else {
                BOT_TOKEN
            }));
        assert!(
            w.slack
                .envelopes()
                .iter()
                .all(|e| e.acked_after.is_some_and(|d| d < Duration::from_secs(3)))
        );
        let log = w.bridge.log();
        assert!(
            !log.contains("slack.com"),
            "a call aimed at the real Slack:\n{log}"
        );
        assert!(
            !log.contains(BOT_TOKEN) && !log.contains(APP_TOKEN),
            "a secret reached the log"
        );
    }
}
