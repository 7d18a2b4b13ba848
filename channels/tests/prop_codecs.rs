//! Property tests of the button codecs (Telegram callback data, Discord custom_id, Slack
//! action): round trips for every kind, id and choice (time-boxed allows included), the
//! platform limits, no panics.

use bridge::approval::{ApprovalId, Choice, Decision, Kind, Window};
use bridge::channel::action::Action;
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Exec), Just(Kind::Plugin), Just(Kind::System)]
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        proptest::sample::select(Decision::ALL.to_vec()).prop_map(Choice::from),
        (1..=Window::MAX_MINUTES).prop_map(|m| Choice::AllowFor(Window::minutes(m).unwrap())),
    ]
}

/// A kind and an id of it: UUIDs as the gateway sends them, or anything from the codec's
/// alphabet (colons included); plugin ids carry their `plugin:` prefix.
fn kind_and_id() -> impl Strategy<Value = (Kind, ApprovalId)> {
    let uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
    let raw = prop_oneof![uuid, "[A-Za-z0-9._:-]{1,140}"];
    (kind(), raw).prop_map(|(k, s)| match k {
        Kind::Plugin => (k, ApprovalId(format!("plugin:{s}"))),
        _ => (k, ApprovalId(s)),
    })
}

/// Arbitrary text, and text shaped like a payload so decode gets past the tag.
fn payload() -> impl Strategy<Value = String> {
    let shaped = "(exec|plugin|system|evil)_approve:[ -~]{0,120}:(allow-once|allow-always|always|deny|allow-[0-9]{0,5}[mhd]?|[a-z]{0,5})";
    let revoke = "grant_revoke:[ -~]{0,12}";
    prop_oneof![any::<String>(), shaped, revoke]
}

/// The properties every channel's codec has; `len` measures in the platform's unit.
macro_rules! codec_props {
    ($feature:literal, $channel:ident, $max:expr, $len:expr, $decode:expr) => {
        #[cfg(feature = $feature)]
        mod $channel {
            use super::*;
            use channels::$channel::codec;

            fn is_uuid(id: &ApprovalId) -> bool {
                let s = id.as_str().strip_prefix("plugin:").unwrap_or(id.as_str());
                s.len() == 36
                    && s.bytes().enumerate().all(|(i, b)| match i {
                        8 | 13 | 18 | 23 => b == b'-',
                        _ => b.is_ascii_hexdigit(),
                    })
            }

            proptest! {
                #[test]
                fn encode_then_decode_is_identity((kind, id) in kind_and_id(), d in choice()) {
                    match codec::encode(kind, &id, d) {
                        Ok(data) => {
                            prop_assert!($len(&data) <= $max, "{} over {}", data, $max);
                            let a = $decode(&data);
                            prop_assert_eq!(a, Ok(Action::Decide { kind, id, choice: d }));
                        }
                        Err(e) => prop_assert!(!is_uuid(&id), "uuid {id} refused: {e:?}"),
                    }
                }

                #[test]
                fn decode_never_panics_nor_exceeds_the_limit(s in payload()) {
                    match $decode(&s) {
                        // One spelling per button: what decodes encodes back, but for the
                        // `always` alias and a window written another way (`60m` is `1h`).
                        Ok(Action::Decide { kind, id, choice }) => {
                            prop_assert!($len(&s) <= $max);
                            if s.ends_with(&format!(":{}", choice.token())) {
                                prop_assert_eq!(codec::encode(kind, &id, choice), Ok(s));
                            }
                        }
                        Ok(Action::RevokeGrant(g)) => {
                            prop_assert_eq!(bridge::channel::action::encode_revoke(&g), s.to_ascii_lowercase());
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    };
}

fn bytes(s: &str) -> usize {
    s.len()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

codec_props!(
    "telegram",
    telegram,
    codec::MAX_CALLBACK_BYTES,
    bytes,
    codec::decode
);
codec_props!(
    "discord",
    discord,
    codec::MAX_CUSTOM_ID,
    chars,
    codec::decode
);
codec_props!("slack", slack, codec::MAX_ACTION_ID, chars, |s: &str| {
    codec::decode(s, s)
});

#[cfg(feature = "slack")]
proptest! {
    #[test]
    fn slack_halves_that_differ_are_a_mismatch(a in payload(), b in payload()) {
        use channels::slack::codec::{decode, CodecError};
        prop_assume!(a != b);
        prop_assert_eq!(decode(&a, &b), Err(CodecError::Mismatch));
    }
}
