//! Prompts Slack stored although the bridge never learned their `ts`. `chat.postMessage` has
//! no idempotency key: when its answer is lost after Slack stored the prompt, or the bridge
//! is killed before recording it, posting again leaves a second prompt with live buttons.
//! So before posting, the first time after start in each DM and after every post that
//! failed in a way Slack may still have handled, the adapter reads the DM's recent history
//! and adopts a prompt of the same approval instead of posting another.

use bridge::approval::ApprovalId;
use serde_json::Value;

use super::codec;

/// How many of a DM's latest messages one look reads (`conversations.history` `limit`).
pub const HISTORY: usize = 50;

/// The `ts` of a bot message among `messages` (a `conversations.history` page) whose buttons
/// decide approval `id`.
pub fn find(messages: &[Value], id: &ApprovalId) -> Option<String> {
    messages
        .iter()
        .filter(|m| m.get("bot_id").is_some_and(|b| !b.is_null()))
        .find(|m| decides(m, id))
        .and_then(|m| m["ts"].as_str().map(str::to_owned))
}

fn decides(message: &Value, id: &ApprovalId) -> bool {
    let blocks = message["blocks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| {
            b["elements"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
        .any(|e| {
            let (a, v) = (e["action_id"].as_str(), e["value"].as_str());
            a.zip(v)
                .and_then(|(a, v)| codec::decode(a, v).ok())
                .is_some_and(|action| {
                    matches!(action, codec::Action::Decide { id: shown, .. } if shown == *id)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(ts: &str, id: &str, bot: bool) -> Value {
        let data = format!("exec_approve:{id}:deny");
        let mut m = json!({"type": "message", "ts": ts, "user": "U0BOT",
            "blocks": [{"type": "actions", "elements": [{"type": "button", "action_id": data, "value": data}]}]});
        if bot {
            m["bot_id"] = json!("B0BOT");
        }
        m
    }

    #[test]
    fn finds_the_bots_prompt_for_that_approval_only() {
        let a = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
        let b = "1b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
        let page = [
            prompt("3.0", b, true),
            json!({"type": "message", "ts": "2.5", "user": "U0OWNER", "text": format!("exec_approve:{a}:deny")}),
            prompt("2.0", a, false), // not the bot's
            prompt("1.0", a, true),
        ];
        assert_eq!(find(&page, &ApprovalId(a.into())).as_deref(), Some("1.0"));
        assert_eq!(find(&page[..3], &ApprovalId(a.into())), None);
        assert_eq!(find(&[], &ApprovalId(a.into())), None);
    }
}
