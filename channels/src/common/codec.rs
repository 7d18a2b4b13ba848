//! The button codec's one error, for every channel whose buttons carry bridge's
//! `<tag>:<id>:<decision>` payload (Telegram, Discord, Slack): each channel only names its
//! platform's [`Limit`] and calls [`encode`] and [`decode`] here.

use bridge::approval::{ApprovalId, Decision, Kind};
use bridge::channel::action::{self, Action, ActionError, Limit};

/// Why a button payload cannot be encoded or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Over the platform's limit; the length in the limit's unit (Telegram counts bytes,
    /// Discord and Slack characters).
    #[error("button payload is {0} long, over the platform's limit")]
    TooLong(usize),
    #[error("approval id {0:?} cannot be carried in a button")]
    BadId(String),
    #[error("unknown button payload form")]
    UnknownForm,
    #[error("unknown decision {0:?}")]
    UnknownDecision(String),
    /// Slack: a press whose `action_id` and `value` differ (forged).
    #[cfg(feature = "slack")]
    #[error("action_id and value disagree")]
    Mismatch,
}

impl From<ActionError> for CodecError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::TooLong(n) => CodecError::TooLong(n),
            ActionError::BadId(id) => CodecError::BadId(id),
            ActionError::UnknownForm => CodecError::UnknownForm,
            ActionError::UnknownDecision(d) => CodecError::UnknownDecision(d),
        }
    }
}

/// Encodes the button for `decision` on approval `id` of `kind`, within `limit`.
pub fn encode(
    kind: Kind,
    id: &ApprovalId,
    decision: Decision,
    limit: Limit,
) -> Result<String, CodecError> {
    Ok(action::encode(kind, id, decision, limit)?)
}

/// Decodes a payload within `limit`; trusts nothing beyond its shape (the engine checks
/// the rest).
pub fn decode(data: &str, limit: Limit) -> Result<Action, CodecError> {
    Ok(action::decode(data, limit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_error_reads_as_the_codec_error_naming_it() {
        let cases = [
            (
                ActionError::TooLong(71),
                "button payload is 71 long, over the platform's limit",
            ),
            (
                ActionError::BadId("x y".into()),
                "approval id \"x y\" cannot be carried in a button",
            ),
            (ActionError::UnknownForm, "unknown button payload form"),
            (
                ActionError::UnknownDecision("allow".into()),
                "unknown decision \"allow\"",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(CodecError::from(e).to_string(), text);
        }
    }
}
