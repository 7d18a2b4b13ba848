//! Prompts Telegram may show although their send failed. When the answer to a
//! `sendMessage` is lost after Telegram stored the message, the retry makes a second
//! prompt, and the first keeps live buttons the bridge never recorded. Telegram numbers a
//! private chat's messages in order, so once a later prompt's send succeeds, every id
//! between the last one seen before the failure and the new prompt, other than those seen
//! since, may be such an orphan: [`Orphans::prompt_sent`] names them so the adapter can
//! remove their buttons (an edit of a user's message or of a message without buttons
//! fails harmlessly). A restart starts from the prompts the store recorded
//! ([`Orphans::resume`]): a kill between a send and its record leaves an id among, above or
//! (in a chat's first prompts) below them unrecorded, swept at start or with the first
//! prompt after the restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use bridge::channel::RESUME_PROMPTS;

/// Most ids one sweep edits: each edit takes one of the chat's one-per-second slots.
pub const MAX_SWEEP: usize = 8;

#[derive(Default)]
pub struct Orphans {
    chats: Mutex<HashMap<i64, Chat>>,
}

#[derive(Default)]
struct Chat {
    /// Highest message id seen in the chat, ours or the user's.
    last: Option<i32>,
    /// Set by a prompt send Telegram may have handled: the last id seen before it.
    suspect_after: Option<i32>,
    /// Ids seen since `suspect_after`: not orphans.
    seen_since: BTreeSet<i32>,
}

impl Orphans {
    fn with<R>(&self, chat: i64, f: impl FnOnce(&mut Chat) -> R) -> R {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        f(chats.entry(chat).or_default())
    }

    /// Message `id` exists in `chat` and is accounted for (a send's answer, an update).
    pub fn saw(&self, chat: i64, id: i32) {
        self.with(chat, |c| c.saw(id));
    }

    /// The bridge (re)started; `recorded` are the last prompt ids the store holds for
    /// `chat` (up to [`RESUME_PROMPTS`]; none for a chat it never prompted). An id between
    /// them that is not recorded may be a prompt a kill left between its send and its
    /// record (or one whose sweep a kill cut short): returned, newest first, to sweep at
    /// once — below them too when they are the chat's whole record (fewer than
    /// [`RESUME_PROMPTS`]), as for an orphan that was the chat's first prompt. Ids above
    /// them are suspects until the chat's next prompt bounds them.
    pub fn resume(&self, chat: i64, recorded: &[i32]) -> Vec<i32> {
        let top = recorded.iter().copied().max().unwrap_or(0);
        let floor = if recorded.len() < RESUME_PROMPTS {
            0
        } else {
            recorded.iter().copied().min().unwrap_or(0)
        };
        self.with(chat, |c| {
            c.suspect_after = Some(c.suspect_after.map_or(top, |s| s.min(top)));
            c.last = Some(c.last.map_or(top, |l| l.max(top)));
            suspects(floor, top, |i| recorded.contains(&i))
        })
    }

    /// A prompt's send to `chat` failed in a way Telegram may still have handled.
    pub fn send_failed(&self, chat: i64) {
        self.with(chat, |c| {
            if c.suspect_after.is_none() {
                c.suspect_after = c.last;
                if c.last.is_none() {
                    tracing::warn!(
                        chat,
                        "a prompt send failed before any message id in this chat was known; if Telegram stored it, its buttons stay until it is pressed (refused)"
                    );
                }
            }
        });
    }

    /// Prompt `id` was sent to `chat`: the ids that may be orphaned prompts, newest first.
    pub fn prompt_sent(&self, chat: i64, id: i32) -> Vec<i32> {
        self.with(chat, |c| {
            let after = c.suspect_after.take();
            let seen = std::mem::take(&mut c.seen_since);
            c.saw(id);
            let Some(after) = after else {
                return Vec::new();
            };
            suspects(after, id, |i| seen.contains(&i))
        })
    }
}

/// The ids strictly between `after` and `before` that are not `known`, newest first, at most
/// [`MAX_SWEEP`].
fn suspects(after: i32, before: i32, known: impl Fn(i32) -> bool) -> Vec<i32> {
    (after.saturating_add(1)..before)
        .rev()
        .filter(|&i| !known(i))
        .take(MAX_SWEEP)
        .collect()
}

impl Chat {
    fn saw(&mut self, id: i32) {
        self.last = Some(self.last.map_or(id, |l| l.max(id)));
        if self.suspect_after.is_some() {
            self.seen_since.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_between_the_last_seen_and_the_new_prompt_are_suspects() {
        let o = Orphans::default();
        o.saw(7, 10);
        o.send_failed(7);
        o.send_failed(7);
        o.saw(7, 12); // a notice sent meanwhile
        assert_eq!(o.prompt_sent(7, 14), [13, 11]);
        // Swept once: the next prompt has nothing to sweep.
        assert!(o.prompt_sent(7, 15).is_empty());
        assert!(o.prompt_sent(8, 3).is_empty(), "other chats are untouched");
    }

    #[test]
    fn no_floor_no_sweep_and_a_sweep_is_bounded() {
        let o = Orphans::default();
        o.send_failed(7);
        assert!(
            o.prompt_sent(7, 40).is_empty(),
            "nothing seen before the failure"
        );
        o.send_failed(7);
        let swept = o.prompt_sent(7, 100);
        assert_eq!(swept.len(), MAX_SWEEP);
        assert_eq!(swept[0], 99);
    }

    #[test]
    fn after_a_restart_unrecorded_ids_among_and_above_the_recorded_prompts_are_suspects() {
        let o = Orphans::default();
        // The chat's whole record, 20 and 23: 21 and 22 may be orphans, and so may what
        // lies below 20 (sweep now, newest first, at most MAX_SWEEP); whatever lies between
        // 23 and the next prompt too (sweep then).
        assert_eq!(o.resume(7, &[23, 20]), [22, 21, 19, 18, 17, 16, 15, 14]);
        o.saw(7, 25); // an update of this run: the owner's message
        assert_eq!(o.prompt_sent(7, 27), [26, 24]);
        assert!(o.prompt_sent(7, 28).is_empty());
        // A chat without a recorded prompt: everything before its first prompt is suspect.
        assert!(o.resume(8, &[]).is_empty());
        assert_eq!(o.prompt_sent(8, 3), [2, 1]);
        // A full window of records: older ids may be the owner's older prompts, untouched.
        let recorded: Vec<i32> = (0..RESUME_PROMPTS as i32).map(|i| 50 + 2 * i).collect();
        let swept = o.resume(9, &recorded);
        assert_eq!(swept.len(), RESUME_PROMPTS - 1, "only the gaps: {swept:?}");
        assert!(swept.iter().all(|&i| i > 50), "{swept:?}");
    }

    #[test]
    fn an_orphaned_first_prompt_is_found_once_later_prompts_are_recorded() {
        // A kill left message 1 unrecorded and a second kill cut its sweep short; 2 and 3
        // were recorded since.
        let o = Orphans::default();
        assert_eq!(o.resume(7, &[3, 2]), [1]);
    }
}
