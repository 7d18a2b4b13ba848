//! The typed `/approve <id> <decision>` and `/pending` parser every channel shares, and
//! Telegram's `/approve@bot` form: never panic, a decoded command re-parses from its
//! canonical text, and Telegram reads plain commands like everyone else.
#![no_main]

use bridge::channel::{Request, command};
use channels::telegram;
use libfuzzer_sys::fuzz_target;

fn check(text: &str, r: &Option<Request>) {
    match r {
        Some(Request::Decide { id, choice, .. }) => {
            let id = id.as_str();
            assert!(
                !id.is_empty() && !id.contains(char::is_whitespace),
                "id {id:?}"
            );
            let head = text.split_whitespace().next().unwrap_or_default();
            assert!(
                head.to_ascii_lowercase().starts_with("/approve"),
                "{text:?}"
            );
            let canonical = format!("/approve {id} {choice}");
            assert_eq!(&command::parse(&canonical), r);
        }
        Some(Request::Malformed { raw, .. }) => assert!(raw.chars().count() <= 200),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // `bot\0text` sets Telegram's bot username; otherwise none is known.
    let (bot, text) = match input.split_once('\0') {
        Some((bot, text)) => (Some(bot), text),
        None => (None, input),
    };
    let shared = command::parse(text);
    let tg = telegram::receive::command(text, bot);
    for r in [&shared, &tg] {
        check(text, r);
    }
    let head = text.split_whitespace().next().unwrap_or_default();
    if !head.contains('@') {
        assert_eq!(tg, shared, "{text:?}");
    }
});
