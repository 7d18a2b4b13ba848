//! The inbound path: Bot API updates decoded into the engine's `Answer`s. Pure functions
//! over teloxide's types; the polling loop lives in `mod.rs`.
//!
//! Every callback query becomes an `Answer` (garbage included, as `Request::Malformed`),
//! so the engine audits it and answers the query exactly once through `notify`.

use bridge::approval::Responder;
use bridge::channel::{Answer, MessageRef, ReplyTo, Request, Target, Via, command};
use teloxide::types::{CallbackQuery, Chat, Message, User};

use super::{NAME, codec};

/// How `notify` reaches the responder of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer the callback query of a button press (a toast or an alert).
    Callback(String),
    /// A message in the chat, in reply to the command when there is one.
    Chat { chat: i64, reply_to: Option<i32> },
}

pub fn responder(u: &User) -> Responder {
    let display = match &u.username {
        Some(name) => format!("@{name}"),
        None => u.full_name(),
    };
    Responder {
        channel: NAME.to_owned(),
        user_id: u.id.0.to_string(),
        display: Some(display),
    }
}

fn in_dm(chat: &Chat, user: &User) -> bool {
    chat.is_private() && u64::try_from(chat.id.0).ok() == Some(user.id.0)
}

/// A button press.
pub fn callback(q: &CallbackQuery) -> Answer {
    let (via, in_dm) = match &q.message {
        Some(m) => (
            Via::Prompt(MessageRef {
                target: Target {
                    channel: NAME.to_owned(),
                    chat: m.chat().id.0.to_string(),
                },
                message: m.id().0.to_string(),
            }),
            in_dm(m.chat(), &q.from),
        ),
        // A button on an inline-mode message: never one of our prompts.
        None => (
            Via::Prompt(MessageRef {
                target: Target {
                    channel: NAME.to_owned(),
                    chat: String::new(),
                },
                message: q.inline_message_id.clone().unwrap_or_default(),
            }),
            false,
        ),
    };
    let request = match (&q.data, &q.message) {
        (None, _) => Request::Malformed {
            raw: String::new(),
            why: "callback query without data".into(),
        },
        (Some(raw), None) => Request::Malformed {
            raw: raw.clone(),
            why: "press on an inline message".into(),
        },
        (Some(raw), Some(_)) => match codec::decode(raw) {
            Ok(cb) => cb.into_request(),
            Err(e) => Request::Malformed {
                raw: raw.clone(),
                why: e.to_string(),
            },
        },
    };
    Answer {
        responder: responder(&q.from),
        request,
        via,
        in_dm,
        reply: ReplyTo::new(NAME, Reply::Callback(q.id.0.clone())),
    }
}

/// A text message: `/approve <id> <decision>` or `/pending` (optionally `@<bot>`), else `None`.
/// `bot_username` (without `@`), when known, filters commands addressed to other bots.
pub fn message(m: &Message, bot_username: Option<&str>) -> Option<Answer> {
    let from = m.from.as_ref().filter(|u| !u.is_bot)?;
    let request = command(m.text()?, bot_username)?;
    let chat = m.chat.id.0.to_string();
    Some(Answer {
        responder: responder(from),
        request,
        via: Via::Command { chat: chat.clone() },
        in_dm: in_dm(&m.chat, from),
        reply: ReplyTo::new(
            NAME,
            Reply::Chat {
                chat: m.chat.id.0,
                reply_to: Some(m.id.0),
            },
        ),
    })
}

/// Parses a command text. `None`: not a command of ours, or addressed to another bot
/// (`/approve@other_bot`).
pub fn command(text: &str, bot_username: Option<&str>) -> Option<Request> {
    command::parse_named(text, |head| match head.split_once('@') {
        Some((_, to)) if bot_username.is_some_and(|me| !to.eq_ignore_ascii_case(me)) => None,
        Some((cmd, _)) => Some(cmd),
        None => Some(head),
    })
}

#[cfg(test)]
mod tests {
    use bridge::approval::{ApprovalId, Decision, Kind};
    use serde_json::json;

    use super::*;

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    /// The owner (42) presses `data` on message 7 of their DM.
    fn press(data: &str) -> CallbackQuery {
        serde_json::from_value(json!({
            "id": "9001",
            "from": {"id": 42, "is_bot": false, "first_name": "Ann", "username": "ann"},
            "chat_instance": "ci",
            "data": data,
            "message": {
                "message_id": 7, "date": 1700000000, "text": "prompt",
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "from": {"id": 1, "is_bot": true, "first_name": "Bot", "username": "approval_bot"},
            },
        }))
        .unwrap()
    }

    /// Issue 6: the tag is the kind the press claims; the engine compares it with the
    /// approval's, so a `system_approve:` payload carrying an exec id must reach it as such.
    #[test]
    fn a_press_carries_the_kind_its_tag_names() {
        for (data, id, kind) in [
            (
                format!("exec_approve:{UUID}:allow-once"),
                UUID.to_owned(),
                Kind::Exec,
            ),
            (
                format!("plugin_approve:{UUID}:allow-once"),
                format!("plugin:{UUID}"),
                Kind::Plugin,
            ),
            (
                format!("system_approve:{UUID}:allow-once"),
                UUID.to_owned(),
                Kind::System,
            ),
        ] {
            let a = callback(&press(&data));
            assert_eq!(
                a.request,
                Request::Decide {
                    id: ApprovalId(id),
                    choice: Decision::AllowOnce.into(),
                    kind: Some(kind)
                },
                "{data}"
            );
            assert!(a.in_dm);
            assert_eq!(a.responder.user_id, "42");
            assert_eq!(a.reply.handle(), Some(&Reply::Callback("9001".into())));
        }
    }

    #[test]
    fn approve_commands_decode() {
        let id = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
        for (text, d) in [
            (format!("/approve {id} allow-once"), Decision::AllowOnce),
            (
                format!("  /approve@approval_bot {id} always "),
                Decision::AllowAlways,
            ),
            (format!("/APPROVE@Approval_Bot {id} Deny"), Decision::Deny),
        ] {
            assert_eq!(
                command(&text, Some("approval_bot")),
                Some(Request::Decide {
                    id: ApprovalId(id.into()),
                    choice: d.into(),
                    kind: None
                }),
                "{text}"
            );
        }
    }

    /// The shapes themselves are `bridge::channel::command`'s tests; here only the addressee.
    #[test]
    fn commands_for_other_bots_are_ignored() {
        assert!(matches!(
            command("/approve@approval_bot abc", Some("approval_bot")),
            Some(Request::Malformed { .. })
        ));
        assert_eq!(
            command("/pending@approval_bot", Some("approval_bot")),
            Some(Request::ListPending)
        );
        assert_eq!(
            command("/approve@other_bot x deny", Some("approval_bot")),
            None
        );
        assert_eq!(command("hello /approve x deny", None), None);
    }
}
