//! Issue 6, attacks: "zero unauthorized resolutions". For each channel, the real bridge binary
//! against the real OpenClaw gateway and the channel's service (fakes at the wire; Synapse for
//! Matrix), one table of attacks thrown at live prompts: strangers and lookalikes pressing and
//! typing, forged and replayed payloads, lookalike `/approve`, and a hostile request that must
//! render literally and ping nobody. Then the owner decides, and the requester must see exactly
//! that decision. Each channel's figures go to `testkit::figures` as `attacks-<channel>`.
//!
//! The driver is generic over [`Arena`] (one impl per channel: how to press, type and read
//! back); the table is [`table`] plus each channel's extra rows.

use std::time::{Duration, Instant};

use bridge::approval::{ApprovalId, Decision};
use bridge::store::{AuditRecord, SqliteStore, Store};
use serde_json::json;
use testkit::bridge::{BridgeProcess, BridgeSetup};
use testkit::conformance::Fixture;
use testkit::openclaw::{Gateway, GatewayConfig, Operator};

const WAIT: Duration = Duration::from_secs(20);

/// Who sends an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Owner,
    /// Not in allowFrom.
    Stranger,
    /// Not in allowFrom, but with the owner's display name and username.
    Lookalike,
}

/// Where a press happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On the prompt, from the presser's direct chat with the bot.
    Dm,
    /// From a group chat / shared channel where the bot is a member.
    Group,
}

/// Which live approval an attack aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// Offers all three decisions.
    Full,
    /// Raised with `ask: always`: only allow-once and deny.
    Restricted,
}

/// One row of the table.
#[derive(Debug, Clone)]
enum Attack {
    /// `who` presses a button (or reacts) carrying `data` on the prompt of `on`.
    Press {
        who: Who,
        place: Place,
        on: On,
        data: String,
    },
    /// `who` types `text` in their direct chat with the bot.
    Type { who: Who, text: String },
}

/// The ids an attack table is built from.
struct Ids {
    full: ApprovalId,
    restricted: ApprovalId,
}

/// One channel's world: the bridge, the gateway, the service and its people.
#[allow(async_fn_in_trait)]
trait Arena {
    /// A prompt as the service shows it.
    type Prompt: Clone;
    /// What a press or a typed line returns, to find the bridge's answer to it.
    type Sent;

    fn name(&self) -> &'static str;
    fn gateway(&self) -> &Gateway;
    fn bridge(&self) -> &BridgeProcess;
    fn owner_id(&self) -> String;
    /// The prompt for `id` in the owner's DM, once it is actionable.
    async fn prompt(&mut self, id: &ApprovalId) -> Self::Prompt;
    /// The payload of the prompt's live control for `d` (callback data, custom id, reaction key).
    fn control(&self, p: &Self::Prompt, d: Decision) -> String;
    /// Whether `place` exists on this channel.
    fn has(&self, place: Place) -> bool;
    /// Sends one attack (or the owner's genuine press) at prompt `p`.
    async fn send(&mut self, a: &Attack, p: &Self::Prompt) -> Self::Sent;
    /// What the sender was told about it, when the channel answers every press; waits.
    async fn told(&self, s: &Self::Sent) -> Option<String>;
    /// Whether `told` pairs answers with presses by arrival order only (Slack's ephemerals
    /// name no press): then an answer to one press may be read as another's while several
    /// are in flight, and the replay texts are not checked (the audit log still is).
    fn answers_by_order(&self) -> bool {
        false
    }
    /// Whether the prompt still offers live controls.
    async fn live(&self, p: &Self::Prompt) -> bool;
    /// The owner asks `/pending` and waits for the answer: every input sent before it has
    /// been through the engine.
    async fn barrier(&mut self);
    /// The attack table for this channel (usually [`table`]).
    fn rows(
        &self,
        ids: &Ids,
        full: &Self::Prompt,
        restricted: &Self::Prompt,
    ) -> Vec<(String, Attack)>;
    /// Channel-specific payloads: the conformance fixture's forged payloads and the overlong one.
    async fn forged(&self, ids: &Ids) -> Vec<(String, String)>;
    /// The hostile request's prompt renders literally, keeps its controls and pings nobody.
    async fn check_hostile(&mut self, p: &Self::Prompt, literal: &str);
}

/// A request whose command carries each channel's markup and mentions, invisible and
/// direction-changing characters, and `len` bytes of text.
fn hostile_command(len: usize) -> (String, String) {
    let visible = "echo <b>bold</b> </code> <a href=\"https://evil.example\">x</a> &amp; *md* _it_ \
                   ~s~ `tick` ``` ||spoiler|| [link](https://evil.example) https://evil.example \
                   @everyone @here @room <!channel> <!here> <@U123> <@111111111111111111> <@&5> \
                   <#C999> <https://evil.example|click me>";
    let command = format!(
        "{visible} zw[\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}] rtl[\u{202E}gnp.exe\u{202C}] {}",
        "A".repeat(len)
    );
    (command, visible.to_owned())
}

/// `/approve` spelled with characters that only look right, by `who`.
fn lookalike_approves(ids: &Ids, who: Who) -> Vec<(String, Attack)> {
    let id = ids.full.as_str();
    let cyr_id = id.replacen(['a', 'c', 'e'], "\u{0430}", 1);
    [
        ("cyrillic a", format!("/\u{0430}pprove {id} allow-once")),
        (
            "fullwidth slash",
            format!("\u{FF0F}approve {id} allow-once"),
        ),
        (
            "zero-width joiner",
            format!("/appr\u{200D}ove {id} allow-once"),
        ),
        (
            "zero-width space in id",
            format!("/approve {id}\u{200B} allow-once"),
        ),
        ("cyrillic in id", format!("/approve {cyr_id} allow-once")),
        (
            "non-breaking hyphen",
            format!("/approve {id} allow\u{2011}once"),
        ),
        (
            "fullwidth decision",
            format!("/approve {id} \u{FF41}llow-once"),
        ),
    ]
    .into_iter()
    .map(|(n, t)| {
        (
            format!("{who:?} types /approve with {n}"),
            Attack::Type { who, text: t },
        )
    })
    .collect()
}

/// The table every button channel runs (Matrix has its own rows, see [`matrix`]).
fn table<A: Arena>(
    arena: &A,
    ids: &Ids,
    full: &A::Prompt,
    restricted: &A::Prompt,
) -> Vec<(String, Attack)> {
    let press = |who, place, on, data: String| Attack::Press {
        who,
        place,
        on,
        data,
    };
    let mut t = Vec::new();
    for d in Decision::ALL {
        t.push((
            format!("stranger presses {d}"),
            press(Who::Stranger, Place::Dm, On::Full, arena.control(full, d)),
        ));
    }
    t.push((
        "stranger presses allow-once on the restricted prompt".into(),
        press(
            Who::Stranger,
            Place::Dm,
            On::Restricted,
            arena.control(restricted, Decision::AllowOnce),
        ),
    ));
    t.push((
        "lookalike (owner's name) presses allow-once".into(),
        press(
            Who::Lookalike,
            Place::Dm,
            On::Full,
            arena.control(full, Decision::AllowOnce),
        ),
    ));
    if arena.has(Place::Group) {
        t.push((
            "stranger presses allow-always in a group".into(),
            press(
                Who::Stranger,
                Place::Group,
                On::Full,
                arena.control(full, Decision::AllowAlways),
            ),
        ));
        t.push((
            "owner presses allow-once in a group".into(),
            press(
                Who::Owner,
                Place::Group,
                On::Full,
                arena.control(full, Decision::AllowOnce),
            ),
        ));
    }
    let (f, r) = (ids.full.as_str(), ids.restricted.as_str());
    let unknown = uuid::Uuid::new_v4();
    for (name, data) in [
        ("unknown id", format!("exec_approve:{unknown}:allow-once")),
        (
            "another approval's id",
            format!("exec_approve:{r}:allow-once"),
        ),
        (
            "wrong kind (plugin tag)",
            format!("plugin_approve:{f}:allow-once"),
        ),
        (
            "wrong kind (system tag)",
            format!("system_approve:{f}:allow-once"),
        ),
        (
            "injected separator after",
            format!("exec_approve:{f}:allow-once:deny"),
        ),
        (
            "injected separator inside",
            format!("exec_approve:{f}::allow-once"),
        ),
        (
            "two decisions",
            format!("exec_approve:{f}:deny:allow-always"),
        ),
        (
            "replacement character (lossy non-UTF-8)",
            format!("exec_approve:{f}:allow-once\u{FFFD}"),
        ),
        ("NUL byte", format!("exec_approve:{f}:allow-once\u{0}")),
        (
            "upper-case decision",
            format!("exec_approve:{f}:ALLOW-ONCE"),
        ),
    ] {
        t.push((
            format!("owner presses forged: {name}"),
            press(Who::Owner, Place::Dm, On::Full, data),
        ));
    }
    // The system tag with an exec id decodes as a decision on that id; its tag claims another
    // kind than the approval's, so the owner's press above is refused (wrong_kind, issue 6).
    // A stranger's is refused before its kind is looked at.
    t.push((
        "stranger presses forged: wrong kind (system tag)".into(),
        press(
            Who::Stranger,
            Place::Dm,
            On::Full,
            format!("system_approve:{f}:allow-once"),
        ),
    ));
    t.push((
        "owner presses allow-always where only allow-once/deny are offered".into(),
        press(
            Who::Owner,
            Place::Dm,
            On::Restricted,
            format!("exec_approve:{r}:allow-always"),
        ),
    ));
    t.push((
        "stranger types /approve".into(),
        Attack::Type {
            who: Who::Stranger,
            text: format!("/approve {f} allow-once"),
        },
    ));
    t.push((
        "lookalike types /approve".into(),
        Attack::Type {
            who: Who::Lookalike,
            text: format!("/approve {f} allow-always"),
        },
    ));
    t.push((
        "owner types /approve allow-always on the restricted approval".into(),
        Attack::Type {
            who: Who::Owner,
            text: format!("/approve {r} allow-always"),
        },
    ));
    t.push((
        "owner types /approve with an unknown id".into(),
        Attack::Type {
            who: Who::Owner,
            text: format!("/approve {unknown} allow-once"),
        },
    ));
    t.push((
        "owner types /approve with an injected separator".into(),
        Attack::Type {
            who: Who::Owner,
            text: format!("/approve {f}:allow-once"),
        },
    ));
    // Owner-held trust: a time-boxed allow or a grant's Revoke is the owner's alone, and a
    // window the prompt does not offer is no window at all.
    t.push((
        "stranger presses the offered allow-1h".into(),
        press(
            Who::Stranger,
            Place::Dm,
            On::Full,
            format!("exec_approve:{f}:allow-1h"),
        ),
    ));
    for window in ["allow-7h", "allow-25h", "allow-0m", "allow-1h30m"] {
        t.push((
            format!("owner presses a window not offered: {window}"),
            press(
                Who::Owner,
                Place::Dm,
                On::Full,
                format!("exec_approve:{f}:{window}"),
            ),
        ));
    }
    t.push((
        "stranger presses a grant's Revoke".into(),
        press(
            Who::Stranger,
            Place::Dm,
            On::Full,
            "grant_revoke:g-1a2b3c4d".into(),
        ),
    ));
    for text in ["/grants", "/revoke g-1a2b3c4d"] {
        t.push((
            format!("stranger types {text}"),
            Attack::Type {
                who: Who::Stranger,
                text: text.into(),
            },
        ));
    }
    t.extend(lookalike_approves(ids, Who::Owner));
    t.extend(lookalike_approves(ids, Who::Stranger));
    t
}

/// What one channel's run found.
#[derive(Default)]
struct Tally {
    cases: Vec<String>,
    /// Presses the bridge answered with a reason (channels that answer every press).
    told: usize,
    unauthorized: Vec<String>,
}

fn audit(bridge: &BridgeProcess) -> Vec<AuditRecord> {
    SqliteStore::open(&bridge.state_dir().join("bridge.sqlite"))
        .unwrap()
        .audit_log(None)
        .unwrap()
}

/// Whether the gateway still lists `id` as pending.
async fn pending_at_gateway(op: &Operator, id: &ApprovalId) -> bool {
    let method = if id.as_str().starts_with("plugin:") {
        "plugin.approval.list"
    } else {
        "exec.approval.list"
    };
    let list = op.call(method, json!({})).await.expect(method);
    list.to_string().contains(id.as_str())
}

/// Runs the whole suite on one channel and records its figures.
async fn run<A: Arena>(arena: &mut A) {
    let t0 = Instant::now();
    let name = arena.name();
    let op = Operator::connect(arena.gateway(), "requester")
        .await
        .unwrap();
    let full = op
        .request_exec("rm -rf /srv/attacked", 120_000)
        .await
        .unwrap();
    let restricted = op
        .request_exec_with("echo restricted", 120_000, json!({"ask": "always"}))
        .await
        .unwrap();
    // 100 KB first; the gateway may refuse that much, then the largest it takes.
    let mut hostile_refusals = Vec::new();
    let mut hostile = None;
    let mut literal = String::new();
    for len in [100_000, 60_000, 30_000, 10_000] {
        let (command, visible) = hostile_command(len);
        match op.request_exec(&command, 120_000).await {
            Ok(r) => {
                hostile = Some((r, command.len()));
                literal = visible;
                break;
            }
            Err(e) => hostile_refusals.push(format!("{} bytes: {e}", command.len())),
        }
    }
    let (hostile, hostile_bytes) = hostile.expect("the gateway takes a hostile request");
    let ids = Ids {
        full: full.id.clone(),
        restricted: restricted.id.clone(),
    };
    let p_full = arena.prompt(&ids.full).await;
    let p_restricted = arena.prompt(&ids.restricted).await;
    let p_hostile = arena.prompt(&hostile.id).await;
    let delivered = t0.elapsed();

    let mut tally = Tally::default();
    // Hostile content: one case per property checked on the prompt.
    arena.check_hostile(&p_hostile, &literal).await;
    tally
        .cases
        .push("hostile request renders literally, keeps its controls, pings nobody".into());

    let mut rows = arena.rows(&ids, &p_full, &p_restricted);
    for (what, data) in arena.forged(&ids).await {
        rows.push((
            format!("owner presses fixture-forged {what}"),
            Attack::Press {
                who: Who::Owner,
                place: Place::Dm,
                on: On::Full,
                data,
            },
        ));
    }
    let mut sent = Vec::new();
    for (what, attack) in &rows {
        let p = match attack {
            Attack::Press {
                on: On::Restricted, ..
            } => &p_restricted,
            _ => &p_full,
        };
        sent.push((what.clone(), arena.send(attack, p).await));
        tally.cases.push(what.clone());
    }
    arena.barrier().await;
    for (what, s) in &sent {
        if let Some(text) = arena.told(s).await {
            assert!(
                !text.is_empty(),
                "{name}: {what}: answered without a reason"
            );
            assert!(
                !Decision::ALL.iter().any(|d| text.contains(d.past())),
                "{name}: {what}: the attacker was told of a decision: {text}"
            );
            tally.told += 1;
        }
    }
    // Every attacked approval is still pending, at the gateway and for the requester.
    for (label, req) in [
        ("full", &full),
        ("restricted", &restricted),
        ("hostile", &hostile),
    ] {
        if req.decision.is_finished() || !pending_at_gateway(&op, &req.id).await {
            tally
                .unauthorized
                .push(format!("{label} approval {} no longer pending", req.id));
        }
    }
    assert!(
        arena.live(&p_full).await,
        "{name}: the attacked prompt keeps its controls"
    );
    assert!(
        arena.live(&p_restricted).await,
        "{name}: the restricted prompt keeps its controls"
    );

    // The genuine decisions, the first one tapped twice (the same tap delivered twice).
    let genuine = |d| Attack::Press {
        who: Who::Owner,
        place: Place::Dm,
        on: On::Full,
        data: d,
    };
    let deny_full = arena.control(&p_full, Decision::Deny);
    arena.send(&genuine(deny_full.clone()), &p_full).await;
    let dup = arena.send(&genuine(deny_full.clone()), &p_full).await;
    // Read before any other press, so an answer-by-order channel cannot mix it up.
    let dup_told = arena.told(&dup).await;
    tally.cases.push("the owner's tap delivered twice".into());
    let allow_restricted = arena.control(&p_restricted, Decision::AllowOnce);
    arena
        .send(
            &Attack::Press {
                who: Who::Owner,
                place: Place::Dm,
                on: On::Restricted,
                data: allow_restricted,
            },
            &p_restricted,
        )
        .await;
    let deny_hostile = arena.control(&p_hostile, Decision::Deny);
    arena.send(&genuine(deny_hostile), &p_hostile).await;
    let ids_full = full.id.clone();
    for (label, req, want) in [
        ("full", full, Decision::Deny),
        ("restricted", restricted, Decision::AllowOnce),
        ("hostile", hostile, Decision::Deny),
    ] {
        let got = req.outcome(WAIT).await.unwrap();
        if got != Some(want) {
            tally.unauthorized.push(format!(
                "{label}: requester saw {got:?}, the owner chose {want}"
            ));
        }
    }
    // Replays after the resolution: the old allow-once press, by the owner and a stranger.
    // One at a time, each answer read before the next press: channels that answer a press
    // with a message of its own (Slack's ephemerals) are matched to presses by order.
    let allow_full = arena.control(&p_full, Decision::AllowOnce);
    let replays = [
        ("replay of allow-once after the resolution", Who::Owner),
        (
            "stranger replays allow-once after the resolution",
            Who::Stranger,
        ),
    ];
    let mut late = vec![("the same tap's second delivery", dup_told)];
    for (what, who) in replays {
        let press = Attack::Press {
            who,
            place: Place::Dm,
            on: On::Full,
            data: allow_full.clone(),
        };
        let sent = arena.send(&press, &p_full).await;
        late.push((what, arena.told(&sent).await));
    }
    tally
        .cases
        .push("replay of an old valid press after the resolution (owner)".into());
    tally
        .cases
        .push("replay of an old valid press after the resolution (stranger)".into());
    arena.barrier().await;
    for (what, text) in late.iter().filter(|_| !arena.answers_by_order()) {
        if let Some(text) = text {
            assert!(
                !text.contains(Decision::AllowOnce.past()),
                "{name}: {what}: {text}"
            );
            tally.told += 1;
        }
    }
    // The finished prompt loses its controls (the edit runs on its own task).
    let deadline = Instant::now() + WAIT;
    while arena.live(&p_full).await {
        assert!(
            Instant::now() < deadline,
            "{name}: the finished prompt still offers controls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The audit log: exactly one resolution per approval, each by the owner; every refusal.
    let log = audit(arena.bridge());
    let owner = arena.owner_id();
    let resolved: Vec<&AuditRecord> = log.iter().filter(|r| r.event == "resolved").collect();
    for r in &resolved {
        if r.actor.as_deref() != Some(owner.as_str()) {
            tally
                .unauthorized
                .push(format!("resolved by {:?}: {:?}", r.actor, r.detail));
        }
    }
    let on_full = resolved
        .iter()
        .filter(|r| r.approval_id.as_deref() == Some(ids_full.as_str()))
        .count();
    if on_full != 1 {
        tally
            .unauthorized
            .push(format!("{on_full} resolutions of the attacked approval"));
    }
    // Nobody pressed a time-boxed allow but attackers: no grant may exist.
    for r in log.iter().filter(|r| r.event == "grant_created") {
        tally
            .unauthorized
            .push(format!("grant made by {:?}: {:?}", r.actor, r.detail));
    }
    let refused: Vec<&AuditRecord> = log.iter().filter(|r| r.event == "refused").collect();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for r in &refused {
        *reasons
            .entry(r.detail["reason"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    // No crash: the process answers /healthz and logged no panic.
    let (code, health) = arena.bridge().healthz().await.unwrap();
    let panicked = arena.bridge().log().contains("panicked");
    let crashes = usize::from(code != 200) + usize::from(panicked);
    testkit::figures::record(
        &format!("attacks-{name}"),
        &json!({
            "channel": name,
            "attack_cases": tally.cases.len(),
            "unauthorized_resolutions": tally.unauthorized.len(),
            "refusals_audited": refused.len(),
            "refusals_by_reason": reasons,
            "attackers_told_why": tally.told,
            "crashes": crashes,
            "resolutions_audited": resolved.len(),
            "hostile_command_bytes": hostile_bytes,
            "hostile_sizes_the_gateway_refused": hostile_refusals,
            "seconds_to_first_prompts": delivered.as_secs_f64(),
            "seconds_total": t0.elapsed().as_secs_f64(),
            "cases": tally.cases,
        }),
    );
    assert!(
        tally.unauthorized.is_empty(),
        "{name}: unauthorized resolutions: {:?}",
        tally.unauthorized
    );
    assert_eq!(
        crashes, 0,
        "{name}: /healthz {code} {health}; panicked: {panicked}"
    );
    assert!(
        refused.len() >= tally.told.min(rows.len()),
        "{name}: {} refusals audited for {} refused presses",
        refused.len(),
        tally.told
    );
    if rows
        .iter()
        .any(|(what, _)| what == "owner presses forged: wrong kind (system tag)")
    {
        assert!(
            reasons.contains_key("wrong_kind"),
            "{name}: the owner's wrong-kind press was not refused as such: {reasons:?}"
        );
    }
}

/// The bridge binary with `extra_toml` as its only channel section.
async fn bridge_for(gw: &Gateway, extra_toml: String, env: Vec<(String, String)>) -> BridgeProcess {
    let setup = BridgeSetup {
        gateway_url: gw.url(),
        gateway_token: gw.token().to_owned(),
        telegram_api_url: String::new(),
        bot_token: String::new(),
        allow_from: Vec::new(),
        targets: None,
        extra_toml,
        env,
    };
    BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
        .await
        .unwrap()
}

/// The payload of a live button for (`id`, `d`) among `buttons`, else the canonical one (a
/// replay of a button that is gone).
fn button_for<'a>(
    buttons: impl IntoIterator<Item = &'a str>,
    id: &ApprovalId,
    d: Decision,
) -> String {
    let want = format!("exec_approve:{id}:{}", d.as_str());
    buttons
        .into_iter()
        .find(|b| *b == want)
        .map(str::to_owned)
        .unwrap_or(want)
}

fn print_log_on_panic(bridge: &BridgeProcess, gw: &Gateway) {
    if std::thread::panicking() {
        eprintln!(
            "---- bridge log ----\n{}\n---- gateway log: {} ----",
            bridge.log(),
            gw.log_path().display()
        );
    }
}

mod telegram {
    use super::*;
    use testkit::fake_telegram::{FakeTelegram, User, parse_html};

    const OWNER: i64 = 111_111_111;
    const STRANGER: i64 = 222_222_222;
    const LOOKALIKE: i64 = 333_333_333;
    const GROUP: i64 = -100_123_456;
    const TOKEN: &str = "123456:ATTACK-token";

    struct Tg {
        gw: Gateway,
        tg: FakeTelegram,
        bridge: BridgeProcess,
    }

    impl Drop for Tg {
        fn drop(&mut self) {
            print_log_on_panic(&self.bridge, &self.gw);
        }
    }

    #[derive(Clone)]
    struct Prompt {
        id: ApprovalId,
        message_id: i64,
    }

    enum Sent {
        Query(String),
        Text,
    }

    fn user(who: Who) -> User {
        match who {
            Who::Owner => User::new(OWNER),
            Who::Stranger => User::new(STRANGER),
            // Same first name and username as the owner; only the numeric id differs.
            Who::Lookalike => User {
                id: LOOKALIKE,
                ..User::new(OWNER)
            },
        }
    }

    impl Arena for Tg {
        type Prompt = Prompt;
        type Sent = Sent;

        fn name(&self) -> &'static str {
            "telegram"
        }
        fn gateway(&self) -> &Gateway {
            &self.gw
        }
        fn bridge(&self) -> &BridgeProcess {
            &self.bridge
        }
        fn owner_id(&self) -> String {
            OWNER.to_string()
        }

        async fn prompt(&mut self, id: &ApprovalId) -> Prompt {
            let needle = format!("exec_approve:{id}:");
            let message_id = self
                .tg
                .wait_for(WAIT, &format!("prompt for {id}"), |v| {
                    v.bot_messages(OWNER)
                        .into_iter()
                        .find(|m| m.buttons().iter().any(|(_, d)| d.starts_with(&needle)))
                        .map(|m| m.message_id)
                })
                .await;
            Prompt {
                id: id.clone(),
                message_id,
            }
        }

        fn control(&self, p: &Prompt, d: Decision) -> String {
            let m = self.tg.message(OWNER, p.message_id).unwrap();
            let b = m.buttons();
            button_for(b.iter().map(|(_, data)| data.as_str()), &p.id, d)
        }

        fn has(&self, _: Place) -> bool {
            true
        }

        fn rows(&self, ids: &Ids, full: &Prompt, restricted: &Prompt) -> Vec<(String, Attack)> {
            table(self, ids, full, restricted)
        }

        async fn send(&mut self, a: &Attack, p: &Prompt) -> Sent {
            match a {
                Attack::Press {
                    who, place, data, ..
                } => {
                    let u = user(*who);
                    let chat = match (place, who) {
                        (Place::Group, _) => GROUP,
                        (Place::Dm, Who::Owner) => OWNER,
                        // A copy of the prompt in the presser's own chat.
                        (Place::Dm, _) => u.id,
                    };
                    Sent::Query(self.tg.press_as(&u, chat, p.message_id, data))
                }
                Attack::Type { who, text } => {
                    let u = user(*who);
                    self.tg.send_text_as(&u, u.id, text);
                    Sent::Text
                }
            }
        }

        async fn told(&self, s: &Sent) -> Option<String> {
            match s {
                Sent::Query(q) => {
                    let a = self.tg.wait_callback_answer(q, WAIT).await;
                    Some(a["text"].as_str().unwrap_or_default().to_owned())
                }
                Sent::Text => None,
            }
        }

        async fn live(&self, p: &Prompt) -> bool {
            let needle = format!("exec_approve:{}:", p.id);
            self.tg
                .message(OWNER, p.message_id)
                .unwrap()
                .buttons()
                .iter()
                .any(|(_, d)| d.starts_with(&needle))
        }

        async fn barrier(&mut self) {
            let answers = |v: &testkit::fake_telegram::View<'_>| {
                v.bot_messages(OWNER)
                    .iter()
                    .filter(|m| m.text.contains("pending") && m.buttons().is_empty())
                    .count()
            };
            let before = self.tg.wait_for(WAIT, "count", |v| Some(answers(v))).await;
            self.tg.send_text(OWNER, OWNER, "/pending");
            self.tg
                .wait_for(WAIT, "the /pending barrier", |v| {
                    (answers(v) > before).then_some(())
                })
                .await;
        }

        async fn forged(&self, ids: &Ids) -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = crate::telegram::TelegramFixture::start()
                .await
                .forged_payloads()
                .into_iter()
                .map(|p| (format!("{p:?}"), p))
                .collect();
            v.push((
                "over 64 bytes".into(),
                format!("exec_approve:{}:allow-once{}", ids.full, "x".repeat(64)),
            ));
            v
        }

        async fn check_hostile(&mut self, p: &Prompt, literal: &str) {
            let m = self.tg.message(OWNER, p.message_id).unwrap();
            assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
            let parsed = parse_html(&m.raw).expect("Telegram accepts the prompt's HTML");
            assert_eq!(parsed, m.text);
            assert!(m.text.contains(literal), "literal: {}", m.text);
            assert!(!m.raw.contains("<a "), "no live link: {}", m.raw);
            assert!(m.text.encode_utf16().count() <= 4096);
            let mut got: Vec<String> = m.buttons().into_iter().map(|(_, d)| d).collect();
            got.retain(|d| d.starts_with(&format!("exec_approve:{}:", p.id)));
            assert!(!got.is_empty(), "the hostile prompt keeps its buttons");
            for c in self.tg.calls().iter().filter(|c| c.method == "sendMessage") {
                assert!(
                    c.params.get("entities").is_none(),
                    "no mention entities forged: {}",
                    c.params
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn telegram_attacks_resolve_nothing() {
        let (gw, tg) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeTelegram::start(TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let setup = BridgeSetup::telegram_owner(&gw, &tg, OWNER);
        let bridge =
            BridgeProcess::start_healthy(env!("CARGO_BIN_EXE_approval-bridge").as_ref(), setup)
                .await
                .unwrap();
        run(&mut Tg { gw, tg, bridge }).await;
    }
}

mod discord {
    use super::*;
    use testkit::fake_discord::{FakeDiscord, User};

    const TOKEN: &str = "MTIwMDAwMDAwMDAwMDAwMDA0Mg.fake.discord-attack-token";
    const OWNER: &str = "111111111111111111";
    const STRANGER: &str = "999999999999999999";
    const LOOKALIKE: &str = "888888888888888888";

    struct Dc {
        gw: Gateway,
        dc: FakeDiscord,
        bridge: BridgeProcess,
    }

    impl Drop for Dc {
        fn drop(&mut self) {
            print_log_on_panic(&self.bridge, &self.gw);
        }
    }

    #[derive(Clone)]
    struct Prompt {
        id: ApprovalId,
        message: String,
    }

    enum Sent {
        Ix(String),
        Dm,
    }

    fn user(who: Who) -> User {
        match who {
            Who::Owner => User::new(OWNER),
            Who::Stranger => User::new(STRANGER),
            Who::Lookalike => User {
                id: LOOKALIKE.into(),
                ..User::new(OWNER)
            },
        }
    }

    impl Arena for Dc {
        type Prompt = Prompt;
        type Sent = Sent;

        fn name(&self) -> &'static str {
            "discord"
        }
        fn gateway(&self) -> &Gateway {
            &self.gw
        }
        fn bridge(&self) -> &BridgeProcess {
            &self.bridge
        }
        fn owner_id(&self) -> String {
            OWNER.into()
        }

        async fn prompt(&mut self, id: &ApprovalId) -> Prompt {
            let needle = format!("exec_approve:{id}:");
            let message = self
                .dc
                .wait_for(WAIT, &format!("prompt for {id}"), |v| {
                    v.bot_dms(OWNER)
                        .into_iter()
                        .find(|m| m.buttons().iter().any(|(_, c, _)| c.starts_with(&needle)))
                        .map(|m| m.id.clone())
                })
                .await;
            Prompt {
                id: id.clone(),
                message,
            }
        }

        fn control(&self, p: &Prompt, d: Decision) -> String {
            let b = self.dc.message(&p.message).unwrap().buttons();
            button_for(b.iter().map(|(_, c, _)| c.as_str()), &p.id, d)
        }

        fn has(&self, _place: Place) -> bool {
            true
        }

        fn rows(&self, ids: &Ids, full: &Prompt, restricted: &Prompt) -> Vec<(String, Attack)> {
            table(self, ids, full, restricted)
        }

        async fn send(&mut self, a: &Attack, p: &Prompt) -> Sent {
            match a {
                Attack::Press {
                    who,
                    place: Place::Dm,
                    data,
                    ..
                } => Sent::Ix(self.dc.press(&user(*who), &p.message, data)),
                Attack::Press {
                    who,
                    place: Place::Group,
                    data,
                    ..
                } => Sent::Ix(self.dc.press_in_guild(&user(*who), &p.message, data)),
                Attack::Type { who, text } => {
                    self.dc.send_dm(&user(*who), text);
                    Sent::Dm
                }
            }
        }

        async fn told(&self, s: &Sent) -> Option<String> {
            match s {
                Sent::Ix(ix) => {
                    let m = self.dc.wait_followup(ix, WAIT).await;
                    assert!(!m.can_ping(), "a notice that can ping: {m:?}");
                    Some(m.text())
                }
                Sent::Dm => None,
            }
        }

        async fn live(&self, p: &Prompt) -> bool {
            !self.dc.message(&p.message).unwrap().buttons().is_empty()
        }

        async fn barrier(&mut self) {
            let mid = self.dc.send_dm(&User::new(OWNER), "/pending");
            self.dc
                .wait_for(WAIT, "the /pending barrier", |v| {
                    v.bot_dms(OWNER)
                        .into_iter()
                        .find(|m| m.reply_to.as_deref() == Some(mid.as_str()))
                        .map(|_| ())
                })
                .await;
        }

        async fn forged(&self, ids: &Ids) -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = crate::discord::DiscordFixture::start()
                .await
                .forged_payloads()
                .into_iter()
                .map(|p| (format!("{p:?}"), p))
                .collect();
            v.push((
                "over 100 characters".into(),
                format!("exec_approve:{}:allow-once{}", ids.full, "x".repeat(100)),
            ));
            v
        }

        async fn check_hostile(&mut self, p: &Prompt, literal: &str) {
            let m = self.dc.message(&p.message).unwrap();
            assert!(m.text().contains(literal), "literal: {}", m.text());
            assert!(!m.can_ping());
            assert_eq!(
                m.allowed_mentions,
                json!({"parse": [], "replied_user": false})
            );
            let desc = m.embeds[0]["description"].as_str().unwrap();
            assert_eq!(desc.matches("```").count(), 2, "only our fences: {desc}");
            assert!(
                !m.buttons().is_empty(),
                "the hostile prompt keeps its buttons"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn discord_attacks_resolve_nothing() {
        let (gw, dc) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeDiscord::start(TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let bridge = bridge_for(
            &gw,
            format!(
                "[discord]\nbot_token = \"env:AB_TEST_DISCORD_TOKEN\"\napi_url = \"{}\"\nallow_from = [\"{OWNER}\"]\n",
                dc.api_url()
            ),
            vec![("AB_TEST_DISCORD_TOKEN".into(), TOKEN.into())],
        )
        .await;
        dc.wait_ready(WAIT).await;
        let mut arena = Dc { gw, dc, bridge };
        run(&mut arena).await;
        for c in arena.dc.calls().iter().filter(|c| {
            c.method != "GET" && (c.body.get("content").is_some() || c.body.get("embeds").is_some())
        }) {
            assert_eq!(
                c.body["allowed_mentions"]["parse"],
                json!([]),
                "{} {} can ping",
                c.method,
                c.path
            );
        }
    }
}

mod slack {
    use super::*;
    use testkit::fake_slack::{self, FakeSlack};

    const BOT_TOKEN: &str = "xoxb-1111-2222-attacktoken";
    const APP_TOKEN: &str = "xapp-1-A0FAKEAPP-3333-attackapptoken";
    const OWNER: &str = "U0OWNER001";
    const STRANGER: &str = "U0STRANGER";
    const LOOKALIKE: &str = "U0LOOKALIK";
    const SHARED: &str = "C0SHARED01";

    struct Sl {
        gw: Gateway,
        slack: FakeSlack,
        bridge: BridgeProcess,
        /// Presses sent per (channel, user), to pair each with its ephemeral answer.
        presses: std::collections::HashMap<(String, String), usize>,
    }

    impl Drop for Sl {
        fn drop(&mut self) {
            print_log_on_panic(&self.bridge, &self.gw);
        }
    }

    #[derive(Clone)]
    struct Prompt {
        id: ApprovalId,
        channel: String,
        ts: String,
    }

    enum Sent {
        Press {
            channel: String,
            user: String,
            nth: usize,
        },
        Text,
    }

    fn user(who: Who) -> &'static str {
        match who {
            Who::Owner => OWNER,
            Who::Stranger => STRANGER,
            Who::Lookalike => LOOKALIKE,
        }
    }

    impl Arena for Sl {
        fn answers_by_order(&self) -> bool {
            true
        }

        type Prompt = Prompt;
        type Sent = Sent;

        fn name(&self) -> &'static str {
            "slack"
        }
        fn gateway(&self) -> &Gateway {
            &self.gw
        }
        fn bridge(&self) -> &BridgeProcess {
            &self.bridge
        }
        fn owner_id(&self) -> String {
            OWNER.into()
        }

        async fn prompt(&mut self, id: &ApprovalId) -> Prompt {
            let needle = format!("exec_approve:{id}:");
            let dm = fake_slack::dm_channel(OWNER);
            let (channel, ts) = self
                .slack
                .wait_for(WAIT, &format!("prompt for {id}"), |v| {
                    v.bot_messages(&dm)
                        .into_iter()
                        .find(|m| m.buttons().iter().any(|b| b.value.starts_with(&needle)))
                        .map(|m| (m.channel.clone(), m.ts.clone()))
                })
                .await;
            Prompt {
                id: id.clone(),
                channel,
                ts,
            }
        }

        fn control(&self, p: &Prompt, d: Decision) -> String {
            let b = self.slack.message(&p.channel, &p.ts).unwrap().buttons();
            button_for(b.iter().map(|b| b.value.as_str()), &p.id, d)
        }

        fn has(&self, _: Place) -> bool {
            true
        }

        fn rows(&self, ids: &Ids, full: &Prompt, restricted: &Prompt) -> Vec<(String, Attack)> {
            table(self, ids, full, restricted)
        }

        async fn send(&mut self, a: &Attack, p: &Prompt) -> Sent {
            match a {
                Attack::Press {
                    who, place, data, ..
                } => {
                    let u = user(*who);
                    let channel = match place {
                        Place::Dm => p.channel.clone(),
                        Place::Group => SHARED.to_owned(),
                    };
                    if *who == Who::Lookalike {
                        // Slack's payload carries a username/name: the owner's, on another id.
                        let owner_name = format!("user_{}", OWNER.to_ascii_lowercase());
                        self.slack.inject(
                            "interactive",
                            json!({
                                "type": "block_actions",
                                "user": {"id": u, "username": owner_name, "name": owner_name, "team_id": "T0FAKETEAM"},
                                "api_app_id": "A0FAKEAPP",
                                "container": {"type": "message", "message_ts": p.ts, "channel_id": channel, "is_ephemeral": false},
                                "trigger_id": "1.2",
                                "team": {"id": "T0FAKETEAM", "domain": "fake"},
                                "channel": {"id": channel, "name": "directmessage"},
                                "message": {"type": "message", "ts": p.ts},
                                "actions": [{"type": "button", "action_id": data, "block_id": "approval_actions",
                                             "value": data, "text": {"type": "plain_text", "text": "?"}, "action_ts": "1.3"}],
                            }),
                        );
                    } else {
                        self.slack.press(u, &channel, &p.ts, data, data);
                    }
                    let k = (channel.clone(), u.to_owned());
                    let nth = self.presses.entry(k).or_default();
                    *nth += 1;
                    Sent::Press {
                        channel,
                        user: u.to_owned(),
                        nth: *nth,
                    }
                }
                Attack::Type { who, text } => {
                    let u = user(*who);
                    self.slack.send_text(u, &fake_slack::dm_channel(u), text);
                    Sent::Text
                }
            }
        }

        async fn told(&self, s: &Sent) -> Option<String> {
            match s {
                Sent::Press { channel, user, nth } => Some(
                    self.slack
                        .wait_for(WAIT, &format!("answer {nth} to {user} in {channel}"), |v| {
                            v.ephemerals()
                                .iter()
                                .filter(|e| e.channel == *channel && e.user == *user)
                                .nth(nth - 1)
                                .map(|e| e.text.clone())
                        })
                        .await,
                ),
                Sent::Text => None,
            }
        }

        async fn live(&self, p: &Prompt) -> bool {
            !self
                .slack
                .message(&p.channel, &p.ts)
                .unwrap()
                .buttons()
                .is_empty()
        }

        async fn barrier(&mut self) {
            let dm = fake_slack::dm_channel(OWNER);
            let answers = |v: &fake_slack::View<'_>| {
                v.bot_messages(&dm)
                    .iter()
                    .filter(|m| m.text.contains("pending") && m.buttons().is_empty())
                    .count()
            };
            let before = self
                .slack
                .wait_for(WAIT, "count", |v| Some(answers(v)))
                .await;
            self.slack.send_text(OWNER, &dm, "/pending");
            self.slack
                .wait_for(WAIT, "the /pending barrier", |v| {
                    (answers(v) > before).then_some(())
                })
                .await;
        }

        async fn forged(&self, ids: &Ids) -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = crate::slack::SlackFixture::start()
                .await
                .forged_payloads()
                .into_iter()
                .map(|p| (format!("{p:?}"), p))
                .collect();
            v.push((
                "over 255 characters".into(),
                format!("exec_approve:{}:allow-once{}", ids.full, "x".repeat(255)),
            ));
            v
        }

        async fn check_hostile(&mut self, p: &Prompt, literal: &str) {
            let m = self.slack.message(&p.channel, &p.ts).unwrap();
            assert!(m.markup.is_empty(), "live tokens: {:?}", m.markup);
            let seen = m.text.replace('\u{200B}', "");
            assert!(seen.contains(literal), "literal: {seen}");
            assert!(
                !m.fallback.contains('<'),
                "notification text: {}",
                m.fallback
            );
            assert!(
                !m.buttons().is_empty(),
                "the hostile prompt keeps its buttons"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn slack_attacks_resolve_nothing() {
        let (gw, slack) = tokio::join!(
            Gateway::start(GatewayConfig::default()),
            FakeSlack::start(BOT_TOKEN, APP_TOKEN)
        );
        let gw = gw.expect("start the OpenClaw gateway");
        let bridge = bridge_for(
            &gw,
            format!(
                "[slack]\nbot_token = \"env:AB_TEST_SLACK_BOT_TOKEN\"\napp_token = \"env:AB_TEST_SLACK_APP_TOKEN\"\n\
                 api_url = \"{}\"\nallow_from = [\"{OWNER}\"]\n",
                slack.url()
            ),
            vec![
                ("AB_TEST_SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
                ("AB_TEST_SLACK_APP_TOKEN".into(), APP_TOKEN.into()),
            ],
        )
        .await;
        slack
            .wait_for(WAIT, "socket mode connected", |v| {
                (v.live_sockets() == 1).then_some(())
            })
            .await;
        run(&mut Sl {
            gw,
            slack,
            bridge,
            presses: Default::default(),
        })
        .await;
    }
}

mod matrix {
    use super::*;
    use crate::matrix::{Accounts, accounts, bridge_exe, is_prompt_for, matrix_toml, seen};
    use testkit::synapse::MatrixUser;
    use testkit::synapse::matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};

    struct Mx {
        gw: Gateway,
        acc: Accounts,
        /// Another account, named like the owner.
        lookalike: MatrixUser,
        bridge: BridgeProcess,
        /// The DM room, once the owner joined it (the bridge creates it with the first prompt).
        room: OwnedRoomId,
        /// Each person's live reaction per (prompt, key): pressing again first takes it back,
        /// as Matrix clients do (Synapse refuses the same annotation twice).
        reactions: std::collections::HashMap<(Who, OwnedEventId, String), OwnedEventId>,
    }

    impl Drop for Mx {
        fn drop(&mut self) {
            print_log_on_panic(&self.bridge, &self.gw);
        }
    }

    #[derive(Clone)]
    struct Prompt {
        id: ApprovalId,
        event: OwnedEventId,
    }

    const KEYS: [(Decision, &str); 3] = [
        (Decision::AllowOnce, "✅"),
        (Decision::Deny, "❌"),
        (Decision::AllowAlways, "♾️"),
    ];

    impl Mx {
        fn user(&self, who: Who) -> &MatrixUser {
            match who {
                Who::Owner => &self.acc.owner,
                Who::Stranger => &self.acc.stranger,
                Who::Lookalike => &self.lookalike,
            }
        }

        /// The owner joins the bot's DM room and brings the stranger and the lookalike in.
        async fn join(&mut self) {
            let room = self.acc.owner.wait_invite(WAIT).await.unwrap();
            self.acc.owner.join(&room).await.unwrap();
            for u in [&self.acc.stranger, &self.lookalike] {
                self.acc.owner.invite(&room, &u.user_id).await.unwrap();
                let r = u.wait_invite(WAIT).await.unwrap();
                u.join(&r).await.unwrap();
            }
            self.room = room;
        }

        /// Bot messages in the room whose body mentions pending approvals.
        async fn pending_answers(&self) -> usize {
            let tl = self
                .acc
                .owner
                .timeline(&self.room)
                .await
                .unwrap_or_default();
            tl.iter()
                .filter(|v| {
                    v["sender"] == self.acc.bot.as_str()
                        && v["content"]["msgtype"] == "m.notice"
                        && v["content"]["body"]
                            .as_str()
                            .is_some_and(|b| b.contains("pending"))
                })
                .count()
        }
    }

    impl Arena for Mx {
        type Prompt = Prompt;
        type Sent = ();

        fn name(&self) -> &'static str {
            "matrix"
        }
        fn gateway(&self) -> &Gateway {
            &self.gw
        }
        fn bridge(&self) -> &BridgeProcess {
            &self.bridge
        }
        fn owner_id(&self) -> String {
            self.acc.owner.user_id.to_string()
        }

        async fn prompt(&mut self, id: &ApprovalId) -> Prompt {
            if self.room.as_str() == "!none:localhost" {
                self.join().await;
            }
            let deadline = Instant::now() + WAIT;
            loop {
                let s = seen(
                    &self.acc.owner,
                    &self.room,
                    &self.acc.bot,
                    is_prompt_for(id),
                    "prompt",
                )
                .await;
                if s.keys.len() >= 2 {
                    return Prompt {
                        id: id.clone(),
                        event: s.event_id,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "prompt for {id} not seeded: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        fn control(&self, _: &Prompt, d: Decision) -> String {
            KEYS.iter().find(|(k, _)| *k == d).unwrap().1.to_owned()
        }

        fn has(&self, place: Place) -> bool {
            place == Place::Dm
        }

        fn rows(&self, ids: &Ids, full: &Prompt, restricted: &Prompt) -> Vec<(String, Attack)> {
            let react = |who, on, key: &str| Attack::Press {
                who,
                place: Place::Dm,
                on,
                data: key.to_owned(),
            };
            let mut t = Vec::new();
            for d in Decision::ALL {
                t.push((
                    format!("stranger in the DM room reacts {d}"),
                    react(Who::Stranger, On::Full, &self.control(full, d)),
                ));
            }
            t.push((
                "stranger reacts allow-once on the restricted prompt".into(),
                react(
                    Who::Stranger,
                    On::Restricted,
                    &self.control(restricted, Decision::AllowOnce),
                ),
            ));
            t.push((
                "lookalike (owner's display name) reacts allow-once".into(),
                react(Who::Lookalike, On::Full, "✅"),
            ));
            t.push((
                "owner reacts allow-always where only allow-once/deny are offered".into(),
                react(Who::Owner, On::Restricted, "♾️"),
            ));
            let (f, r) = (ids.full.as_str(), ids.restricted.as_str());
            let unknown = uuid::Uuid::new_v4();
            for (text, who, what) in [
                (
                    format!("/approve {f} allow-once"),
                    Who::Stranger,
                    "stranger types /approve",
                ),
                (
                    format!("/approve {f} allow-always"),
                    Who::Lookalike,
                    "lookalike types /approve",
                ),
                (
                    format!("/approve {r} allow-always"),
                    Who::Owner,
                    "owner types allow-always on the restricted approval",
                ),
                (
                    format!("/approve {unknown} allow-once"),
                    Who::Owner,
                    "owner types /approve with an unknown id",
                ),
                (
                    format!("/approve {f}:allow-once"),
                    Who::Owner,
                    "owner types /approve with an injected separator",
                ),
                (
                    format!("/approve plugin:{f} allow-once"),
                    Who::Owner,
                    "owner types /approve with the wrong kind",
                ),
                (
                    format!("/approve {f} allow-once {}", "x".repeat(5000)),
                    Who::Owner,
                    "owner types an overlong /approve",
                ),
            ] {
                t.push((what.to_owned(), Attack::Type { who, text }));
            }
            t.extend(lookalike_approves(ids, Who::Owner));
            t.extend(lookalike_approves(ids, Who::Stranger));
            t
        }

        async fn send(&mut self, a: &Attack, p: &Prompt) {
            let room = self.room.clone();
            let r = match a {
                Attack::Press { who, data, .. } => {
                    let key = (*who, p.event.clone(), data.clone());
                    if let Some(old) = self.reactions.remove(&key) {
                        let _ = self.user(*who).redact(&room, &old).await;
                    }
                    match self.user(*who).react(&room, &p.event, data).await {
                        Ok(ev) => {
                            self.reactions.insert(key, ev);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Attack::Type { who, text } => {
                    self.user(*who).send_text(&room, text).await.map(|_| ())
                }
            };
            if let Err(e) = r {
                panic!("matrix attack {a:?} not sent: {e}");
            }
        }

        async fn told(&self, _: &()) -> Option<String> {
            None
        }

        async fn live(&self, p: &Prompt) -> bool {
            let s = seen(
                &self.acc.owner,
                &self.room,
                &self.acc.bot,
                is_prompt_for(&p.id),
                "prompt",
            )
            .await;
            !s.keys.is_empty()
        }

        async fn barrier(&mut self) {
            let before = self.pending_answers().await;
            self.acc
                .owner
                .send_text(&self.room, "/pending")
                .await
                .unwrap();
            let deadline = Instant::now() + WAIT;
            while self.pending_answers().await <= before {
                assert!(Instant::now() < deadline, "no answer to /pending");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        async fn forged(&self, ids: &Ids) -> Vec<(String, String)> {
            // A reaction carries only its key (the conformance fixture has no forged payloads).
            [
                "👍".to_owned(),
                "allow-once".to_owned(),
                "✅✅".to_owned(),
                format!("exec_approve:{}:allow-once", ids.full),
                format!("✅{}", "x".repeat(300)),
            ]
            .into_iter()
            .map(|k| (format!("reaction key {k:.20?}"), k))
            .collect()
        }

        async fn check_hostile(&mut self, p: &Prompt, literal: &str) {
            let s = seen(
                &self.acc.owner,
                &self.room,
                &self.acc.bot,
                is_prompt_for(&p.id),
                "prompt",
            )
            .await;
            assert!(s.body.contains(literal), "literal: {}", s.body);
            assert!(
                !s.html.contains("<a href") && !s.html.contains("<b>bold"),
                "{}",
                s.html
            );
            assert!(!s.keys.is_empty(), "the hostile prompt keeps its reactions");
            let tl = self.acc.owner.timeline(&self.room).await.unwrap();
            let ev = tl
                .iter()
                .find(|v| v["event_id"] == p.event.as_str())
                .unwrap();
            assert_eq!(ev["content"]["m.mentions"], json!({}), "pings nobody");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn matrix_attacks_resolve_nothing() {
        // One after the other: both pick a free loopback port by binding and releasing it, so
        // started together they can pick the same one (seen: the gateway's EADDRINUSE).
        let acc = accounts().await;
        let gw = Gateway::start(GatewayConfig::default()).await;
        let gw = gw.expect("start the OpenClaw gateway");
        acc.hs
            .register("lookalike", "lookalike-password", false)
            .await
            .unwrap();
        let lookalike = MatrixUser::login(&acc.hs, "lookalike", "lookalike-password")
            .await
            .unwrap();
        let owner_name = acc
            .owner
            .client
            .account()
            .get_display_name()
            .await
            .unwrap()
            .unwrap_or_else(|| "owner".into());
        lookalike
            .client
            .account()
            .set_display_name(Some(&owner_name))
            .await
            .unwrap();
        let mut setup = BridgeSetup {
            gateway_url: gw.url(),
            gateway_token: gw.token().to_owned(),
            telegram_api_url: String::new(),
            bot_token: String::new(),
            allow_from: Vec::new(),
            targets: None,
            extra_toml: matrix_toml(&acc),
            env: Vec::new(),
        };
        setup.env = vec![(
            "AB_TEST_MATRIX_PASSWORD".into(),
            crate::matrix::BOT_PASSWORD.into(),
        )];
        let bridge = BridgeProcess::start_healthy(&bridge_exe(), setup)
            .await
            .unwrap();
        run(&mut Mx {
            gw,
            acc,
            lookalike,
            bridge,
            room: OwnedRoomId::try_from("!none:localhost").unwrap(),
            reactions: Default::default(),
        })
        .await;
    }
}
