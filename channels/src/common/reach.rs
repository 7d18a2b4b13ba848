//! A channel's own view of whether it reaches its chats ([`Reach`]), as its receive loop
//! learns it: `down` once per cause (a repeated failure of the same cause changes nothing,
//! so nobody watching is woken twice), `up` only when a call that needs the path worked.

use bridge::channel::Reach;
use tokio::sync::watch;

/// The sending half an adapter holds; [`Channel::reach`](bridge::channel::Channel::reach)
/// hands out receivers.
#[derive(Debug)]
pub struct ReachCell {
    channel: &'static str,
    tx: watch::Sender<Reach>,
}

impl ReachCell {
    pub fn new(channel: &'static str) -> ReachCell {
        ReachCell {
            channel,
            tx: watch::Sender::new(Reach::Up),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Reach> {
        self.tx.subscribe()
    }

    /// The channel cannot reach its chats for `reason`; `fix` is what the owner can do.
    /// Logged and sent once per cause.
    pub fn down(&self, reason: &str, fix: &str) {
        let next = Reach::Down {
            reason: reason.to_owned(),
            fix: fix.to_owned(),
        };
        let changed = self.tx.send_if_modified(|r| {
            if *r == next {
                return false;
            }
            *r = next.clone();
            true
        });
        if changed {
            tracing::error!(
                channel = self.channel,
                reason,
                fix,
                "channel cannot reach its chats"
            );
        }
    }

    /// The channel works again (a poll, sync or connect succeeded).
    pub fn up(&self) {
        let changed = self.tx.send_if_modified(|r| {
            if *r == Reach::Up {
                return false;
            }
            *r = Reach::Up;
            true
        });
        if changed {
            tracing::info!(channel = self.channel, "channel reaches its chats again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_once_per_cause_and_up_once() {
        let cell = ReachCell::new("test");
        let mut rx = cell.subscribe();
        assert!(!rx.has_changed().unwrap());
        cell.up();
        assert!(!rx.has_changed().unwrap(), "up while up wakes nobody");
        cell.down("token revoked", "new token");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        cell.down("token revoked", "new token");
        assert!(
            !rx.has_changed().unwrap(),
            "the same cause again wakes nobody"
        );
        cell.down("another poller", "own bot");
        assert_eq!(
            *rx.borrow_and_update(),
            Reach::Down {
                reason: "another poller".into(),
                fix: "own bot".into()
            }
        );
        cell.up();
        assert_eq!(*rx.borrow_and_update(), Reach::Up);
        cell.up();
        assert!(!rx.has_changed().unwrap());
    }
}
