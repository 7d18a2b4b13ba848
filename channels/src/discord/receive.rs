//! The inbound path: gateway dispatches (`INTERACTION_CREATE`, `MESSAGE_CREATE`) decoded
//! into the engine's `Answer`s. Pure functions over the raw JSON, so a field Discord adds
//! or omits never makes an answer vanish in a deserializer; the loop lives in `gateway`.
//!
//! Every button press becomes an `Answer` (garbage included, as `Request::Malformed`), so
//! the engine audits it and the presser is told exactly once through `notify`.

use bridge::approval::Responder;
use bridge::channel::{Answer, MessageRef, ReplyTo, Request, Target, Via, command};
use serde_json::Value;

use super::{NAME, codec};

/// How `notify` reaches the responder of an answer.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// The press's interaction: an ephemeral follow-up through its webhook.
    Interaction { application: String, token: String },
    /// A message in a channel, in reply to `reply_to` when set.
    Channel {
        channel: String,
        reply_to: Option<String>,
    },
}

/// The interaction token is a credential for the follow-up webhook: never printed.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Interaction { application, .. } => f
                .debug_struct("Interaction")
                .field("application", application)
                .finish_non_exhaustive(),
            Reply::Channel { channel, reply_to } => f
                .debug_struct("Channel")
                .field("channel", channel)
                .field("reply_to", reply_to)
                .finish(),
        }
    }
}

/// Interaction type of a message component (button).
const MESSAGE_COMPONENT: u64 = 3;
/// Channel type of a DM.
const DM: u64 = 1;

/// What the gateway loop must do with a component interaction: acknowledge it (within 3 s)
/// with `POST /interactions/{id}/{token}/callback`, then hand `answer` to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Press {
    pub interaction_id: String,
    pub token: String,
    pub answer: Answer,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str()
}

/// The acting user of an interaction: `user` in DMs, `member.user` in servers.
fn interaction_user(ix: &Value) -> Option<&Value> {
    ix.get("user")
        .or_else(|| ix.get("member").and_then(|m| m.get("user")))
}

pub fn responder(user: &Value) -> Option<Responder> {
    let id = str_at(user, &["id"])?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let display = str_at(user, &["global_name"])
        .filter(|s| !s.is_empty())
        .map(|g| match str_at(user, &["username"]) {
            Some(u) => format!("{g} (@{u})"),
            None => g.to_owned(),
        })
        .or_else(|| str_at(user, &["username"]).map(|u| format!("@{u}")));
    Some(Responder {
        channel: NAME.to_owned(),
        user_id: id.to_owned(),
        display,
    })
}

/// A component interaction. `owner_of_dm` maps a DM channel id to the target user whose
/// DM it is (from the adapter's DM cache); a channel it does not know names no target, so
/// the engine finds no prompt there. `None`: not a component interaction, or one without
/// the fields every real one carries.
pub fn interaction(ix: &Value, owner_of_dm: impl Fn(&str) -> Option<String>) -> Option<Press> {
    if ix.get("type").and_then(Value::as_u64) != Some(MESSAGE_COMPONENT) {
        return None;
    }
    let interaction_id = str_at(ix, &["id"])?.to_owned();
    let token = str_at(ix, &["token"])?.to_owned();
    let application_id = str_at(ix, &["application_id"])?.to_owned();
    let responder = responder(interaction_user(ix)?)?;
    let channel_id = str_at(ix, &["channel_id"])
        .or_else(|| str_at(ix, &["channel", "id"]))
        .unwrap_or_default();
    let channel_type = ix
        .get("channel")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_u64);
    let in_dm =
        ix.get("guild_id").is_none_or(Value::is_null) && channel_type.is_none_or(|t| t == DM);
    let message_id = str_at(ix, &["message", "id"]).unwrap_or_default();
    let chat = owner_of_dm(channel_id).unwrap_or_else(|| format!("channel:{channel_id}"));
    let via = Via::Prompt(MessageRef {
        target: Target {
            channel: NAME.to_owned(),
            chat,
        },
        message: message_id.to_owned(),
    });
    let request = match str_at(ix, &["data", "custom_id"]) {
        None => Request::Malformed {
            raw: String::new(),
            why: "component interaction without custom_id".into(),
        },
        Some(raw) => match codec::decode(raw) {
            Ok(b) => b.into_request(),
            Err(e) => Request::Malformed {
                raw: raw.chars().take(120).collect(),
                why: e.to_string(),
            },
        },
    };
    Some(Press {
        interaction_id,
        answer: Answer {
            responder,
            request,
            via,
            in_dm,
            reply: ReplyTo::new(
                NAME,
                Reply::Interaction {
                    application: application_id,
                    token: token.clone(),
                },
            ),
        },
        token,
    })
}

/// A message: `/approve <id> <decision>` or `/pending`, else `None`. Messages by bots
/// (ourselves included) are ignored.
pub fn message(m: &Value) -> Option<Answer> {
    let author = m.get("author")?;
    if author.get("bot").and_then(Value::as_bool) == Some(true)
        || m.get("webhook_id").is_some_and(|w| !w.is_null())
    {
        return None;
    }
    let request = command::parse(str_at(m, &["content"])?)?;
    let responder = responder(author)?;
    let channel = str_at(m, &["channel_id"])?.to_owned();
    let id = str_at(m, &["id"]).filter(|id| !id.is_empty());
    Some(Answer {
        responder,
        request,
        via: Via::Command {
            chat: channel.clone(),
        },
        in_dm: m.get("guild_id").is_none_or(Value::is_null),
        reply: ReplyTo::new(
            NAME,
            Reply::Channel {
                channel,
                reply_to: id.map(str::to_owned),
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

    fn press(user: Value, custom_id: &str, guild: bool) -> Value {
        let mut ix = json!({
            "id": "1300000000000000001", "application_id": "1200000000000000001", "type": 3,
            "token": "tok-1", "version": 1, "channel_id": "1400000000000000001",
            "channel": {"id": "1400000000000000001", "type": if guild { 0 } else { 1 }},
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": {"id": "1500000000000000001", "channel_id": "1400000000000000001"},
        });
        if guild {
            ix["guild_id"] = json!("1600000000000000001");
            ix["member"] = json!({"user": user});
        } else {
            ix["user"] = user;
        }
        ix
    }

    fn dm_owner(c: &str) -> Option<String> {
        (c == "1400000000000000001").then(|| "111111111111111111".to_owned())
    }

    /// Issue 6: the custom_id's tag is the kind the press claims; the engine compares it
    /// with the approval's, so a `system_approve:` payload carrying an exec id reaches it as such.
    #[test]
    fn a_press_carries_the_kind_its_tag_names() {
        let user = json!({"id": "111111111111111111", "username": "ann"});
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
            let a = interaction(&press(user.clone(), &data, false), dm_owner)
                .unwrap()
                .answer;
            assert_eq!(
                a.request,
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
    fn a_press_in_a_dm_carries_the_true_id_and_the_prompt() {
        let user =
            json!({"id": "111111111111111111", "username": "ann", "global_name": "Ann <@2>"});
        let p = interaction(
            &press(user, &format!("exec_approve:{UUID}:deny"), false),
            dm_owner,
        )
        .unwrap();
        assert_eq!(p.interaction_id, "1300000000000000001");
        assert_eq!(p.token, "tok-1");
        let a = p.answer;
        assert_eq!(
            a.request,
            Request::Decide {
                id: ApprovalId::from(UUID),
                choice: Decision::Deny.into(),
                kind: Some(Kind::Exec)
            }
        );
        assert_eq!(a.responder.user_id, "111111111111111111");
        assert_eq!(a.responder.display.as_deref(), Some("Ann <@2> (@ann)"));
        assert!(a.in_dm);
        assert_eq!(
            a.via,
            Via::Prompt(MessageRef {
                target: Target {
                    channel: "discord".into(),
                    chat: "111111111111111111".into()
                },
                message: "1500000000000000001".into()
            })
        );
        assert_eq!(
            a.reply.handle(),
            Some(&Reply::Interaction {
                application: "1200000000000000001".into(),
                token: "tok-1".into()
            })
        );
        assert!(
            !format!("{:?}", a.reply).contains("tok-1"),
            "the token is never printed"
        );
    }

    #[test]
    fn server_presses_forgeries_and_unknown_channels_are_marked() {
        let user = json!({"id": "111111111111111111", "username": "ann"});
        let a = interaction(&press(user.clone(), "exec_approve:x:yolo", true), |_| None)
            .unwrap()
            .answer;
        assert!(!a.in_dm);
        assert!(matches!(a.request, Request::Malformed { .. }));
        let Via::Prompt(r) = a.via else { panic!() };
        assert_eq!(r.target.chat, "channel:1400000000000000001");
        let mut not_component = press(user, "x", false);
        not_component["type"] = json!(2);
        assert_eq!(interaction(&not_component, dm_owner), None);
    }

    #[test]
    fn approve_texts_decode_and_bots_are_ignored() {
        let m = |content: &str, bot: bool| json!({"id": "9", "channel_id": "8", "content": content, "author": {"id": "7", "username": "u", "bot": bot}});
        let a = message(&m(&format!(" /approve {UUID} Always "), false)).unwrap();
        assert_eq!(
            a.request,
            Request::Decide {
                id: ApprovalId::from(UUID),
                choice: Decision::AllowAlways.into(),
                kind: None
            }
        );
        assert!(a.in_dm);
        assert_eq!(
            a.reply.handle(),
            Some(&Reply::Channel {
                channel: "8".into(),
                reply_to: Some("9".into())
            })
        );
        assert_eq!(message(&m("/approve x deny", true)), None);
        assert_eq!(message(&m("hello", false)), None);
        assert!(matches!(
            message(&m("/approve x", false)).unwrap().request,
            Request::Malformed { .. }
        ));
    }
}
