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

use bridge::approval::{ApprovalId, Choice, Kind};
use bridge::channel::action::{self, Limit};

use crate::common::codec;
pub use crate::common::codec::CodecError;

/// Slack's limit on `action_id`, in characters.
pub const MAX_ACTION_ID: usize = 255;

/// Longest approval id accepted (a UUID is 36).
const MAX_ID_BYTES: usize = 128;

/// A button's meaning.
pub type Action = action::Action;

const LIMIT: Limit = Limit {
    max: MAX_ACTION_ID,
    in_bytes: false,
    max_id_bytes: MAX_ID_BYTES,
};

/// Encodes the button for `choice` on approval `id` of `kind`.
pub fn encode(kind: Kind, id: &ApprovalId, choice: Choice) -> Result<String, CodecError> {
    codec::encode(kind, id, choice, LIMIT)
}

/// Decodes a pressed button from its `action_id` and `value`; trusts nothing beyond the
/// shape (the engine checks the rest).
pub fn decode(action_id: &str, value: &str) -> Result<Action, CodecError> {
    if action_id != value {
        return Err(CodecError::Mismatch);
    }
    codec::decode(value, LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{Decision, Window};

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
            for d in Decision::ALL
                .map(Choice::from)
                .into_iter()
                .chain([Choice::AllowFor(Window::parse("24h").unwrap())])
            {
                let data = encode(kind, &id, d).unwrap();
                assert_eq!(
                    dec(&data).unwrap(),
                    Action::Decide {
                        kind,
                        id: id.clone(),
                        choice: d
                    }
                );
            }
        }
        assert_eq!(
            encode(Kind::Exec, &ApprovalId::from(UUID), Decision::Deny.into()).unwrap(),
            format!("exec_approve:{UUID}:deny")
        );
        assert_eq!(
            encode(
                Kind::Plugin,
                &ApprovalId(format!("plugin:{UUID}")),
                Decision::AllowAlways.into()
            )
            .unwrap(),
            format!("plugin_approve:{UUID}:allow-always")
        );
    }

    #[test]
    fn encoding_refuses_rather_than_truncates() {
        assert_eq!(
            encode(Kind::Exec, &ApprovalId("x y".into()), Decision::Deny.into()),
            Err(CodecError::BadId("x y".into()))
        );
        assert!(matches!(
            encode(
                Kind::Exec,
                &ApprovalId("a".repeat(129)),
                Decision::Deny.into()
            ),
            Err(CodecError::BadId(_))
        ));
        assert!(matches!(
            encode(Kind::Plugin, &ApprovalId::from(UUID), Decision::Deny.into()),
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
        assert_eq!(
            dec(&over),
            Err(CodecError::TooLong {
                len: over.len(),
                max: MAX_ACTION_ID,
                unit: "characters"
            })
        );
        let good = format!("exec_approve:{UUID}:deny");
        assert_eq!(
            decode(&good, &format!("exec_approve:{UUID}:allow-once")),
            Err(CodecError::Mismatch)
        );
        assert_eq!(decode("approve", &good), Err(CodecError::Mismatch));
    }
}
