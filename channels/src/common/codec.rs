//! The button codec's one error, for every channel whose buttons carry bridge's
//! `<tag>:<id>:<decision>` payload (Telegram, Discord, Slack): each channel only names its
//! platform's [`Limit`] and calls [`encode`] and [`decode`] here.

use bridge::approval::{ApprovalId, Choice, Kind};
use bridge::channel::action::{self, Action, ActionError, Limit};

/// Why a button payload cannot be encoded or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Over the platform's limit of `max`; `len` in the limit's `unit` (Telegram counts
    /// bytes, Discord and Slack characters).
    #[error("button payload is {len} {unit}, over the platform's limit of {max}")]
    TooLong {
        len: usize,
        max: usize,
        unit: &'static str,
    },
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

impl CodecError {
    /// The payload's error under the platform's `limit`.
    fn of(e: ActionError, limit: Limit) -> CodecError {
        match e {
            ActionError::TooLong(len) => CodecError::TooLong {
                len,
                max: limit.max,
                unit: if limit.in_bytes {
                    "bytes"
                } else {
                    "characters"
                },
            },
            ActionError::BadId(id) => CodecError::BadId(id),
            ActionError::UnknownForm => CodecError::UnknownForm,
            ActionError::UnknownDecision(d) => CodecError::UnknownDecision(d),
        }
    }
}

/// Encodes the button for `choice` on approval `id` of `kind`, within `limit`.
pub fn encode(
    kind: Kind,
    id: &ApprovalId,
    choice: Choice,
    limit: Limit,
) -> Result<String, CodecError> {
    action::encode(kind, id, choice, limit).map_err(|e| CodecError::of(e, limit))
}

/// Decodes a payload within `limit`; trusts nothing beyond its shape (the engine checks
/// the rest).
pub fn decode(data: &str, limit: Limit) -> Result<Action, CodecError> {
    action::decode(data, limit).map_err(|e| CodecError::of(e, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_error_reads_as_the_codec_error_naming_it() {
        let telegram = Limit {
            max: 64,
            in_bytes: true,
            max_id_bytes: 40,
        };
        let cases = [
            (
                ActionError::TooLong(71),
                "button payload is 71 bytes, over the platform's limit of 64",
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
            assert_eq!(CodecError::of(e, telegram).to_string(), text);
        }
    }
}
