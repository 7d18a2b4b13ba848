//! How the channel names its things: its name, the content key that marks our prompts, the
//! `<room id>|<event id>` reference of a prompt (its `MessageRef.message`), and the event an
//! answer's notice replies to.

use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, RoomId};

/// The channel's name, also `Target::channel` and `Responder::channel`.
pub const NAME: &str = "matrix";
/// Content key marking our prompts: `{"id": <approval id>}`. A reaction names only the
/// event, so this is how it is tied back to its approval, also after a restart.
pub const PROMPT_KEY: &str = "org.openclaw.approval";

/// How `notify` reaches the responder of an answer: a notice in `room`, in reply to the
/// answer's `event` (the reaction or the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub room: OwnedRoomId,
    pub event: OwnedEventId,
}

/// `<room id>|<event id>`.
pub(super) fn message_ref(room: &RoomId, event: &str) -> String {
    format!("{room}|{event}")
}

/// `<room id>|<event id>` → both, or `None`.
pub(super) fn split_ref(s: &str) -> Option<(OwnedRoomId, OwnedEventId)> {
    let (r, e) = s.split_once('|')?;
    Some((
        OwnedRoomId::try_from(r).ok()?,
        OwnedEventId::try_from(e).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_refs_round_trip() {
        let (r, e) = split_ref("!abc:localhost|$ev123").unwrap();
        assert_eq!(r.as_str(), "!abc:localhost");
        assert_eq!(e.as_str(), "$ev123");
        assert_eq!(message_ref(&r, e.as_str()), "!abc:localhost|$ev123");
        assert!(split_ref("987654").is_none());
        assert!(split_ref("x|y").is_none());
    }
}
