//! The button payload every chat channel carries, `<tag>:<id>:<choice>` (OpenClaw's
//! callback form; a choice is a decision's wire form or a time-boxed allow such as
//! `allow-1h`), and `grant_revoke:<grant id>` on the line a grant's use posts: one codec,
//! each channel only choosing its platform's length limit. Encoding refuses (never
//! truncates); decoding trusts nothing beyond the shape.

use super::Request;
use crate::approval::{ApprovalId, Choice, Kind};
use crate::grant::GrantId;

const EXEC_TAG: &str = "exec_approve";
const PLUGIN_TAG: &str = "plugin_approve";
const SYSTEM_TAG: &str = "system_approve";
const REVOKE_TAG: &str = "grant_revoke";
const PLUGIN_ID_PREFIX: &str = "plugin:";

/// A button's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Decide approval `id`, which the button says is of `kind`.
    Decide {
        kind: Kind,
        id: ApprovalId,
        choice: Choice,
    },
    /// End a time-boxed grant now.
    RevokeGrant(GrantId),
}

impl Action {
    /// What the press asks the engine for.
    pub fn into_request(self) -> Request {
        match self {
            Action::Decide { kind, id, choice } => Request::Decide {
                id,
                choice,
                kind: Some(kind),
            },
            Action::RevokeGrant(grant) => Request::Revoke { grant },
        }
    }
}

/// Why a payload cannot be encoded or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// Over the platform's limit; the length in the limit's unit.
    TooLong(usize),
    BadId(String),
    UnknownForm,
    UnknownDecision(String),
}

/// A platform's limit on the payload and on the approval id inside it.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub max: usize,
    /// Telegram counts bytes; Discord and Slack count characters.
    pub in_bytes: bool,
    pub max_id_bytes: usize,
}

impl Limit {
    fn len(&self, s: &str) -> usize {
        if self.in_bytes {
            s.len()
        } else {
            s.chars().count()
        }
    }
}

/// Encodes the button for `choice` on approval `id` of `kind`.
pub fn encode(
    kind: Kind,
    id: &ApprovalId,
    choice: Choice,
    limit: Limit,
) -> Result<String, ActionError> {
    let (tag, wire_id) = match kind {
        Kind::Exec => (EXEC_TAG, id.as_str()),
        Kind::Plugin => (
            PLUGIN_TAG,
            id.as_str()
                .strip_prefix(PLUGIN_ID_PREFIX)
                .ok_or_else(|| ActionError::BadId(id.to_string()))?,
        ),
        Kind::System => (SYSTEM_TAG, id.as_str()),
    };
    if !valid_id(kind, wire_id, limit) {
        return Err(ActionError::BadId(id.to_string()));
    }
    let data = format!("{tag}:{wire_id}:{}", choice.token());
    let n = limit.len(&data);
    if n > limit.max {
        return Err(ActionError::TooLong(n));
    }
    Ok(data)
}

/// Encodes the Revoke button of grant `grant` (23 bytes: fits every platform).
pub fn encode_revoke(grant: &GrantId) -> String {
    format!("{REVOKE_TAG}:{grant}")
}

/// Decodes a payload.
pub fn decode(data: &str, limit: Limit) -> Result<Action, ActionError> {
    let n = limit.len(data);
    if n > limit.max {
        return Err(ActionError::TooLong(n));
    }
    let (tag, rest) = data.split_once(':').ok_or(ActionError::UnknownForm)?;
    if tag == REVOKE_TAG {
        return GrantId::parse(rest)
            .map(Action::RevokeGrant)
            .ok_or_else(|| ActionError::BadId(rest.to_owned()));
    }
    let (wire_id, token) = rest.rsplit_once(':').ok_or(ActionError::UnknownForm)?;
    let kind = match tag {
        EXEC_TAG => Kind::Exec,
        PLUGIN_TAG => Kind::Plugin,
        SYSTEM_TAG => Kind::System,
        _ => return Err(ActionError::UnknownForm),
    };
    if !valid_id(kind, wire_id, limit) {
        return Err(ActionError::BadId(wire_id.to_owned()));
    }
    let choice =
        Choice::parse(token).ok_or_else(|| ActionError::UnknownDecision(token.to_owned()))?;
    let id = match kind {
        Kind::Plugin => ApprovalId(format!("{PLUGIN_ID_PREFIX}{wire_id}")),
        Kind::Exec | Kind::System => ApprovalId(wire_id.to_owned()),
    };
    Ok(Action::Decide { kind, id, choice })
}

/// Ids travel verbatim, so only a conservative alphabet is allowed. Exec and plugin ids
/// (the latter without its prefix) never contain `:`; system ids might. Encode and decode
/// share this check, so every payload encoded decodes back.
fn valid_id(kind: Kind, id: &str, limit: Limit) -> bool {
    !id.is_empty()
        && id.len() <= limit.max_id_bytes
        && (kind == Kind::System || !id.contains(':'))
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Decision, Window};

    const LIMIT: Limit = Limit {
        max: 64,
        in_bytes: true,
        max_id_bytes: 48,
    };

    /// Found by channels/tests/prop_codecs.rs: `exec_approve:::deny` was encoded for the
    /// exec id `:`, and decoding refused it, so the button could never be answered.
    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        for (kind, id) in [
            (Kind::Exec, ":"),
            (Kind::Exec, "a:b"),
            (Kind::Plugin, "plugin:a:b"),
        ] {
            let id = ApprovalId::from(id);
            assert_eq!(
                encode(kind, &id, Decision::Deny.into(), LIMIT),
                Err(ActionError::BadId(id.to_string()))
            );
        }
        let id = ApprovalId::from("a:b");
        let data = encode(Kind::System, &id, Decision::Deny.into(), LIMIT).unwrap();
        assert_eq!(data, "system_approve:a:b:deny");
        let back = decode(&data, LIMIT).unwrap();
        assert_eq!(
            back,
            Action::Decide {
                kind: Kind::System,
                id,
                choice: Decision::Deny.into()
            }
        );
    }

    #[test]
    fn a_time_boxed_allow_and_a_revoke_round_trip_within_telegrams_64_bytes() {
        let id = ApprovalId::from("0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11");
        for w in ["1m", "15m", "1h", "90m", "24h", "1439m"] {
            let choice = Choice::AllowFor(Window::parse(w).unwrap());
            for kind in [Kind::Exec, Kind::System] {
                let data = encode(kind, &id, choice, LIMIT).unwrap();
                assert!(data.len() <= 64, "{data}");
                assert_eq!(
                    decode(&data, LIMIT),
                    Ok(Action::Decide {
                        kind,
                        id: id.clone(),
                        choice
                    })
                );
            }
        }
        let data = encode(
            Kind::Exec,
            &id,
            Choice::AllowFor(Window::parse("1h").unwrap()),
            LIMIT,
        );
        assert_eq!(data.unwrap(), format!("exec_approve:{id}:allow-1h"));
        let grant = GrantId::from_random(0x1a2b3c4d);
        let revoke = encode_revoke(&grant);
        assert_eq!(revoke, "grant_revoke:g-1a2b3c4d");
        assert_eq!(decode(&revoke, LIMIT), Ok(Action::RevokeGrant(grant)));
    }

    #[test]
    fn windows_outside_a_day_and_other_revoke_forms_are_refused() {
        let id = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
        for token in [
            "allow-25h",
            "allow-0m",
            "allow-1441m",
            "allow-1d",
            "allow-",
            "allow-1.5h",
            "allow--1h",
        ] {
            assert_eq!(
                decode(&format!("exec_approve:{id}:{token}"), LIMIT),
                Err(ActionError::UnknownDecision(token.to_owned())),
                "{token}"
            );
        }
        for data in [
            "grant_revoke:",
            "grant_revoke:g-1",
            "grant_revoke:g-1a2b3c4d:x",
            "grant_revoke:1a2b3c4d",
        ] {
            assert!(
                matches!(decode(data, LIMIT), Err(ActionError::BadId(_))),
                "{data}"
            );
        }
    }
}
