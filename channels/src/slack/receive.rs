//! The inbound path: Socket Mode envelopes (and HTTP interactivity payloads) decoded into
//! the engine's `Answer`s. Pure functions over JSON; the connection loop lives in
//! `socket.rs`.
//!
//! Every button press becomes an `Answer` (garbage included, as `Request::Malformed`), so
//! the engine audits it and tells the presser exactly once through `notify`.

use bridge::approval::Responder;
use bridge::channel::{Answer, MessageRef, ReplyTo, Request, Target, Via, command};
use serde_json::Value;

use super::{NAME, codec};

/// How `notify` reaches the responder of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An ephemeral message to `user` in `channel` (only they see it); `press` (the
    /// action's timestamp) tells two presses apart.
    Ephemeral {
        channel: String,
        user: String,
        press: String,
    },
    /// A message in `channel`, after the command sent at `ts`.
    Message { channel: String, ts: String },
}

/// The prompt's message id as stored: `<channel id>|<ts>`, stable across restarts.
pub fn message_id(channel: &str, ts: &str) -> String {
    format!("{channel}|{ts}")
}

/// Splits a stored message id.
pub fn split_message_id(s: &str) -> Option<(&str, &str)> {
    let (c, ts) = s.split_once('|')?;
    (!c.is_empty() && !ts.is_empty()).then_some((c, ts))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// A `block_actions` payload: one `Answer` per action (Slack sends one per press).
/// `target_of` maps an IM channel id to the user whose DM it is (the prompt's target).
pub fn block_actions(payload: &Value, target_of: impl Fn(&str) -> Option<String>) -> Vec<Answer> {
    let Some(user) = str_at(payload, &["user", "id"]) else {
        return Vec::new();
    };
    let display = str_at(payload, &["user", "username"])
        .or_else(|| str_at(payload, &["user", "name"]))
        .map(|n| format!("@{n}"));
    let responder = Responder {
        channel: NAME.to_owned(),
        user_id: user.to_owned(),
        display,
    };
    let channel = str_at(payload, &["container", "channel_id"])
        .or_else(|| str_at(payload, &["channel", "id"]))
        .unwrap_or_default();
    let ts = str_at(payload, &["container", "message_ts"])
        .or_else(|| str_at(payload, &["message", "ts"]))
        .unwrap_or_default();
    let ephemeral = payload["container"]["is_ephemeral"]
        .as_bool()
        .unwrap_or(false);
    // Our prompts live only in the bot's IMs (`D…`); only the DM's owner and the bot see one.
    let in_dm = channel.starts_with('D') && !ephemeral;
    let chat = target_of(channel).unwrap_or_else(|| channel.to_owned());
    let via = Via::Prompt(MessageRef {
        target: Target {
            channel: NAME.to_owned(),
            chat,
        },
        message: message_id(channel, ts),
    });
    let actions = payload["actions"].as_array().cloned().unwrap_or_default();
    actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let action_id = action["action_id"].as_str().unwrap_or_default();
            let value = action["value"].as_str().unwrap_or_default();
            let request = match codec::decode(action_id, value) {
                Ok(a) => a.into_request(),
                Err(e) => Request::Malformed {
                    raw: value.chars().take(300).collect(),
                    why: e.to_string(),
                },
            };
            let unique = action["action_ts"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{ts}.{i}"));
            Answer {
                responder: responder.clone(),
                request,
                via: via.clone(),
                in_dm,
                reply: ReplyTo::new(
                    NAME,
                    Reply::Ephemeral {
                        channel: channel.to_owned(),
                        user: user.to_owned(),
                        press: unique,
                    },
                ),
            }
        })
        .collect()
}

/// An Events API `message` event: `/approve <id> <decision>` or `/pending`, else `None`.
/// Messages from bots (ours included) and edits are ignored.
pub fn message_event(event: &Value) -> Option<Answer> {
    if event["type"].as_str() != Some("message")
        || event.get("bot_id").is_some_and(|b| !b.is_null())
        || event.get("subtype").is_some()
    {
        return None;
    }
    let user = str_at(event, &["user"])?;
    let request = command::parse(str_at(event, &["text"])?)?;
    let channel = str_at(event, &["channel"])?;
    let ts = str_at(event, &["ts"]).unwrap_or_default();
    Some(Answer {
        responder: Responder {
            channel: NAME.to_owned(),
            user_id: user.to_owned(),
            display: None,
        },
        request,
        via: Via::Command {
            chat: channel.to_owned(),
        },
        // Slack delivers `message.im` events only for the bot's own IMs.
        in_dm: event["channel_type"].as_str() == Some("im"),
        reply: ReplyTo::new(
            NAME,
            Reply::Message {
                channel: channel.to_owned(),
                ts: ts.to_owned(),
            },
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{ApprovalId, Decision, Kind};
    use serde_json::json;

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    fn press(user: &str, channel: &str, action_id: &str, value: &str) -> Value {
        json!({
            "type": "block_actions",
            "user": {"id": user, "username": "ann", "name": "ann", "team_id": "T1"},
            "team": {"id": "T1"},
            "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": channel, "is_ephemeral": false},
            "channel": {"id": channel, "name": "directmessage"},
            "message": {"ts": "1700000000.000100"},
            "actions": [{"action_id": action_id, "value": value, "type": "button", "block_id": "b", "action_ts": "1700000001.1"}],
        })
    }

    /// Issue 6: the payload's tag is the kind the press claims; the engine compares it with
    /// the approval's, so a `system_approve:` payload carrying an exec id reaches it as such.
    #[test]
    fn a_press_carries_the_kind_its_tag_names() {
        for (data, id, kind) in [
            (
                format!("exec_approve:{UUID}:deny"),
                UUID.to_owned(),
                Kind::Exec,
            ),
            (
                format!("plugin_approve:{UUID}:deny"),
                format!("plugin:{UUID}"),
                Kind::Plugin,
            ),
            (
                format!("system_approve:{UUID}:deny"),
                UUID.to_owned(),
                Kind::System,
            ),
        ] {
            let a = block_actions(&press("U1", "D1", &data, &data), |c| {
                (c == "D1").then(|| "U1".to_owned())
            });
            assert_eq!(
                a[0].request,
                Request::Decide {
                    id: ApprovalId(id),
                    choice: Decision::Deny.into(),
                    kind: Some(kind)
                },
                "{data}"
            );
        }
    }

    #[test]
    fn a_press_in_the_owners_dm_decodes() {
        let data = format!("exec_approve:{UUID}:deny");
        let a = block_actions(&press("U1", "D1", &data, &data), |c| {
            (c == "D1").then(|| "U1".to_owned())
        });
        assert_eq!(a.len(), 1);
        let a = &a[0];
        assert_eq!(
            a.request,
            Request::Decide {
                id: ApprovalId(UUID.into()),
                choice: Decision::Deny.into(),
                kind: Some(Kind::Exec)
            }
        );
        assert!(a.in_dm);
        assert_eq!(a.responder.user_id, "U1");
        assert_eq!(a.responder.display.as_deref(), Some("@ann"));
        assert_eq!(
            a.via,
            Via::Prompt(MessageRef {
                target: Target {
                    channel: "slack".into(),
                    chat: "U1".into()
                },
                message: "D1|1700000000.000100".into()
            })
        );
        assert_eq!(
            a.reply.handle(),
            Some(&Reply::Ephemeral {
                channel: "D1".into(),
                user: "U1".into(),
                press: "1700000001.1".into()
            })
        );
    }

    #[test]
    fn forged_and_foreign_presses_are_marked() {
        let data = format!("exec_approve:{UUID}:deny");
        let forged = block_actions(
            &press(
                "U1",
                "D1",
                &data,
                &format!("exec_approve:{UUID}:allow-always"),
            ),
            |_| None,
        );
        assert!(matches!(forged[0].request, Request::Malformed { .. }));
        let channel = block_actions(&press("U1", "C1", &data, &data), |_| None);
        assert!(!channel[0].in_dm, "a public channel is not a DM");
        assert_eq!(
            channel[0].via,
            Via::Prompt(MessageRef {
                target: Target {
                    channel: "slack".into(),
                    chat: "C1".into()
                },
                message: "C1|1700000000.000100".into()
            })
        );
        assert!(
            block_actions(&json!({"type": "block_actions"}), |_| None).is_empty(),
            "no user, no answer"
        );
    }

    #[test]
    fn im_messages_decode_and_others_are_ignored() {
        let ev = json!({"type": "message", "channel_type": "im", "channel": "D1", "user": "U1", "text": format!("/approve {UUID} always"), "ts": "1.2"});
        let a = message_event(&ev).unwrap();
        assert_eq!(
            a.request,
            Request::Decide {
                id: ApprovalId(UUID.into()),
                choice: Decision::AllowAlways.into(),
                kind: None
            }
        );
        assert!(a.in_dm);
        assert_eq!(
            a.reply.handle(),
            Some(&Reply::Message {
                channel: "D1".into(),
                ts: "1.2".into()
            })
        );
        let mut bot = ev.clone();
        bot["bot_id"] = json!("B1");
        assert!(message_event(&bot).is_none());
        let mut edit = ev.clone();
        edit["subtype"] = json!("message_changed");
        assert!(message_event(&edit).is_none());
        let mut chan = ev.clone();
        chan["channel_type"] = json!("channel");
        assert!(!message_event(&chan).unwrap().in_dm);
        assert!(
            message_event(
                &json!({"type": "message", "user": "U1", "channel": "D1", "text": "hello"})
            )
            .is_none()
        );
    }
}
