//! Secrets never leak (issue 6): the real bridge binary runs with distinctive values for
//! every secret it holds — the gateway token, the Telegram, Discord and Slack tokens, the
//! Matrix password, the device key and device token it keeps in its state directory — at
//! every log level (trace, debug, info, warn; text and JSON), through start-up, a prompt
//! delivered and decided, error paths (wrong chat tokens, a rejected gateway token) and
//! `approval-bridge check`. None of them, nor their hex/base64/URL-encoded forms, may
//! appear in stdout/stderr, the logs, error messages, `check` output, or any file in the
//! state directory other than the files that exist to hold them.
//!
//! Positive controls keep the test from passing vacuously: the scanner must find the
//! device key inside its own file, the trace log must hold trace lines, and `check` must
//! name the fields it complains about.

use std::path::Path;
use std::time::Duration;

use bridge::approval::Decision;
use bridge::gateway::identity::{DEVICE_TOKEN_FILE, IDENTITY_FILE};
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::fake_discord::FakeDiscord;
use testkit::fake_slack::FakeSlack;
use testkit::fake_telegram::FakeTelegram;
use testkit::openclaw::{Gateway, GatewayConfig, Operator};
use testkit::synapse::Synapse;

const OWNER_TG: i64 = 111_111_111;
const OWNER_DISCORD: &str = "80351110224678912";
const OWNER_SLACK: &str = "U0OWNER01";
const TG_TOKEN: &str = "7301234567:AAH-tgSECRET-Zq9Xk2Lm4Np6Rs8Tv0Wy";
const DISCORD_TOKEN: &str = "MTAxDiscordSECRET.Gx7Yq2.k9Lm4Np6Rs8Tv0Wy-dc";
const SLACK_BOT: &str = "xoxb-1111-2222-slackBOTsecret9Xk2Lm4";
const SLACK_APP: &str = "xapp-1-A111-3333-slackAPPsecret7Qw5Er";
const MATRIX_PASSWORD: &str = "matrix-PASSWORD-secret-5Tg7Yh9Uj";
const WAIT: Duration = Duration::from_secs(30);

fn exe() -> &'static Path {
    env!("CARGO_BIN_EXE_approval-bridge").as_ref()
}

// ---- the scanner ----

/// Secret values and every form the product might encode them in.
#[derive(Default)]
struct Secrets(Vec<(String, Vec<u8>)>);

impl Secrets {
    /// A text secret: raw, URL-encoded, hex, base64 (standard and URL-safe).
    fn text(&mut self, name: &str, value: &str) {
        assert!(value.len() >= 12, "{name} too short to be distinctive");
        self.0.push((name.into(), value.as_bytes().to_vec()));
        let url = url_encode(value);
        if url != value {
            self.0
                .push((format!("{name} (url-encoded)"), url.into_bytes()));
        }
        self.bytes(name, value.as_bytes());
    }

    /// A binary secret (a key): hex and base64 forms.
    fn bytes(&mut self, name: &str, value: &[u8]) {
        for (form, s) in [
            ("hex", hex(value)),
            ("HEX", hex(value).to_ascii_uppercase()),
            ("base64", base64(value, false)),
            ("base64url", base64(value, true)),
        ] {
            self.0.push((format!("{name} ({form})"), s.into_bytes()));
        }
    }

    /// Names of the secrets (and forms) found in `hay`.
    fn found_in(&self, hay: &[u8]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, needle)| hay.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Fails with where and what leaked.
    fn assert_absent(&self, place: &str, hay: &[u8]) {
        let found = self.found_in(hay);
        assert!(
            found.is_empty(),
            "{place} leaks {found:?}:\n{}",
            String::from_utf8_lossy(hay)
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn base64(b: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, x)| n | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    // Unpadded: a padded encoding contains this one as a prefix.
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' | b'+' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in bits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// Files that exist to hold a secret: the device key, the device token, the Matrix session.
fn holds_secret_by_design(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == IDENTITY_FILE || name == DEVICE_TOKEN_FILE || name == "session.json"
}

/// Every other file under `dir`, with its bytes.
fn state_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !holds_secret_by_design(&p)
                && let Ok(b) = std::fs::read(&p)
            {
                out.push((p, b));
            }
        }
    }
    out
}

/// Adds the device key and device token the bridge keeps in `state` (it must have them).
fn device_secrets(secrets: &mut Secrets, state: &Path) {
    let id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(IDENTITY_FILE)).expect("device key"))
            .unwrap();
    let seed = id["secret_key"].as_str().expect("secret_key");
    let raw = b64url_decode(seed);
    assert_eq!(raw.len(), 32, "an Ed25519 seed");
    secrets.text("device key", seed);
    secrets.bytes("device key", &raw);
    // Positive control: the scanner finds the key where it is supposed to be.
    let found = secrets.found_in(&std::fs::read(state.join(IDENTITY_FILE)).unwrap());
    assert!(found.iter().any(|f| f == "device key"), "{found:?}");
    if let Ok(b) = std::fs::read(state.join(DEVICE_TOKEN_FILE)) {
        let t: serde_json::Value = serde_json::from_slice(&b).unwrap();
        if let Some(tok) = t["token"].as_str().filter(|t| t.len() >= 12) {
            secrets.text("device token", tok);
        }
    }
}

/// Scans the bridge's log(s) and every state file except the secret holders.
fn assert_no_leak(secrets: &Secrets, b: &BridgeProcess, what: &str) {
    secrets.assert_absent(&format!("{what}: log"), b.log().as_bytes());
    let files = state_files(&b.state_dir());
    assert!(
        files.iter().any(|(p, _)| p.ends_with("bridge.sqlite")),
        "{what}: the database was scanned"
    );
    for (p, bytes) in files {
        secrets.assert_absent(&format!("{what}: {}", p.display()), &bytes);
    }
}

// ---- the bridge, configured like a user would ----

struct Chats {
    tg: FakeTelegram,
    dc: FakeDiscord,
    slack: FakeSlack,
}

#[derive(Clone, Copy, Default)]
struct Wrong {
    gateway: bool,
    telegram: bool,
    discord: bool,
    slack: bool,
}

fn setup(gw: &Gateway, chats: &Chats, wrong: Wrong) -> BridgeSetup {
    let pick = |bad: bool, good: &str, prefix: &str| {
        if bad {
            format!("{prefix}WRONG-{good}")
        } else {
            good.to_owned()
        }
    };
    let mut s = BridgeSetup::telegram_owner(gw, &chats.tg, OWNER_TG);
    if wrong.gateway {
        s.gateway_token = format!("wrong-gw-SECRET-{}", gw.token());
    }
    s.bot_token = pick(wrong.telegram, TG_TOKEN, "7301234567:");
    s.extra_toml = format!(
        "[discord]\nbot_token = \"env:AB_TEST_DISCORD_TOKEN\"\napi_url = \"{}\"\nallow_from = [\"{OWNER_DISCORD}\"]\n\n\
         [slack]\nbot_token = \"env:AB_TEST_SLACK_BOT_TOKEN\"\napp_token = \"env:AB_TEST_SLACK_APP_TOKEN\"\n\
         api_url = \"{}\"\nallow_from = [\"{OWNER_SLACK}\"]\n",
        chats.dc.api_url(),
        chats.slack.url()
    );
    s.env = vec![
        (
            "AB_TEST_DISCORD_TOKEN".into(),
            pick(wrong.discord, DISCORD_TOKEN, ""),
        ),
        (
            "AB_TEST_SLACK_BOT_TOKEN".into(),
            pick(wrong.slack, SLACK_BOT, "xoxb-"),
        ),
        ("AB_TEST_SLACK_APP_TOKEN".into(), SLACK_APP.into()),
    ];
    s
}

/// Replaces the generated `[log]` section: `level` and `format`.
fn set_log(b: &BridgeProcess, level: &str, format: &str) {
    let path = b.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[log]").expect("[log] section");
    let end = start + text[start..].find("\n\n").expect("end of [log]");
    let text = format!(
        "{}[log]\nlevel = \"{level}\"\nformat = \"{format}\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(path, text).unwrap();
}

/// Waits until the bridge's log holds `needle`.
async fn wait_log(b: &BridgeProcess, needle: &str, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !b.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: log line {needle:?}:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Configures and starts a bridge at `level`/`format`, waiting until healthy.
async fn start(setup: BridgeSetup, level: &str, format: &str) -> BridgeProcess {
    let mut b = BridgeProcess::configure(exe(), setup).unwrap();
    set_log(&b, level, format);
    b.restart().await.unwrap();
    b
}

fn all_secrets(gw: &Gateway) -> Secrets {
    let mut s = Secrets::default();
    s.text("gateway token", gw.token());
    s.text("telegram bot token", TG_TOKEN);
    s.text(
        "telegram bot token in a URL path",
        &format!("/bot{TG_TOKEN}/"),
    );
    s.text("discord bot token", DISCORD_TOKEN);
    s.text("slack bot token", SLACK_BOT);
    s.text("slack app token", SLACK_APP);
    s.text("matrix password", MATRIX_PASSWORD);
    // The wrong values the error paths use are secrets too.
    s.text(
        "wrong gateway token",
        &format!("wrong-gw-SECRET-{}", gw.token()),
    );
    s.text("wrong telegram token", &format!("WRONG-{TG_TOKEN}"));
    s.text("wrong discord token", &format!("WRONG-{DISCORD_TOKEN}"));
    s.text("wrong slack token", &format!("WRONG-{SLACK_BOT}"));
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_audit_errors_or_check_at_any_log_level() {
    let (gw, tg, dc, slack) = tokio::join!(
        Gateway::start(GatewayConfig::default()),
        FakeTelegram::start(TG_TOKEN),
        FakeDiscord::start(DISCORD_TOKEN),
        FakeSlack::start(SLACK_BOT, SLACK_APP),
    );
    let gw = gw.expect("start the OpenClaw gateway");
    let chats = Chats { tg, dc, slack };
    let op = Operator::connect(&gw, "requester").await.unwrap();
    let mut scanned_logs = 0;

    // The happy path at every level: start-up, a prompt on every channel, a decision.
    for (level, format) in [
        ("trace", "text"),
        ("trace", "json"),
        ("debug", "text"),
        ("info", "json"),
        ("warn", "text"),
    ] {
        let what = format!("level {level}, {format}");
        let mut b = start(setup(&gw, &chats, Wrong::default()), level, format).await;
        b.wait_healthy(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let req = op
            .request_exec(&format!("echo secrets-{level}-{format}"), 60_000)
            .await
            .unwrap();
        let needle = req.id.as_str().to_owned();
        let prompt = chats
            .tg
            .wait_for(WAIT, &format!("{what}: telegram prompt"), |v| {
                v.bot_messages(OWNER_TG)
                    .into_iter()
                    .find(|m| m.raw.contains(&needle))
                    .cloned()
            })
            .await;
        chats
            .dc
            .wait_for(WAIT, &format!("{what}: discord prompt"), |v| {
                v.bot_dms(OWNER_DISCORD)
                    .into_iter()
                    .any(|m| m.text().contains(&needle))
                    .then_some(())
            })
            .await;
        chats
            .slack
            .wait_for(WAIT, &format!("{what}: slack prompt"), |v| {
                v.bot_messages(&testkit::fake_slack::dm_channel(OWNER_SLACK))
                    .into_iter()
                    .any(|m| m.text.contains(&needle))
                    .then_some(())
            })
            .await;
        let data = prompt
            .buttons()
            .into_iter()
            .find(|(_, d)| d.ends_with("allow-once"))
            .expect("allow-once button")
            .1;
        chats.tg.press(OWNER_TG, OWNER_TG, prompt.message_id, &data);
        assert_eq!(
            req.outcome(WAIT).await.unwrap(),
            Some(Decision::AllowOnce),
            "{what}"
        );
        // Let the prompts be finished everywhere, then stop so every line is flushed.
        chats
            .slack
            .wait_for(WAIT, &format!("{what}: slack prompt finished"), |v| {
                v.bot_messages(&testkit::fake_slack::dm_channel(OWNER_SLACK))
                    .into_iter()
                    .any(|m| m.text.contains(&needle) && m.buttons().is_empty())
                    .then_some(())
            })
            .await;
        // And the gateway's answer to the resolve (the resolved event can come first).
        if level != "warn" {
            wait_log(&b, "approval resolved", &what).await;
        }
        assert!(
            b.terminate(Duration::from_secs(15)).await.unwrap(),
            "{what}: clean exit"
        );

        let log = b.log();
        match level {
            "trace" => {
                assert!(log.lines().count() > 100, "{what}: a real trace log");
                let marker = if format == "json" {
                    "\"level\":\"TRACE\""
                } else {
                    " TRACE "
                };
                assert!(log.contains(marker), "{what}: has trace lines");
                assert!(log.contains("approval resolved"), "{what}: info lines too");
            }
            "debug" => {
                assert!(log.contains(" DEBUG "), "{what}: has debug lines");
                assert!(!log.contains(" TRACE "), "{what}: no trace lines");
            }
            "info" => {
                assert!(
                    log.contains("\"level\":\"INFO\""),
                    "{what}: JSON info lines"
                );
                assert!(log.contains("approval resolved"), "{what}");
                for l in log.lines().filter(|l| !l.is_empty()) {
                    assert!(
                        serde_json::from_str::<serde_json::Value>(l).is_ok(),
                        "{what}: not JSON: {l}"
                    );
                }
            }
            _ => assert!(!log.contains(" INFO "), "{what}: warn and above only"),
        }
        let mut secrets = all_secrets(&gw);
        device_secrets(&mut secrets, &b.state_dir());
        assert_no_leak(&secrets, &b, &what);
        scanned_logs += 1;
    }

    // Error paths at trace level: each wrong chat token stops the start with an error
    // message; a rejected gateway token keeps the bridge up and unhealthy.
    for (name, wrong) in [
        (
            "telegram",
            Wrong {
                telegram: true,
                ..Wrong::default()
            },
        ),
        (
            "discord",
            Wrong {
                discord: true,
                ..Wrong::default()
            },
        ),
        (
            "slack",
            Wrong {
                slack: true,
                ..Wrong::default()
            },
        ),
    ] {
        let what = format!("wrong {name} token");
        let mut b = start(setup(&gw, &chats, wrong), "trace", "text").await;
        let err = b
            .wait_healthy(Duration::from_secs(60))
            .await
            .expect_err("a wrong chat token stops the bridge")
            .to_string();
        assert!(
            err.contains(&format!("{name} health check failed")),
            "{what}: says why: {err}"
        );
        let secrets = all_secrets(&gw);
        secrets.assert_absent(&format!("{what}: error"), err.as_bytes());
        assert_no_leak(&secrets, &b, &what);
        scanned_logs += 1;
    }
    {
        let what = "rejected gateway token";
        let mut b = start(
            setup(
                &gw,
                &chats,
                Wrong {
                    gateway: true,
                    ..Wrong::default()
                },
            ),
            "trace",
            "text",
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let body = loop {
            let last = b.healthz().await;
            if let Ok((503, body)) = &last
                && body["problems"][0].as_str().is_some_and(|p| {
                    p.starts_with("gateway: link down (gateway refused the connection")
                })
            {
                break body.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: /healthz names the gateway error: {last:?}\n{}",
                b.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let secrets = all_secrets(&gw);
        secrets.assert_absent(&format!("{what}: /healthz"), body.to_string().as_bytes());
        b.terminate(Duration::from_secs(15)).await.unwrap();
        let log = b.log();
        assert!(log.contains("gateway link down"), "{what}: logged:\n{log}");
        assert_no_leak(&secrets, &b, what);
        scanned_logs += 1;
    }

    // `check`: a good config, then one where every secret is wrong.
    let good = BridgeProcess::configure(exe(), setup(&gw, &chats, Wrong::default())).unwrap();
    let (ok, out) = good.check().await.unwrap();
    assert!(ok && out.contains("all checks passed"), "{out}");
    for name in ["telegram", "discord", "slack"] {
        assert!(
            out.contains(&format!("{name:<8} ok")),
            "check names {name}: {out}"
        );
    }
    let mut secrets = all_secrets(&gw);
    device_secrets(&mut secrets, &good.state_dir());
    secrets.assert_absent("check (good)", out.as_bytes());
    let all_wrong = Wrong {
        gateway: true,
        telegram: true,
        discord: true,
        slack: true,
    };
    let bad = BridgeProcess::configure(exe(), setup(&gw, &chats, all_wrong)).unwrap();
    let (ok, out) = bad.check().await.unwrap();
    assert!(!ok, "{out}");
    for field in ["gateway.token", "telegram", "discord", "slack"] {
        assert!(
            out.contains(&format!("PROBLEM  {}", field.split('.').next().unwrap()))
                && out.contains(field),
            "check names {field}: {out}"
        );
    }
    secrets.assert_absent("check (all wrong)", out.as_bytes());
    eprintln!("scanned {scanned_logs} bridge runs and 2 check runs; no secret found");
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_password_and_session_token_never_leak() {
    let (gw, hs) = tokio::join!(Gateway::start(GatewayConfig::default()), Synapse::start());
    let gw = gw.expect("start the OpenClaw gateway");
    let hs = hs.expect("start Synapse");
    let bot = hs.register("bot", MATRIX_PASSWORD, false).await.unwrap();
    hs.register("owner", "owner-password", false).await.unwrap();
    let owner = testkit::synapse::MatrixUser::login(&hs, "owner", "owner-password")
        .await
        .unwrap();
    let setup = BridgeSetup {
        gateway_url: gw.url(),
        gateway_token: gw.token().to_owned(),
        telegram_api_url: String::new(),
        bot_token: String::new(),
        allow_from: Vec::new(),
        targets: None,
        extra_toml: format!(
            "[matrix]\nhomeserver = \"{}\"\nuser_id = \"{bot}\"\npassword = \"env:AB_TEST_MATRIX_PASSWORD\"\nallow_from = [\"{}\"]\n",
            hs.url(),
            owner.user_id
        ),
        env: vec![("AB_TEST_MATRIX_PASSWORD".into(), MATRIX_PASSWORD.into())],
    };
    let mut b = start(setup.clone(), "trace", "text").await;
    b.wait_healthy(Duration::from_secs(90)).await.unwrap();
    let op = Operator::connect(&gw, "requester").await.unwrap();
    let req = op
        .request_exec("echo matrix-secrets", 60_000)
        .await
        .unwrap();
    let room = owner.wait_invite(WAIT).await.unwrap();
    owner.join(&room).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !b.log().contains("prompt delivered") {
        assert!(
            std::time::Instant::now() < deadline,
            "prompt delivered:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    op.resolve(&req.id, Decision::Deny).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !b.log().contains("prompt shows the outcome") {
        assert!(
            std::time::Instant::now() < deadline,
            "prompt finished:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(b.terminate(Duration::from_secs(15)).await.unwrap());

    let log = b.log();
    assert!(log.contains(" TRACE "), "a real trace log");
    let mut secrets = all_secrets(&gw);
    device_secrets(&mut secrets, &b.state_dir());
    let session = std::fs::read(b.state_dir().join("matrix/session.json")).expect("session");
    let session: serde_json::Value = serde_json::from_slice(&session).unwrap();
    let access = find_str(&session, "access_token").expect("an access token in the session");
    secrets.text("matrix access token", &access);
    assert_no_leak(&secrets, &b, "matrix at trace");

    let (ok, out) = b.check().await.unwrap();
    assert!(ok && out.contains("matrix"), "{out}");
    secrets.assert_absent("check (matrix)", out.as_bytes());
    let mut wrong = setup;
    wrong.env = vec![(
        "AB_TEST_MATRIX_PASSWORD".into(),
        format!("WRONG-{MATRIX_PASSWORD}"),
    )];
    let (ok, out) = BridgeProcess::configure(exe(), wrong)
        .unwrap()
        .check()
        .await
        .unwrap();
    assert!(!ok && out.contains("PROBLEM  matrix"), "{out}");
    secrets.text("wrong matrix password", &format!("WRONG-{MATRIX_PASSWORD}"));
    secrets.assert_absent("check (wrong matrix password)", out.as_bytes());
}

/// The first string value under `key`, anywhere in `v`.
fn find_str(v: &serde_json::Value, key: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(o) => o
            .get(key)
            .and_then(|x| x.as_str().map(str::to_owned))
            .or_else(|| o.values().find_map(|x| find_str(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_str(x, key)),
        _ => None,
    }
}
