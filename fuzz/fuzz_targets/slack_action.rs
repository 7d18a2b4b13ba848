//! Slack button presses: `codec::decode(action_id, value)` on anything; only equal halves
//! decode, within 255 characters, and what decodes re-encodes to the same button.
#![no_main]

use bridge::channel::action::{self, Action};
use channels::slack::codec::{self, CodecError, MAX_ACTION_ID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Input `action_id\0value` exercises the mismatch check; without `\0` both are equal.
    let (action_id, value) = text.split_once('\0').unwrap_or((text, text));
    let decoded = codec::decode(action_id, value);
    if action_id != value {
        assert_eq!(decoded, Err(CodecError::Mismatch));
        return;
    }
    let Ok(action) = decoded else {
        return;
    };
    assert!(value.chars().count() <= MAX_ACTION_ID, "accepted {value:?}");
    // What decodes re-encodes to a button that decodes the same; to the same text but for
    // other spellings (the `always` alias, `allow-60m` for `allow-1h`, upper-case hex).
    let (again, canonical) = match &action {
        Action::Decide { kind, id, choice } => (
            codec::encode(*kind, id, *choice),
            value.ends_with(&format!(":{}", choice.token())),
        ),
        Action::RevokeGrant(g) => {
            let again = action::encode_revoke(g);
            let canonical = again == value;
            (Ok(again), canonical)
        }
    };
    match again {
        Ok(again) => {
            assert!(again.chars().count() <= MAX_ACTION_ID);
            assert_eq!(codec::decode(&again, &again).as_ref(), Ok(&action));
            if canonical {
                assert_eq!(again, value);
            }
        }
        Err(_) => assert!(
            value.ends_with(":always"),
            "decoded {value:?} cannot be re-encoded"
        ),
    }
});
