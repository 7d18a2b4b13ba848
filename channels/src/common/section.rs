//! What an adapter makes of its config section, the same for Telegram, Discord and Slack:
//! the prompt targets as the engine's `Target`s and, for numeric ids, who may answer.

use std::fmt::Display;

use bridge::channel::Target;

/// The section's effective targets as `Target`s of `channel`, each chat in its id's text.
pub fn targets<T: Display>(channel: &str, ids: &[T]) -> Vec<Target> {
    ids.iter()
        .map(|id| Target {
            channel: channel.to_owned(),
            chat: id.to_string(),
        })
        .collect()
}

/// Whether `user_id` names one of `allowed`, in the canonical decimal form only: "042" or
/// "+42" is not user 42.
#[cfg(any(feature = "telegram", feature = "discord"))]
pub fn allows_decimal(allowed: &std::collections::HashSet<u64>, user_id: &str) -> bool {
    user_id
        .parse::<u64>()
        .is_ok_and(|id| id.to_string() == user_id && allowed.contains(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_carry_the_channel_and_the_ids_text() {
        assert_eq!(
            targets("telegram", &[42, -100123]),
            [
                Target {
                    channel: "telegram".into(),
                    chat: "42".into()
                },
                Target {
                    channel: "telegram".into(),
                    chat: "-100123".into()
                },
            ]
        );
    }

    #[cfg(any(feature = "telegram", feature = "discord"))]
    #[test]
    fn only_the_canonical_decimal_form_is_allowed() {
        let allowed = [42u64].into();
        assert!(allows_decimal(&allowed, "42"));
        for other in ["042", "+42", " 42", "42.0", "43", ""] {
            assert!(!allows_decimal(&allowed, other), "{other:?}");
        }
    }
}
