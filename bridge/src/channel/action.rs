//! The button payload every chat channel carries, `<tag>:<id>:<decision>` (OpenClaw's
//! callback form): one codec, each channel only choosing its platform's length limit.
//! Encoding refuses (never truncates); decoding trusts nothing beyond the shape.

use crate::approval::{ApprovalId, Decision, Kind};

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

/// Encodes the button for `decision` on approval `id` of `kind`.
pub fn encode(
    kind: Kind,
    id: &ApprovalId,
    decision: Decision,
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
    let data = format!("{tag}:{wire_id}:{}", decision.as_str());
    let n = limit.len(&data);
    if n > limit.max {
        return Err(ActionError::TooLong(n));
    }
    Ok(data)
}

/// Decodes a payload.
pub fn decode(data: &str, limit: Limit) -> Result<Action, ActionError> {
    let n = limit.len(data);
    if n > limit.max {
        return Err(ActionError::TooLong(n));
    }
    let (tag, rest) = data.split_once(':').ok_or(ActionError::UnknownForm)?;
    let (wire_id, decision) = rest.rsplit_once(':').ok_or(ActionError::UnknownForm)?;
    let kind = match tag {
        EXEC_TAG => Kind::Exec,
        PLUGIN_TAG => Kind::Plugin,
        SYSTEM_TAG => Kind::System,
        _ => return Err(ActionError::UnknownForm),
    };
    if !valid_id(kind, wire_id, limit) {
        return Err(ActionError::BadId(wire_id.to_owned()));
    }
    let decision = Decision::parse(decision)
        .ok_or_else(|| ActionError::UnknownDecision(decision.to_owned()))?;
    let id = match kind {
        Kind::Plugin => ApprovalId(format!("{PLUGIN_ID_PREFIX}{wire_id}")),
        Kind::Exec | Kind::System => ApprovalId(wire_id.to_owned()),
    };
    Ok(Action { kind, id, decision })
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
                encode(kind, &id, Decision::Deny, LIMIT),
                Err(ActionError::BadId(id.to_string()))
            );
        }
        let id = ApprovalId::from("a:b");
        let data = encode(Kind::System, &id, Decision::Deny, LIMIT).unwrap();
        assert_eq!(data, "system_approve:a:b:deny");
        let back = decode(&data, LIMIT).unwrap();
        assert_eq!((back.kind, back.id), (Kind::System, id));
    }
}
