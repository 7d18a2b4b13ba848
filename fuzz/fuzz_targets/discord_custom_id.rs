//! Discord `custom_id`: `codec::decode` on anything; what decodes re-encodes to the same
//! button within 100 characters, and nothing longer is ever accepted.
#![no_main]

use bridge::channel::action::{self, Action};
use channels::discord::codec::{self, MAX_CUSTOM_ID};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(button) = codec::decode(text) else {
        return;
    };
    assert!(text.chars().count() <= MAX_CUSTOM_ID, "accepted {text:?}");
    // What decodes re-encodes to a button that decodes the same; to the same text but for
    // other spellings (the `always` alias, `allow-60m` for `allow-1h`, upper-case hex).
    let (again, canonical) = match &button {
        Action::Decide { kind, id, choice } => (
            codec::encode(*kind, id, *choice),
            text.ends_with(&format!(":{}", choice.token())),
        ),
        Action::RevokeGrant(g) => {
            let again = action::encode_revoke(g);
            let canonical = again == text;
            (Ok(again), canonical)
        }
    };
    match again {
        Ok(again) => {
            assert!(again.chars().count() <= MAX_CUSTOM_ID);
            assert_eq!(codec::decode(&again).as_ref(), Ok(&button));
            if canonical {
                assert_eq!(again, text);
            }
        }
        Err(_) => assert!(
            text.ends_with(":always"),
            "decoded {text:?} cannot be re-encoded"
        ),
    }
});
