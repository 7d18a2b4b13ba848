//! Telegram callback data: `codec::decode` on anything; what decodes re-encodes to the same
//! button within 64 bytes, and nothing over 64 bytes is ever accepted.
#![no_main]

use channels::telegram::codec::{self, MAX_CALLBACK_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cb) = codec::decode(text) else {
        return;
    };
    assert!(
        text.len() <= MAX_CALLBACK_BYTES,
        "accepted {} bytes",
        text.len()
    );
    // The `always` alias re-encodes longer; anything else is the canonical form.
    if let Ok(again) = codec::encode(cb.kind, &cb.id, cb.decision) {
        assert!(again.len() <= MAX_CALLBACK_BYTES);
        assert_eq!(codec::decode(&again).as_ref(), Ok(&cb));
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
