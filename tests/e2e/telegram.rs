//! Telegram adapter against the fake Bot API: the conformance suite, plus the Telegram
//! specifics of issue 2 (callback data, escaping and cutting, 429s, throttling).
//! The engine and the real gateway are wired in other tests; here it is adapter + fake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::approval::{Approval, ApprovalId, Choice, Decision, Kind};
use bridge::bulletin::Bulletin;
use bridge::channel::{Answer, Channel, MessageRef, Notice, Reach, Refusal, Request, Target};
use channels::telegram::{Options, Reply, Telegram, TelegramConfig, codec};
use testkit::conformance::{
    FaultyFixture, Fixture, PromptState, ReachLog, Running, approval, controls, down,
};
use testkit::fake_telegram::FakeTelegram;
use testkit::service_faults::Faults;

const TOKEN: &str = "7000000001:AAE-test-token-not-real";
const OWNER: i64 = 111_111_111;
const STRANGER: i64 = 999_999_999;
const WAIT: Duration = Duration::from_secs(10);

pub struct TelegramFixture {
    pub fake: FakeTelegram,
    config: TelegramConfig,
    channel: Arc<Telegram>,
}

impl TelegramFixture {
    pub async fn start() -> TelegramFixture {
        let fake = FakeTelegram::start(TOKEN).await;
        let config: TelegramConfig = serde_json::from_value(serde_json::json!({
            "bot_token": "env:TELEGRAM_BOT_TOKEN",
            "api_url": fake.url(),
            "allow_from": [OWNER],
        }))
        .expect("config");
        let channel = Arc::new(Self::build(&config));
        TelegramFixture {
            fake,
            config,
            channel,
        }
    }

    fn build(config: &TelegramConfig) -> Telegram {
        let options = Options {
            poll_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        Telegram::with_options(config, TOKEN, options).expect("telegram channel")
    }

    fn ids(prompt: &MessageRef) -> (i64, i64) {
        (
            prompt.target.chat.parse().unwrap(),
            prompt.message.parse().unwrap(),
        )
    }
}

impl FaultyFixture for TelegramFixture {
    fn faults(&self) -> &Faults {
        self.fake.faults()
    }
    async fn live_prompts(&self, id: &ApprovalId) -> usize {
        self.fake
            .bot_messages(OWNER)
            .iter()
            .filter(|m| m.buttons().iter().any(|(_, d)| d.contains(id.as_str())))
            .count()
    }
}

impl Fixture for TelegramFixture {
    fn channel(&self) -> Arc<dyn Channel> {
        self.channel.clone()
    }

    fn restarted(&self) -> Arc<dyn Channel> {
        Arc::new(Self::build(&self.config))
    }

    fn owner(&self) -> String {
        OWNER.to_string()
    }

    fn stranger(&self) -> String {
        STRANGER.to_string()
    }

    fn dm(&self) -> Target {
        Target {
            channel: "telegram".into(),
            chat: OWNER.to_string(),
        }
    }

    async fn press(&self, prompt: &MessageRef, user: &str, choice: Choice) {
        let (chat, mid) = Self::ids(prompt);
        let m = self.fake.message(chat, mid).expect("prompt exists");
        let (_, data) = m
            .buttons()
            .into_iter()
            .find(|(label, _)| *label == choice.label())
            .unwrap_or_else(|| panic!("no {choice} button on {:?}", m.buttons()));
        self.fake.press(user.parse().unwrap(), chat, mid, &data);
    }

    async fn press_raw(&self, prompt: &MessageRef, user: &str, raw: &str) {
        let (chat, mid) = Self::ids(prompt);
        self.fake.press(user.parse().unwrap(), chat, mid, raw);
    }

    async fn type_in_dm(&self, user: &str, text: &str) {
        let user: i64 = user.parse().unwrap();
        self.fake.send_text(user, user, text);
    }

    fn forged_payloads(&self) -> Vec<String> {
        let id = uuid::Uuid::new_v4();
        vec![
            String::new(),
            "hello".into(),
            format!("exec_approve:{id}:allow"),
            format!("exec_approve:{id}:yes-please"),
            format!("exec_approve:{id}:allow-once:{}", "x".repeat(30)), // over 64 bytes
            format!("evil_approve:{id}:allow-once"),
            "exec_approve:<b>x</b>:deny".into(),
            "plugin_approve::deny".into(),
        ]
    }

    async fn prompt_state(&self, prompt: &MessageRef) -> PromptState {
        let (chat, mid) = Self::ids(prompt);
        let m = self.fake.message(chat, mid).expect("prompt exists");
        let (decisions, revokes) = controls(
            m.buttons()
                .into_iter()
                .map(|(label, data)| (label, codec::decode(&data).expect("our buttons decode"))),
        );
        PromptState {
            text: m.text,
            decisions,
            revokes,
            silent: m.silent,
        }
    }

    async fn delete(&self, prompt: &MessageRef) {
        let (chat, mid) = Self::ids(prompt);
        self.fake.delete_message(chat, mid);
    }

    async fn told(&self, answer: &Answer) -> String {
        let (chat, mid) = match answer.reply.handle::<Reply>().expect("a Telegram reply") {
            Reply::Callback(q) => {
                let a = self.fake.wait_callback_answer(q, WAIT).await;
                assert_eq!(
                    self.fake.callback_answers(q).len(),
                    1,
                    "a callback query is answered exactly once"
                );
                return a["text"].as_str().unwrap_or_default().to_owned();
            }
            Reply::Chat { chat, reply_to } => {
                let mid = reply_to.expect("a command is replied to");
                (*chat, i64::from(mid))
            }
        };
        self.fake
            .wait_for(WAIT, "reply to the command", |v| {
                v.bot_messages(chat)
                    .into_iter()
                    .find(|m| m.reply_to == Some(mid))
                    .map(|m| m.text.clone())
            })
            .await
    }
}

mod conformance {
    testkit::channel_conformance!(super::TelegramFixture::start());
    testkit::channel_fault_conformance!(super::TelegramFixture::start());
}

fn exec(command: &str, allowed: &[Decision]) -> Approval {
    Approval {
        command: command.to_owned(),
        ..approval(allowed)
    }
}

// Issue 2, test 1 (adapter half): the prompt reaches the owner's DM at once, with
// OpenClaw's callback data on exactly the offered buttons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_carries_openclaw_callback_data_and_is_sent_at_once() {
    let f = TelegramFixture::start().await;
    let a = exec("ls -la", &[Decision::AllowOnce, Decision::Deny]);
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let took = t0.elapsed();
    let m = f
        .fake
        .message(OWNER, prompt.message.parse().unwrap())
        .unwrap();
    assert_eq!(
        m.buttons(),
        vec![
            (
                "Allow once".to_owned(),
                format!("exec_approve:{}:allow-once", a.id)
            ),
            ("Deny".to_owned(), format!("exec_approve:{}:deny", a.id)),
        ]
    );
    assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
    let calls = f.fake.calls();
    assert!(
        calls.iter().all(|c| !c.is("sendChatAction")),
        "no typing action before the prompt"
    );
    assert_eq!(
        calls.iter().filter(|c| c.is("sendMessage")).count(),
        1,
        "one message per prompt"
    );
    eprintln!("measured: deliver -> sendMessage answered on loopback in {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "prompt sent at once, took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_and_system_prompts_fit_telegrams_limit() {
    let f = TelegramFixture::start().await;
    let mut p = approval(&Decision::ALL);
    p.kind = Kind::Plugin;
    p.id = ApprovalId(format!("plugin:{}", uuid::Uuid::new_v4()));
    let prompt = f.channel.deliver(&f.dm(), &p).await.unwrap();
    let m = f
        .fake
        .message(OWNER, prompt.message.parse().unwrap())
        .unwrap();
    let datas: Vec<String> = m.buttons().into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        datas[1],
        format!("plugin_approve:{}:allow-always", &p.id.as_str()[7..])
    );
    assert!(datas.iter().all(|d| d.len() <= 64));
    let mut run = Running::start(f.channel.clone());
    f.fake
        .press(OWNER, OWNER, prompt.message.parse().unwrap(), &datas[1]);
    let ans = run.next("plugin press").await;
    assert_eq!(
        ans.request,
        Request::Decide {
            id: p.id.clone(),
            choice: Decision::AllowAlways.into(),
            kind: Some(Kind::Plugin)
        }
    );
    run.stop().await;
}

// Issue 2, test 2 (adapter half): presses outside the owner's DM are marked so, and a
// refusal reaches the presser as an alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_press_is_not_in_dm_and_refusal_is_an_alert() {
    let f = TelegramFixture::start().await;
    let group = -100_123_456;
    let a = approval(&Decision::ALL);
    let prompt = f
        .channel
        .deliver(
            &Target {
                channel: "telegram".into(),
                chat: group.to_string(),
            },
            &a,
        )
        .await
        .unwrap();
    let mut run = Running::start(f.channel.clone());
    let data = codec::encode(Kind::Exec, &a.id, Decision::AllowOnce.into()).unwrap();
    let q = f
        .fake
        .press(OWNER, group, prompt.message.parse().unwrap(), &data);
    let ans = run.next("group press").await;
    assert!(!ans.in_dm, "a group is not a DM, even for the owner");
    assert_eq!(ans.responder.user_id, OWNER.to_string());
    assert_eq!(
        ans.responder.display.as_deref(),
        Some(format!("@user{OWNER}").as_str())
    );
    f.channel
        .notify(&ans.reply, &Notice::Refused(Refusal::NotDirectMessage))
        .await
        .unwrap();
    let answer = f.fake.wait_callback_answer(&q, WAIT).await;
    assert_eq!(answer["show_alert"], true);
    assert_eq!(answer["text"], Refusal::NotDirectMessage.message());
    // A stranger pressing in their own DM with the bot is in a DM, but not allowed.
    let q2 = f.fake.press(STRANGER, STRANGER, 1, &data);
    let ans = run.next("stranger press").await;
    assert!(ans.in_dm);
    assert!(!f.channel.allows(&ans.responder.user_id));
    assert_eq!(ans.reply.handle(), Some(&Reply::Callback(q2)));
    run.stop().await;
}

// Issue 2, test 8: a hostile, long command is shown literally, cut safely, and the full
// text follows as command.txt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_long_command_is_literal_cut_and_attached() {
    let f = TelegramFixture::start().await;
    let head =
        "echo '<b>bold</b>' '</code></pre>' '<a href=\"https://evil.example\">click</a>' '&amp;' ";
    let command = format!("{head}{}", "ß😀<>&x".repeat(834)); // > 5000 chars of tail
    assert!(command.chars().count() > 5000);
    let a = exec(&command, &Decision::ALL);
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let mid: i64 = prompt.message.parse().unwrap();
    // The fake parsed the HTML like Telegram: it would have refused bad markup or > 4096.
    let m = f.fake.message(OWNER, mid).unwrap();
    assert!(m.text.encode_utf16().count() <= 4096);
    assert!(m.raw.encode_utf16().count() <= 4096);
    assert!(m.text.contains(head), "shown literally: {}", &m.text[..300]);
    assert!(m.text.contains(&format!(
        "of {} characters; the full text follows as command.txt.",
        command.chars().count()
    )));
    assert!(!m.raw.contains("<a "), "no live link");
    let doc = f.fake.wait_bot_message(OWNER, 1, WAIT).await;
    let (name, content) = doc.document.clone().expect("a document");
    assert_eq!(name, "command.txt");
    assert_eq!(content, command, "the full command is reachable");
    assert_eq!(doc.reply_to, Some(mid), "the file replies to its prompt");
    let sends: Vec<_> = f
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.is("sendMessage") || c.is("sendDocument"))
        .collect();
    assert!(
        sends[1].at.duration_since(sends[0].at) >= Duration::from_millis(1000),
        "1 message/s per chat"
    );
    eprintln!(
        "measured: long prompt + command.txt delivered in {:?}",
        t0.elapsed()
    );
    // Finishing the cut prompt keeps it valid.
    let o = bridge::approval::Outcome::Expired { at_ms: 0 };
    f.channel.finish(&prompt, &a, &o).await.unwrap();
    let m = f.fake.message(OWNER, mid).unwrap();
    assert!(m.text.contains("Expired without a decision") && m.buttons().is_empty());
}

// Issue 2, test 9: a 429 with retry_after delays the message; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_send_arrives_after_retry_after() {
    let f = TelegramFixture::start().await;
    f.fake.rate_limit_next(1, 2);
    let a = approval(&Decision::ALL);
    let t0 = Instant::now();
    let prompt = f.channel.deliver(&f.dm(), &a).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "retry_after honoured, took {took:?}"
    );
    let sends = f.fake.calls_to("sendMessage");
    assert_eq!(
        sends.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(sends[1].at.duration_since(sends[0].at) >= Duration::from_secs(2));
    assert_eq!(f.fake.bot_messages(OWNER).len(), 1);
    assert_eq!(
        prompt.message,
        f.fake.bot_messages(OWNER)[0].message_id.to_string()
    );
    // An edit hit by a 429 is retried too.
    f.fake.rate_limit_next(1, 1);
    let o = bridge::approval::Outcome::Gone { at_ms: 0 };
    f.channel.finish(&prompt, &a, &o).await.unwrap();
    assert!(f.fake.bot_messages(OWNER)[0].buttons().is_empty());
}

// The throttle keeps a chat at 1 message/s (the fake enforces it) without holding up
// other chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_spaces_one_chat_and_not_others() {
    let f = TelegramFixture::start().await;
    f.fake.enforce_chat_gap(Some(Duration::from_secs(1)));
    let other = Target {
        channel: "telegram".into(),
        chat: "222222222".into(),
    };
    let t0 = Instant::now();
    let approvals: Vec<Approval> = (0..3).map(|_| approval(&Decision::ALL)).collect();
    let mut tasks = Vec::new();
    for a in approvals.clone() {
        let ch = f.channel.clone();
        let dm = f.dm();
        tasks.push(tokio::spawn(async move { ch.deliver(&dm, &a).await }));
    }
    let other_prompt = f.channel.deliver(&other, &approvals[0]).await.unwrap();
    let other_took = t0.elapsed();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = t0.elapsed();
    assert!(
        f.fake.calls().iter().all(|c| c.status != 429),
        "never tripped the per-chat limit"
    );
    assert_eq!(f.fake.bot_messages(OWNER).len(), 3);
    assert!(
        all >= Duration::from_secs(2),
        "3 messages to one chat take ≥ 2 s, took {all:?}"
    );
    assert!(
        other_took < Duration::from_millis(500),
        "another chat is not delayed: {other_took:?}"
    );
    assert_eq!(other_prompt.target, other);
    eprintln!(
        "measured: 3 prompts to one chat in {all:?}, another chat's prompt in {other_took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_bot_and_a_bad_token_fails_loudly() {
    let f = TelegramFixture::start().await;
    assert_eq!(
        f.channel.health().await.unwrap(),
        "@approval_test_bot (id 7000000001)"
    );
    let bad = Telegram::new(&f.config, "7000000001:wrong").unwrap();
    let err = bad.health().await.unwrap_err().to_string();
    assert!(err.contains("rejected the bot token"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the token never appears in errors: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_speaks_the_bot_api_shape() {
    let f = TelegramFixture::start().await;
    let client = reqwest_free_post(&f.fake.url(), TOKEN, "getMe", "{}").await;
    assert!(
        client.contains("\"ok\":true") && client.contains("approval_test_bot"),
        "{client}"
    );
    let lower = reqwest_free_post(
        &f.fake.url(),
        TOKEN,
        "sendmessage",
        &format!("{{\"chat_id\":{OWNER},\"text\":\"hi\"}}"),
    )
    .await;
    assert!(lower.contains("\"ok\":true"), "{lower}");
    let unknown = reqwest_free_post(&f.fake.url(), TOKEN, "frobnicate", "{}").await;
    let unknown: serde_json::Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(
        unknown,
        serde_json::json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"})
    );
    let bad_html = reqwest_free_post(
        &f.fake.url(),
        TOKEN,
        "sendMessage",
        &format!("{{\"chat_id\":{OWNER},\"text\":\"<x>\",\"parse_mode\":\"HTML\"}}"),
    )
    .await;
    assert!(bad_html.contains("can't parse entities"), "{bad_html}");
}

/// A tiny HTTP/1.1 client over a TCP socket, so the fake's wire shape is checked
/// independently of teloxide.
async fn reqwest_free_post(base: &str, token: &str, method: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /bot{token}/{method} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

/// A channel that polls briefly and backs off at most 300 ms, so a test sees several polls.
fn quick_channel(f: &TelegramFixture) -> Arc<Telegram> {
    let options = Options {
        poll_timeout: Duration::from_secs(1),
        max_poll_backoff: Duration::from_millis(300),
        conflict_quiet: Duration::from_millis(1500),
        ..Options::default()
    };
    Arc::new(Telegram::with_options(&f.config, TOKEN, options).expect("telegram channel"))
}

// Issue 14: a bulletin is a new plain-text message (no parse mode: nothing in it is
// markup), without a link preview, and its edit is plain text too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletin_is_a_plain_text_message_and_its_edit_too() {
    let f = TelegramFixture::start().await;
    let alert = testkit::conformance::hostile_bulletin();
    let post = f.channel.post(&f.dm(), &alert).await.unwrap();
    let sends = f.fake.calls_to("sendMessage");
    assert_eq!(sends.len(), 1);
    let send = &sends[0];
    assert_eq!(send.chat_id(), Some(OWNER));
    assert_eq!(send.str("text"), Some(alert.text().as_str()));
    assert!(send.params.get("parse_mode").is_none(), "{}", send.line());
    assert_eq!(send.params["link_preview_options"]["is_disabled"], true);
    assert!(
        send.params.get("reply_parameters").is_none(),
        "a new message, not a reply"
    );
    let m = f
        .fake
        .message(OWNER, post.message.parse().unwrap())
        .unwrap();
    assert_eq!(m.raw, alert.text());
    assert!(m.buttons().is_empty());

    let Bulletin::Alert { problem, since_ms } = alert else {
        unreachable!()
    };
    let over = Bulletin::AlertOver {
        problem,
        since_ms,
        lasted_ms: 180_000,
    };
    f.channel.edit_post(&post, &over).await.unwrap();
    let edits = f.fake.calls_to("editMessageText");
    assert_eq!(edits.len(), 1);
    assert!(
        edits[0].params.get("parse_mode").is_none(),
        "{}",
        edits[0].line()
    );
    assert_eq!(edits[0].str("text"), Some(over.text().as_str()));
    // The same rewrite again is no error (Telegram: "message is not modified").
    f.channel.edit_post(&post, &over).await.unwrap();
    assert_eq!(f.fake.message(OWNER, m.message_id).unwrap().edits, 1);
}

// Issue 14: a revoked token (401 on getUpdates) sets the channel down once, however many
// polls fail; the first poll that works sets it up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_down_once_and_up_after_a_working_poll() {
    let f = TelegramFixture::start().await;
    let ch = quick_channel(&f);
    let log = ReachLog::start(&*ch);
    let run = Running::start(ch.clone());
    f.fake
        .wait_for(WAIT, "a first poll", |v| {
            v.calls()
                .iter()
                .any(|c| c.is("getUpdates") && c.status == 200)
                .then_some(())
        })
        .await;
    assert!(
        log.values().is_empty(),
        "up from the start: nothing changes"
    );
    f.fake.revoke_token(true);
    f.fake
        .wait_for(WAIT, "three polls refused with 401", |v| {
            (v.calls()
                .iter()
                .filter(|c| c.is("getUpdates") && c.status == 401)
                .count()
                >= 3)
                .then_some(())
        })
        .await;
    assert_eq!(
        log.values(),
        [down(
            "Telegram rejects the bot token (401 Unauthorized)",
            "create a new token with @BotFather and update telegram.bot_token"
        )],
        "down once, however many polls fail"
    );
    f.fake.revoke_token(false);
    let seen = log.wait(2, WAIT).await;
    assert_eq!(seen[1], Reach::Up);
    assert!(
        f.fake
            .calls()
            .iter()
            .any(|c| c.is("getUpdates") && c.status == 200),
        "up after a poll that worked"
    );
    run.stop().await;
    assert_eq!(log.values().len(), 2, "no flapping: {:?}", log.values());
}

// Issue 14: another program polling the same bot (OpenClaw's own Telegram channel) makes
// Telegram end one of the two polls with 409: the channel is down with the fix, and up
// again only once its polls have worked for a quiet spell after the other poller is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_poller_is_a_409_conflict_and_up_after_it_stops() {
    let f = TelegramFixture::start().await;
    let ch = quick_channel(&f);
    let log = ReachLog::start(&*ch);
    let run = Running::start(ch.clone());
    let other = Running::start(quick_channel(&f));
    let conflict = down(
        "another program polls this bot's updates",
        "OpenClaw's own Telegram channel? Give the bridge its own bot (or remove the webhook)",
    );
    let seen = log.wait(1, WAIT).await;
    assert_eq!(seen[0], conflict);
    f.fake
        .wait_for(WAIT, "several 409s", |v| {
            (v.calls()
                .iter()
                .filter(|c| c.is("getUpdates") && c.status == 409)
                .count()
                >= 4)
                .then_some(())
        })
        .await;
    assert_eq!(log.values().len(), 1, "down once: {:?}", log.values());
    other.stop().await;
    let stopped = Instant::now();
    let seen = log.wait(2, WAIT).await;
    assert_eq!(seen[1], Reach::Up);
    assert!(
        stopped.elapsed() >= Duration::from_millis(1000),
        "up only after a quiet spell, took {:?}",
        stopped.elapsed()
    );
    // Answers flow again.
    let mut run = run;
    f.fake.send_text(OWNER, OWNER, "/pending");
    assert_eq!(
        run.next("/pending after the conflict").await.request,
        Request::ListPending
    );
    run.stop().await;
}

// Issue 14: a webhook set for the bot (409 on getUpdates) is a cause of its own; deleting
// it brings the channel back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_a_409_conflict_until_deleted() {
    let f = TelegramFixture::start().await;
    let ch = quick_channel(&f);
    let log = ReachLog::start(&*ch);
    f.fake
        .set_webhook(Some("https://openclaw.example/telegram"));
    let run = Running::start(ch.clone());
    let seen = log.wait(1, WAIT).await;
    assert_eq!(
        seen[0],
        down(
            "a webhook takes this bot's updates",
            "OpenClaw's own Telegram channel? Give the bridge its own bot (or remove the webhook)"
        )
    );
    f.fake.set_webhook(None);
    assert_eq!(log.wait(2, WAIT).await[1], Reach::Up);
    run.stop().await;
}
