//! Micro-benchmarks of the bridge's per-approval hot paths, all pure and before any I/O:
//! gateway frame -> `Approval`, Telegram button press -> authorize, and prompt rendering.
//! Run: `cargo bench -p channels --bench hot_paths` (CI runs each once in test mode).

use std::hint::black_box;

use bridge::approval::{Approval, Kind};
use bridge::channel::{MessageRef, Target, Via};
use bridge::gateway::frames::{self, Inbound};
use bridge::policy::{self, Facts};
use channels::telegram::render::{self, Footer};
use channels::telegram::{Telegram, codec};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const ID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
/// A typical command: 95 characters.
const COMMAND: &str = "git -C /home/alice/src/approval-bridge push --force-with-lease origin feature/criterion-benches";

/// An `exec.approval.requested` event frame as the gateway sends it.
fn requested_frame() -> String {
    json!({
        "type": "event", "event": "exec.approval.requested", "seq": 4711,
        "payload": {
            "id": ID, "approvalKind": "exec",
            "request": {
                "command": COMMAND, "cwd": "/home/alice/src/approval-bridge",
                "host": "gateway", "security": "allowlist", "ask": "on-miss",
                "agentId": "main", "sessionKey": "agent:main:telegram:dm:123456789",
                "resolvedPath": "/usr/bin/git",
                "warningText": "rewrites remote history",
                "commandAnalysis": {
                    "riskKinds": ["network", "history-rewrite"],
                    "warningLines": ["rewrites remote history", "pushes to a remote"]
                },
                "allowedDecisions": ["allow-once", "allow-always", "deny"]
            },
            "createdAtMs": 1_795_000_000_000_i64, "expiresAtMs": 1_795_000_120_000_i64
        }
    })
    .to_string()
}

/// The whole decode: frame text -> `Inbound` -> `Approval`.
fn decode(text: &str) -> Approval {
    let Ok(Inbound::Event(ev)) = frames::parse(text) else {
        panic!("not an event frame")
    };
    Approval::from_gateway(Kind::Exec, &ev.payload).expect("a readable approval")
}

/// Gateway frame text -> `Inbound`, and on to an `Approval`.
fn frame_decode(c: &mut Criterion) {
    let text = requested_frame();
    let mut g = c.benchmark_group("frame_decode");
    g.bench_function("parse", |b| b.iter(|| frames::parse(black_box(&text))));
    g.bench_function("parse_to_approval", |b| b.iter(|| decode(black_box(&text))));
    g.finish();
}

/// A Telegram button press: callback data decoded, then `policy::authorize` (allowed).
fn callback_decode_authorize(c: &mut Criterion) {
    let approval = decode(&requested_frame());
    let data = format!("exec_approve:{ID}:allow-once");
    let prompt = |chat: &str, message: &str| MessageRef {
        target: Target {
            channel: "telegram".into(),
            chat: chat.into(),
        },
        message: message.into(),
    };
    let our_prompts = [prompt("123456789", "4242"), prompt("987654321", "77")];
    let via = Via::Prompt(our_prompts[0].clone());
    c.bench_function("callback_decode_authorize", |b| {
        b.iter(|| {
            let cb = codec::decode(black_box(&data)).expect("valid callback data");
            let codec::Callback::Decide { kind, choice, .. } = &cb else {
                panic!("a decision's button");
            };
            let facts = Facts {
                allowed: true,
                in_dm: true,
                pending: Some(black_box(&approval)),
                via: black_box(&via),
                our_prompts: black_box(&our_prompts),
                choice: *choice,
                kind: Some(*kind),
            };
            policy::authorize(&facts).expect("authorized");
            cb
        })
    });
}

/// The pending prompt's HTML (typical and hostile command) and its inline keyboard.
fn prompt_render(c: &mut Criterion) {
    let typical = decode(&requested_frame());
    let unit = r#"<a href="https://evil.example/">tap</a> && echo '&amp;' > /dev/null; "#;
    let hostile = Approval {
        command: unit.repeat(5_000 / unit.len() + 1)[..5_000].to_owned(),
        ..typical.clone()
    };
    // Rendered as it arrives: the time left is the request's whole life.
    let pending = Footer::Pending {
        now_ms: typical.created_at_ms,
    };
    let mut g = c.benchmark_group("prompt_render");
    g.bench_function("typical_100", |b| {
        b.iter(|| render::render(black_box(&typical), pending))
    });
    g.bench_function("hostile_5000_html", |b| {
        b.iter(|| render::render(black_box(&hostile), pending))
    });
    g.bench_function("keyboard", |b| {
        b.iter(|| Telegram::keyboard(black_box(&typical)).expect("fits 64 bytes"))
    });
    g.finish();
}

criterion_group!(
    benches,
    frame_decode,
    callback_decode_authorize,
    prompt_render
);
criterion_main!(benches);
