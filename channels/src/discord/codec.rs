//! Button `custom_id` codec: which approval and which decision a button stands for.
//!
//! Discord carries at most 100 characters of `custom_id`. The forms match the other
//! channels (and OpenClaw's own), `<tag>:<id>:<decision>`:
//!
//! | kind   | approval id      | custom_id                              |
//! |--------|------------------|----------------------------------------|
//! | exec   | `<uuid>`         | `exec_approve:<uuid>:<decision>`       |
//! | plugin | `plugin:<uuid>`  | `plugin_approve:<uuid>:<decision>`     |
//! | system | `<id>`           | `system_approve:<id>:<decision>`       |
//!
//! Encoding refuses (never truncates) anything over 100 characters; decoding returns a
//! typed error, which the adapter turns into `Request::Malformed` for the engine to audit.

use bridge::approval::{ApprovalId, Choice, Kind};
use bridge::channel::action::{self, Limit};

use crate::common::codec;
pub use crate::common::codec::CodecError;

/// Discord's limit on `custom_id`.
pub const MAX_CUSTOM_ID: usize = 100;

/// Longest id that fits the longest tag and decision (`system_approve:` + `:allow-always`).
const MAX_ID_BYTES: usize = MAX_CUSTOM_ID - "system_approve:".len() - ":allow-always".len();

/// A button's meaning.
pub type Button = action::Action;

const LIMIT: Limit = Limit {
    max: MAX_CUSTOM_ID,
    in_bytes: false,
    max_id_bytes: MAX_ID_BYTES,
};

/// Encodes the button for `choice` on approval `id` of `kind`.
pub fn encode(kind: Kind, id: &ApprovalId, choice: Choice) -> Result<String, CodecError> {
    codec::encode(kind, id, choice, LIMIT)
}

/// Decodes a `custom_id`; trusts nothing beyond its shape (the engine checks the rest).
pub fn decode(data: &str) -> Result<Button, CodecError> {
    codec::decode(data, LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{Decision, Window};

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    #[test]
    fn every_kind_and_decision_round_trips_within_100_chars() {
        let ids = [
            (Kind::Exec, ApprovalId::from(UUID)),
            (Kind::Plugin, ApprovalId(format!("plugin:{UUID}"))),
            (Kind::System, ApprovalId::from(UUID)),
            (Kind::System, ApprovalId("a".repeat(MAX_ID_BYTES))),
        ];
        for (kind, id) in ids {
            for d in Decision::ALL
                .map(Choice::from)
                .into_iter()
                .chain([Choice::AllowFor(Window::parse("24h").unwrap())])
            {
                let data = encode(kind, &id, d).unwrap();
                assert!(
                    data.len() <= MAX_CUSTOM_ID,
                    "{data} is {} chars",
                    data.len()
                );
                assert_eq!(
                    decode(&data).unwrap(),
                    Button::Decide {
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
    }

    #[test]
    fn encoding_refuses_rather_than_truncates() {
        let long = ApprovalId("a".repeat(MAX_ID_BYTES + 1));
        assert_eq!(
            encode(Kind::Exec, &long, Decision::Deny.into()),
            Err(CodecError::BadId(long.to_string()))
        );
        assert!(matches!(
            encode(Kind::Plugin, &ApprovalId::from(UUID), Decision::Deny.into()),
            Err(CodecError::BadId(_))
        ));
        assert!(matches!(
            encode(Kind::Exec, &ApprovalId("x y".into()), Decision::Deny.into()),
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
            ("exec_approve:<@1>:deny", CodecError::BadId("<@1>".into())),
            (
                "exec_approve:abc:allow",
                CodecError::UnknownDecision("allow".into()),
            ),
            (
                "exec_approve:abc:Deny",
                CodecError::UnknownDecision("Deny".into()),
            ),
        ];
        for (data, want) in cases {
            assert_eq!(decode(data).as_ref(), Err(want), "{data:?}");
        }
        let over = format!("exec_approve:{UUID}:allow-once{}", "x".repeat(60));
        assert_eq!(
            decode(&over),
            Err(CodecError::TooLong {
                len: over.len(),
                max: MAX_CUSTOM_ID,
                unit: "characters"
            })
        );
    }
}
