//! Gateway text frames: `frames::parse`, then every event through `client::translate` and
//! `Approval::from_gateway` for each kind, and every `res` through the error readers.
#![no_main]

use bridge::approval::{Approval, Kind};
use bridge::gateway::client::{resolved_outcome, translate};
use bridge::gateway::frames::{self, Inbound};
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

fn approvals(payload: &Value) {
    for kind in [Kind::Exec, Kind::Plugin, Kind::System] {
        if let Ok(a) = Approval::from_gateway(kind, payload) {
            check(&a);
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
