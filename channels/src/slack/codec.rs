//! Button codec: which approval and which decision a Block Kit button stands for.
//!
//! Every button carries the same string as its `action_id` and its `value`, one form per
//! approval kind, `<tag>:<id>:<decision>` (OpenClaw's callback form, as on Telegram):
//!
//! | kind   | approval id      | action_id / value                      |
//! |--------|------------------|----------------------------------------|
//! | exec   | `<uuid>`         | `exec_approve:<uuid>:<decision>`       |
//! | plugin | `plugin:<uuid>`  | `plugin_approve:<uuid>:<decision>`     |
//! | system | `<id>`           | `system_approve:<id>:<decision>`       |
//!
//! Slack allows 255 characters in an `action_id` (2000 in a `value`); encoding refuses,
//! never truncates, anything longer. A press decodes only when `action_id` and `value`
//! agree; anything else is a typed error that the adapter turns into
//! `Request::Malformed`, so the engine audits and refuses it.

use bridge::approval::{ApprovalId, Decision, Kind};

/// Slack's limit on `action_id`, in characters.
pub const MAX_ACTION_ID: usize = 255;

/// Longest approval id accepted (a UUID is 36).
const MAX_ID_BYTES: usize = 128;

const EXEC_TAG: &str = "exec_approve";
const PLUGIN_TAG: &str = "plugin_approve";
const SYSTEM_TAG: &str = "system_approve";
const PLUGIN_ID_PREFIX: &str = "plugin:";

/// A button's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub kind: Kind,
    pub id: ApprovalId,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("action is {0} characters, over Slack's 255-character action_id limit")]
    TooLong(usize),
    #[error("approval id {0:?} cannot be carried in a button")]
    BadId(String),
    #[error("unknown action form")]
    UnknownForm,
    #[error("unknown decision {0:?}")]
    UnknownDecision(String),
    #[error("action_id and value disagree")]
    Mismatch,
}

/// Encodes the button for `decision` on approval `id` of `kind`.
pub fn encode(kind: Kind, id: &ApprovalId, decision: Decision) -> Result<String, CodecError> {
    let (tag, wire_id) = match kind {
        Kind::Exec => (EXEC_TAG, id.as_str()),
        Kind::Plugin => (
            PLUGIN_TAG,
            id.as_str()
                .strip_prefix(PLUGIN_ID_PREFIX)
                .ok_or_else(|| CodecError::BadId(id.to_string()))?,
        ),
        Kind::System => (SYSTEM_TAG, id.as_str()),
    };
    if !valid_id(wire_id) {
        return Err(CodecError::BadId(id.to_string()));
    }
    let data = format!("{tag}:{wire_id}:{}", decision.as_str());
    if data.chars().count() > MAX_ACTION_ID {
        return Err(CodecError::TooLong(data.chars().count()));
    }
    Ok(data)
}

/// Decodes a pressed button from its `action_id` and `value`; trusts nothing beyond the
/// shape (the engine checks the rest).
pub fn decode(action_id: &str, value: &str) -> Result<Action, CodecError> {
    if action_id != value {
        return Err(CodecError::Mismatch);
    }
    let n = value.chars().count();
    if n > MAX_ACTION_ID {
        return Err(CodecError::TooLong(n));
    }
    let (tag, rest) = value.split_once(':').ok_or(CodecError::UnknownForm)?;
    let (wire_id, decision) = rest.rsplit_once(':').ok_or(CodecError::UnknownForm)?;
    let kind = match tag {
        EXEC_TAG => Kind::Exec,
        PLUGIN_TAG => Kind::Plugin,
        SYSTEM_TAG => Kind::System,
        _ => return Err(CodecError::UnknownForm),
    };
    if !valid_id(wire_id) || (kind != Kind::System && wire_id.contains(':')) {
        return Err(CodecError::BadId(wire_id.to_owned()));
    }
    let decision = Decision::parse(decision)
        .ok_or_else(|| CodecError::UnknownDecision(decision.to_owned()))?;
    let id = match kind {
        Kind::Plugin => ApprovalId(format!("{PLUGIN_ID_PREFIX}{wire_id}")),
        Kind::Exec | Kind::System => ApprovalId(wire_id.to_owned()),
    };
    Ok(Action { kind, id, decision })
}

/// Ids travel verbatim, so only a conservative alphabet is allowed.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    fn dec(s: &str) -> Result<Action, CodecError> {
        decode(s, s)
    }

    #[test]
    fn every_kind_and_decision_round_trips() {
        let ids = [
            (Kind::Exec, ApprovalId::from(UUID)),
            (Kind::Plugin, ApprovalId(format!("plugin:{UUID}"))),
            (Kind::System, ApprovalId::from("sys:abc.1")),
        ];
        for (kind, id) in ids {
            for d in Decision::ALL {
                let data = encode(kind, &id, d).unwrap();
                assert_eq!(
                    dec(&data).unwrap(),
                    Action {
                        kind,
                        id: id.clone(),
                        decision: d
                    }
                );
            }
        }
        assert_eq!(
            encode(Kind::Exec, &ApprovalId::from(UUID), Decision::Deny).unwrap(),
            format!("exec_approve:{UUID}:deny")
        );
        assert_eq!(
            encode(
                Kind::Plugin,
                &ApprovalId(format!("plugin:{UUID}")),
                Decision::AllowAlways
            )
            .unwrap(),
            format!("plugin_approve:{UUID}:allow-always")
        );
    }

    #[test]
    fn encoding_refuses_rather_than_truncates() {
        assert_eq!(
            encode(Kind::Exec, &ApprovalId("x y".into()), Decision::Deny),
            Err(CodecError::BadId("x y".into()))
        );
        assert!(matches!(
            encode(Kind::Exec, &ApprovalId("a".repeat(129)), Decision::Deny),
            Err(CodecError::BadId(_))
        ));
        assert!(matches!(
            encode(Kind::Plugin, &ApprovalId::from(UUID), Decision::Deny),
            Err(CodecError::BadId(_))
        ));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let cases: &[(&str, CodecError)] = &[
            ("", CodecError::UnknownForm),
            ("hello", CodecError::UnknownForm),
            ("exec_approve:abc", CodecError::UnknownForm),
            ("evil_approve:abc:deny", CodecError::UnknownForm),
            ("exec_approve::deny", CodecError::BadId(String::new())),
            ("exec_approve:a:b:deny", CodecError::BadId("a:b".into())),
            (
                "exec_approve:<@U123>:deny",
                CodecError::BadId("<@U123>".into()),
            ),
            (
                "exec_approve:abc:allow",
                CodecError::UnknownDecision("allow".into()),
            ),
            (
                "exec_approve:abc:",
                CodecError::UnknownDecision(String::new()),
            ),
        ];
        for (data, want) in cases {
            assert_eq!(dec(data).as_ref(), Err(want), "{data:?}");
        }
        let over = format!("exec_approve:{}:deny", "a".repeat(300));
        assert_eq!(dec(&over), Err(CodecError::TooLong(over.len())));
        let good = format!("exec_approve:{UUID}:deny");
        assert_eq!(
            decode(&good, &format!("exec_approve:{UUID}:allow-once")),
            Err(CodecError::Mismatch)
        );
        assert_eq!(decode("approve", &good), Err(CodecError::Mismatch));
    }
}
