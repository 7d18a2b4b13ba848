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

use bridge::approval::{ApprovalId, Decision, Kind};

/// Discord's limit on `custom_id`.
pub const MAX_CUSTOM_ID: usize = 100;

/// Longest id that fits the longest tag and decision (`system_approve:` + `:allow-always`).
const MAX_ID_BYTES: usize = MAX_CUSTOM_ID - "system_approve:".len() - ":allow-always".len();

const EXEC_TAG: &str = "exec_approve";
const PLUGIN_TAG: &str = "plugin_approve";
const SYSTEM_TAG: &str = "system_approve";
const PLUGIN_ID_PREFIX: &str = "plugin:";

/// A button's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub kind: Kind,
    pub id: ApprovalId,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("custom_id is {0} characters, over Discord's 100")]
    TooLong(usize),
    #[error("approval id {0:?} cannot be carried in a custom_id")]
    BadId(String),
    #[error("unknown custom_id form")]
    UnknownForm,
    #[error("unknown decision {0:?}")]
    UnknownDecision(String),
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
    if data.len() > MAX_CUSTOM_ID {
        return Err(CodecError::TooLong(data.len()));
    }
    Ok(data)
}

/// Decodes a `custom_id`; trusts nothing beyond its shape (the engine checks the rest).
pub fn decode(data: &str) -> Result<Button, CodecError> {
    if data.chars().count() > MAX_CUSTOM_ID {
        return Err(CodecError::TooLong(data.chars().count()));
    }
    let (tag, rest) = data.split_once(':').ok_or(CodecError::UnknownForm)?;
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
    Ok(Button { kind, id, decision })
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

    #[test]
    fn every_kind_and_decision_round_trips_within_100_chars() {
        let ids = [
            (Kind::Exec, ApprovalId::from(UUID)),
            (Kind::Plugin, ApprovalId(format!("plugin:{UUID}"))),
            (Kind::System, ApprovalId::from(UUID)),
            (Kind::System, ApprovalId("a".repeat(MAX_ID_BYTES))),
        ];
        for (kind, id) in ids {
            for d in Decision::ALL {
                let data = encode(kind, &id, d).unwrap();
                assert!(
                    data.len() <= MAX_CUSTOM_ID,
                    "{data} is {} chars",
                    data.len()
                );
                assert_eq!(
                    decode(&data).unwrap(),
                    Button {
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
    }

    #[test]
    fn encoding_refuses_rather_than_truncates() {
        let long = ApprovalId("a".repeat(MAX_ID_BYTES + 1));
        assert_eq!(
            encode(Kind::Exec, &long, Decision::Deny),
            Err(CodecError::BadId(long.to_string()))
        );
        assert!(matches!(
            encode(Kind::Plugin, &ApprovalId::from(UUID), Decision::Deny),
            Err(CodecError::BadId(_))
        ));
        assert!(matches!(
            encode(Kind::Exec, &ApprovalId("x y".into()), Decision::Deny),
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
        assert_eq!(decode(&over), Err(CodecError::TooLong(over.len())));
    }
}
