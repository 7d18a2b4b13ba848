//! Callback data codec: which approval and which decision a button stands for.
//!
//! Telegram carries at most 64 bytes of callback data per button. The forms, one per
//! approval kind, all `<tag>:<id>:<decision>`:
//!
//! | kind   | approval id      | callback data                          | max bytes (uuid ids) |
//! |--------|------------------|----------------------------------------|----------------------|
//! | exec   | `<uuid>`         | `exec_approve:<uuid>:<decision>`       | 62                   |
//! | plugin | `plugin:<uuid>`  | `plugin_approve:<uuid>:<decision>`     | 64                   |
//! | system | `<id>`           | `system_approve:<id>:<decision>`       | 64                   |
//!
//! `<decision>` is the gateway's wire form (`allow-once`, `allow-always`, `deny`); the
//! decoder also accepts OpenClaw's `always` alias. Encoding refuses (never truncates) data
//! over 64 bytes; decoding returns a typed error for anything it cannot read, and the
//! adapter turns that into a `Request::Malformed` so the engine audits and refuses it.

use bridge::approval::{ApprovalId, Choice, Kind};
use bridge::channel::action::{self, Limit};

use crate::common::codec;
pub use crate::common::codec::CodecError;

/// Telegram's limit on `callback_data`, in bytes.
pub const MAX_CALLBACK_BYTES: usize = 64;

/// Longest approval id the decoder accepts (a UUID is 36); anything longer cannot fit.
const MAX_ID_BYTES: usize = 48;

/// A button's meaning.
pub type Callback = action::Action;

const LIMIT: Limit = Limit {
    max: MAX_CALLBACK_BYTES,
    in_bytes: true,
    max_id_bytes: MAX_ID_BYTES,
};

/// Encodes the button for `choice` on approval `id` of `kind`.
pub fn encode(kind: Kind, id: &ApprovalId, choice: Choice) -> Result<String, CodecError> {
    codec::encode(kind, id, choice, LIMIT)
}

/// Decodes callback data; never trusts it beyond its shape (the engine checks the rest).
pub fn decode(data: &str) -> Result<Callback, CodecError> {
    codec::decode(data, LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{Decision, Window};

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    #[test]
    fn exec_form_is_exactly_openclaws() {
        let id = ApprovalId::from(UUID);
        assert_eq!(
            encode(Kind::Exec, &id, Decision::AllowOnce.into()).unwrap(),
            format!("exec_approve:{UUID}:allow-once")
        );
        let longest = encode(Kind::Exec, &id, Decision::AllowAlways.into()).unwrap();
        assert_eq!(longest.len(), 62);
    }

    #[test]
    fn every_kind_and_decision_round_trips_within_64_bytes() {
        let ids = [
            (Kind::Exec, ApprovalId::from(UUID)),
            (Kind::Plugin, ApprovalId(format!("plugin:{UUID}"))),
            (Kind::System, ApprovalId::from(UUID)),
        ];
        for (kind, id) in ids {
            for d in Decision::ALL
                .map(Choice::from)
                .into_iter()
                .chain([Choice::AllowFor(Window::parse("24h").unwrap())])
            {
                let data = encode(kind, &id, d).unwrap();
                assert!(
                    data.len() <= MAX_CALLBACK_BYTES,
                    "{data} is {} bytes",
                    data.len()
                );
                assert_eq!(
                    decode(&data).unwrap(),
                    Callback::Decide {
                        kind,
                        id: id.clone(),
                        choice: d
                    }
                );
            }
        }
    }

    #[test]
    fn plugin_form_drops_the_prefix_and_decode_restores_it() {
        let id = ApprovalId(format!("plugin:{UUID}"));
        let data = encode(Kind::Plugin, &id, Decision::AllowAlways.into()).unwrap();
        assert_eq!(data, format!("plugin_approve:{UUID}:allow-always"));
        assert_eq!(data.len(), 64);
        assert!(matches!(decode(&data).unwrap(), Callback::Decide { id: got, .. } if got == id));
    }

    #[test]
    fn encoding_refuses_rather_than_truncates() {
        let long = ApprovalId("a".repeat(45));
        assert_eq!(
            encode(Kind::Exec, &long, Decision::AllowAlways.into()),
            Err(CodecError::TooLong {
                len: 71,
                max: MAX_CALLBACK_BYTES,
                unit: "bytes"
            })
        );
        let bad = ApprovalId("x y".into());
        assert_eq!(
            encode(Kind::Exec, &bad, Decision::Deny.into()),
            Err(CodecError::BadId("x y".into()))
        );
        let unprefixed = ApprovalId::from(UUID);
        assert!(matches!(
            encode(Kind::Plugin, &unprefixed, Decision::Deny.into()),
            Err(CodecError::BadId(_))
        ));
    }

    #[test]
    fn always_alias_decodes_to_allow_always() {
        assert!(matches!(
            decode(&format!("exec_approve:{UUID}:always")).unwrap(),
            Callback::Decide { choice, .. } if choice == Decision::AllowAlways.into()
        ));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let cases: &[(&str, CodecError)] = &[
            ("", CodecError::UnknownForm),
            ("hello", CodecError::UnknownForm),
            ("exec_approve", CodecError::UnknownForm),
            ("exec_approve:abc", CodecError::UnknownForm),
            ("evil_approve:abc:deny", CodecError::UnknownForm),
            ("exec_approve::deny", CodecError::BadId(String::new())),
            ("exec_approve:a:b:deny", CodecError::BadId("a:b".into())),
            (
                "exec_approve:<b>x</b>:deny",
                CodecError::BadId("<b>x</b>".into()),
            ),
            (
                "exec_approve:abc:allow",
                CodecError::UnknownDecision("allow".into()),
            ),
            (
                "exec_approve:abc:Allow-Once",
                CodecError::UnknownDecision("Allow-Once".into()),
            ),
            (
                "exec_approve:abc:",
                CodecError::UnknownDecision(String::new()),
            ),
        ];
        for (data, want) in cases {
            assert_eq!(decode(data).as_ref(), Err(want), "{data:?}");
        }
        let over = format!("exec_approve:{UUID}:allow-once{}", "x".repeat(10));
        assert_eq!(
            decode(&over),
            Err(CodecError::TooLong {
                len: over.len(),
                max: MAX_CALLBACK_BYTES,
                unit: "bytes"
            })
        );
    }
}
