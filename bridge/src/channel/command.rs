//! The commands an owner can type on every channel: `/approve <id> <choice>`,
//! `/pending`, `/missed`, `/probe`, `/grants` and `/revoke <grant>`. One parser, so every channel reads the same text the same way; a channel
//! whose commands carry an addressee (Telegram's `/approve@my_bot`) names it first.

use super::Request;
use crate::approval::{ApprovalId, Choice};
use crate::grant::GrantId;

/// Longest text a malformed command keeps for the audit log and the owner's notice.
const MAX_RAW_CHARS: usize = 200;

/// Parses a typed command. `None`: `text` is no command of ours.
pub fn parse(text: &str) -> Option<Request> {
    parse_named(text, Some)
}

/// Like [`parse`] for a channel whose command word carries more than the name: `name`
/// maps the first word to the command's name, or to `None` when the command is not meant
/// for this bridge.
pub fn parse_named<'a>(
    text: &'a str,
    name: impl FnOnce(&'a str) -> Option<&'a str>,
) -> Option<Request> {
    let text = text.trim();
    let mut words = text.split_whitespace();
    let cmd = name(words.next()?)?.to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let malformed = |why: String| Request::Malformed {
        raw: text.chars().take(MAX_RAW_CHARS).collect(),
        why,
    };
    match cmd.as_str() {
        "/pending" => Some(Request::ListPending),
        "/probe" => Some(Request::Probe),
        "/missed" => Some(Request::ListMissed),
        "/grants" => Some(Request::ListGrants),
        "/revoke" => Some(match args.as_slice() {
            [grant] => match GrantId::parse(grant) {
                Some(grant) => Request::Revoke { grant },
                None => malformed(format!(
                    "{grant:?} is no grant id; /grants lists them (g-1a2b3c4d)"
                )),
            },
            _ => malformed("expected /revoke <grant id>; /grants lists them".into()),
        }),
        "/approve" => Some(match args.as_slice() {
            [id, token] => match Choice::parse(&token.to_ascii_lowercase()) {
                Some(choice) => Request::Decide {
                    id: ApprovalId((*id).to_owned()),
                    choice,
                    // A typed command names no kind; the id alone says which approval.
                    kind: None,
                },
                None => malformed(format!(
                    "unknown decision {token:?}; use allow-once, allow-always, deny or a time-boxed allow such as allow-1h"
                )),
            },
            _ => malformed("expected /approve <id> allow-once|allow-always|deny".into()),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Decision, Window};

    const ID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";

    fn decide(choice: impl Into<Choice>) -> Option<Request> {
        Some(Request::Decide {
            id: ApprovalId(ID.into()),
            choice: choice.into(),
            kind: None,
        })
    }

    #[test]
    fn approve_reads_an_id_and_a_decision_in_any_case() {
        assert_eq!(
            parse(&format!("/approve {ID} allow-once")),
            decide(Decision::AllowOnce)
        );
        assert_eq!(
            parse(&format!(" /approve {ID} always ")),
            decide(Decision::AllowAlways)
        );
        assert_eq!(
            parse(&format!("/APPROVE {ID} Deny")),
            decide(Decision::Deny)
        );
        assert_eq!(parse("/pending"), Some(Request::ListPending));
        assert_eq!(parse("/Probe"), Some(Request::Probe));
        assert_eq!(parse("/missed"), Some(Request::ListMissed));
        assert_eq!(
            parse(&format!("/approve {ID} Allow-1H")),
            decide(Choice::AllowFor(Window::parse("1h").unwrap()))
        );
        assert_eq!(parse("/grants"), Some(Request::ListGrants));
        assert_eq!(
            parse("/revoke g-1A2B3C4D"),
            Some(Request::Revoke {
                grant: GrantId("g-1a2b3c4d".into())
            })
        );
    }

    #[test]
    fn other_approve_shapes_are_malformed_and_other_text_is_ignored() {
        for text in [
            "/approve",
            "/approve abc",
            "/approve abc allow",
            "/approve x maybe",
            "/approve a b c",
            "/approve x allow-25h",
            "/revoke",
            "/revoke 1234",
            "/revoke g-1a2b3c4d now",
        ] {
            assert!(
                matches!(parse(text), Some(Request::Malformed { .. })),
                "{text}"
            );
        }
        for text in ["hello /approve x deny", "/approved x deny", "", "  "] {
            assert_eq!(parse(text), None, "{text}");
        }
        let long = format!("/approve {} deny please", "x".repeat(5000));
        let Some(Request::Malformed { raw, .. }) = parse(&long) else {
            panic!("not malformed");
        };
        assert_eq!(raw.chars().count(), MAX_RAW_CHARS);
    }

    #[test]
    fn a_named_command_is_read_only_when_the_channel_says_it_is_ours() {
        let text = format!("/approve@me {ID} deny");
        assert_eq!(
            parse_named(&text, |head| head.strip_suffix("@me")),
            decide(Decision::Deny)
        );
        assert_eq!(parse_named("/pending@other x", |_| None), None);
    }
}
