//! `/approve <id> <decision>` and `/pending` parsers of every channel: never panic, agree
//! with each other, and a decoded command re-parses from its canonical text.
#![no_main]

use bridge::channel::Request;
use channels::{discord, matrix, slack, telegram};
use libfuzzer_sys::fuzz_target;

fn check(text: &str, r: &Option<Request>) {
    let Some(Request::Decide { id, decision, .. }) = r else {
        return;
    };
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
    let canonical = format!("/approve {id} {decision}");
    assert_eq!(&slack::receive::command(&canonical), r);
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
    let tg = telegram::receive::command(text, bot);
    let sl = slack::receive::command(text);
    let mx = matrix::command(text);
    let dc = discord::receive::command(text);
    for r in [&tg, &sl, &mx, &dc] {
        check(text, r);
    }
    assert_eq!(sl, mx, "slack and matrix disagree on {text:?}");
    let head = text.split_whitespace().next().unwrap_or_default();
    if !head.contains('@') {
        assert_eq!(telegram::receive::command(text, None), sl, "{text:?}");
    }
    match (&dc, &sl) {
        (Some(Request::Malformed { raw, .. }), _) => assert!(raw.chars().count() <= 200),
        (Some(d), Some(s)) => assert_eq!(d, s, "discord and slack disagree on {text:?}"),
        (None, _) => {}
        (Some(_), None) => panic!("discord read {text:?}, slack did not"),
    }
});
