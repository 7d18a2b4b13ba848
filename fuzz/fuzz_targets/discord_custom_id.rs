//! Discord `custom_id`: `codec::decode` on anything; what decodes re-encodes to the same
//! button within 100 characters, and nothing longer is ever accepted.
#![no_main]

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
    if let Ok(again) = codec::encode(button.kind, &button.id, button.decision) {
        assert!(again.chars().count() <= MAX_CUSTOM_ID);
        assert_eq!(codec::decode(&again).as_ref(), Ok(&button));
        if !text.ends_with(":always") {
            assert_eq!(again, text);
        }
    } else {
        assert!(
            text.ends_with(":always"),
            "decoded {text:?} cannot be re-encoded"
        );
    }
});
