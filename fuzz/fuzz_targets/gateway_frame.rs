//! Gateway text frames: `frames::parse`, every event through `client::translate` and
//! `Approval::from_gateway` for each kind (then every channel's renderer), every `res` error.
#![no_main]

use bridge::approval::{Approval, Kind};
use bridge::gateway::client::{resolved_outcome, translate};
use bridge::gateway::frames::{self, Inbound};
use channels::{discord, matrix, slack, telegram};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(a: &Approval) {
    assert!(!a.id.as_str().is_empty(), "empty id accepted");
    assert!(!a.command.is_empty(), "empty command/title");
    assert!(!a.allowed_decisions.is_empty(), "no decision offered");
    for (i, w) in a.warnings.iter().enumerate() {
        assert!(!w.is_empty() && w.trim() == w, "untrimmed warning {w:?}");
        assert!(!a.warnings[..i].contains(w), "duplicate warning {w:?}");
    }
}

/// Request text is untrusted: every renderer takes it without panicking, within its limits.
fn render(a: &Approval) {
    use telegram::render::{MAX_MESSAGE_UTF16, utf16_len};
    // Rendered as it arrives; the expiry is the request's, whatever it says.
    let now_ms = a.created_at_ms;
    let html = telegram::render::render(a, telegram::render::Footer::Pending { now_ms }).html;
    assert!(utf16_len(&html) <= MAX_MESSAGE_UTF16);
    let _ = matrix::render::render(a, matrix::render::Footer::Pending { now_ms });
    let _ = discord::render::embed(a, discord::render::Footer::Pending { now_ms });
    let _ = discord::render::components(a);
    let _ = slack::render::render(a, slack::render::Footer::Pending { now_ms });
}

fn approvals(payload: &Value) {
    for kind in [Kind::Exec, Kind::Plugin, Kind::System] {
        if let Ok(a) = Approval::from_gateway(kind, payload) {
            check(&a);
            render(&a);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match frames::parse(text) {
        Ok(Inbound::Event(ev)) => {
            let _ = translate(&ev);
            let _ = resolved_outcome(&ev.payload).summary();
            approvals(&ev.payload);
        }
        Ok(Inbound::Res(res)) => {
            if let Some(e) = &res.error {
                let _ = (
                    e.classify(),
                    e.is_pairing_required(),
                    e.pairing_request_id(),
                );
                let _ = (e.recommended_next_step(), e.is_retryable_unavailable());
            }
            // A list reply, as the replay after each connect reads it.
            if let Some(Value::Array(entries)) = &res.payload {
                entries.iter().for_each(approvals);
            }
        }
        Ok(Inbound::Req { .. }) | Err(_) => {}
    }
});
