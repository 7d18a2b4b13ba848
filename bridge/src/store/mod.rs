//! The Store port: the approvals the bridge knows, the prompts it sent for them
//! (approval -> channel message refs), the owners' time-boxed grants, an append-only audit log, and the bridge's own
//! state (when this state dir first started, how far the gateway's approval history has
//! been read). It is what lets a restarted bridge edit old prompts, honour their buttons,
//! send no duplicates and report each approval that ended unseen once.
//! `SqliteStore` is the daemon's; `MemoryStore` serves tests; both pass one suite.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use serde::{Deserialize, Serialize};

use crate::approval::{Approval, ApprovalId, Outcome};
use crate::channel::MessageRef;
use crate::grant::{Grant, GrantId, Revocation};
use crate::history::HistoryMark;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store refuses writes (the in-memory store's stand-in for a full disk).
    #[error("database or disk is full")]
    Full,
    /// The database was written by a newer bridge (schema version `found`; this build
    /// knows up to `known`): refused rather than misread.
    #[error("database schema version {found} is newer than this bridge knows ({known})")]
    TooNew { found: i64, known: i64 },
}

/// An approval the bridge still has work for: pending, or ended with prompts not yet
/// rewritten to show the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenApproval {
    pub approval: Approval,
    pub outcome: Option<Outcome>,
    pub prompts: Vec<StoredPrompt>,
}

/// A prompt sent for an open approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrompt {
    pub message: MessageRef,
    /// It already shows this approval's outcome.
    pub finished: bool,
    /// The message is a digest: other approvals have rows in it too.
    pub digest: bool,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub approval_id: Option<String>,
    /// `requested`, `delivered`, `delivery_failed`, `answered`, `refused`, `resolved`,
    /// `resolve_failed`, `ended`, `finished`.
    pub event: String,
    pub channel: Option<String>,
    /// The responder's stable id, when a person acted.
    pub actor: Option<String>,
    /// Event-specific detail (refusal reason, decision, error), JSON.
    pub detail: serde_json::Value,
}

/// Durable state. Every write either happens whole or not at all; a state change and its
/// audit record are written together. Calls are synchronous and local (the engine's runner
/// makes them between steps); the core never calls a store, it asks for writes as effects.
pub trait Store: Send + Sync + 'static {
    /// Records a pending approval and, in the same transaction, its audit record `audit`
    /// (so a crash cannot leave one without the other). Returns false when it was already
    /// known; then nothing is written.
    fn insert_approval(&self, a: &Approval, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Records how an approval ended (first write wins) and, in the same transaction, its
    /// audit record. Returns false when an outcome was already recorded.
    fn set_outcome(
        &self,
        id: &ApprovalId,
        outcome: &Outcome,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Records a sent prompt. One per (approval, target): a second is ignored.
    fn insert_prompt(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Marks a prompt as showing its approval's outcome.
    fn prompt_finished(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Everything the engine must pick up after a restart, oldest first.
    fn open_approvals(&self) -> Result<Vec<OpenApproval>, StoreError>;

    /// The last `per_target` distinct prompt messages recorded in each target, newest
    /// first, grouped by target.
    fn recent_prompts(&self, per_target: usize) -> Result<Vec<MessageRef>, StoreError>;

    /// How a finished approval ended, if the store knows it.
    fn outcome(&self, id: &ApprovalId) -> Result<Option<Outcome>, StoreError>;

    /// Appends one audit record.
    fn audit(&self, r: &AuditRecord) -> Result<(), StoreError>;

    /// The audit log in order, optionally for one approval.
    fn audit_log(&self, approval: Option<&ApprovalId>) -> Result<Vec<AuditRecord>, StoreError>;

    /// Why the last write failed, while no later write has succeeded (disk full,
    /// read-only file): the bridge then refuses answers, since it cannot record them.
    fn fault(&self) -> Option<String>;

    /// How far the gateway's approval history has been read: the newest row taken in, or
    /// `None` before the first read.
    fn history_mark(&self) -> Result<Option<HistoryMark>, StoreError>;

    /// Records `mark` as read. The mark only moves forward: one at or before the stored
    /// mark (`HistoryMark`'s order) changes nothing.
    fn set_history_mark(&self, mark: &HistoryMark) -> Result<(), StoreError>;

    /// When this store first started (Unix ms, the bridge's clock): set once when a fresh
    /// database is created, or when one that predates it is first opened by a bridge that
    /// knows it, and kept from then on. A fresh state dir reads history no further back.
    fn first_start_ms(&self) -> i64;

    /// Whether any prompt was recorded for `id` (finished or not, in any target).
    fn was_prompted(&self, id: &ApprovalId) -> Result<bool, StoreError>;

    /// Records a new grant and, in the same transaction, its `grant_created` record.
    /// Returns false when that id is taken; then nothing is written.
    fn insert_grant(&self, g: &Grant, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Counts one use of grant `id` and writes its `grant_used` record, together. Returns
    /// false (nothing written) when the grant is unknown or revoked.
    fn grant_used(&self, id: &GrantId, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Records a revocation (the first wins) and its audit record, together. Returns false
    /// when the grant is unknown or was revoked already.
    fn revoke_grant(
        &self,
        id: &GrantId,
        revocation: &Revocation,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// The grants not revoked whose window ends after `after_ms`, oldest first.
    fn open_grants(&self, after_ms: i64) -> Result<Vec<Grant>, StoreError>;
}

/// The behaviour every [`Store`] must show, run against each implementation
/// (`store_conformance!(path::to::constructor)` inside a test module; the constructor
/// returns a fresh, empty store). `full` makes its writes fail as a full disk does.
#[cfg(test)]
macro_rules! store_conformance {
    ($new:expr, $full:expr, $room:expr) => {
        use $crate::approval::{Decider, Decision, Kind};
        use $crate::channel::Target;

        fn rec(id: &str, event: &str) -> AuditRecord {
            AuditRecord {
                at_ms: 1,
                approval_id: Some(id.into()),
                event: event.into(),
                channel: None,
                actor: None,
                detail: serde_json::Value::Null,
            }
        }

        fn approval(id: &str) -> $crate::approval::Approval {
            $crate::approval::Approval::from_gateway(
                Kind::Exec,
                &serde_json::json!({"id": id, "request": {"command": "ls"}, "createdAtMs": 1}),
            )
            .unwrap()
        }

        fn prompt(chat: &str, msg: &str) -> MessageRef {
            MessageRef {
                target: Target {
                    channel: "telegram".into(),
                    chat: chat.into(),
                },
                message: msg.into(),
            }
        }

        fn grant(n: u32, until_ms: i64) -> $crate::grant::Grant {
            $crate::grant::Grant {
                id: $crate::grant::GrantId::from_random(n),
                scope: $crate::grant::Scope::of("ws://gw", &approval("a")),
                by: $crate::approval::Responder {
                    channel: "telegram".into(),
                    user_id: "111".into(),
                    display: None,
                },
                window: $crate::approval::Window::parse("1h").unwrap(),
                minted_by: "a".into(),
                from_ms: 1,
                until_ms,
                uses: 0,
                revoked: None,
            }
        }

        #[test]
        fn grants_count_their_uses_and_a_revocation_is_kept_once() {
            let s = $new;
            let (g1, g2) = (grant(1, 5_000), grant(2, 9_000));
            assert!(s.insert_grant(&g1, &rec("a", "grant_created")).unwrap());
            assert!(s.insert_grant(&g2, &rec("a", "grant_created")).unwrap());
            assert!(!s.insert_grant(&g1, &rec("a", "grant_created")).unwrap());
            assert!(s.grant_used(&g1.id, &rec("b", "grant_used")).unwrap());
            assert!(s.grant_used(&g1.id, &rec("c", "grant_used")).unwrap());
            let open = s.open_grants(0).unwrap();
            assert_eq!(open.len(), 2);
            assert_eq!(open[0].id, g1.id);
            assert_eq!(open[0].uses, 2);
            // Ended windows are not loaded.
            assert_eq!(s.open_grants(5_000).unwrap().len(), 1);
            let r = $crate::grant::Revocation {
                at_ms: 7,
                by: "telegram:111".into(),
            };
            assert!(s.revoke_grant(&g1.id, &r, &rec("a", "grant_revoked")).unwrap());
            assert!(!s.revoke_grant(&g1.id, &r, &rec("a", "grant_revoked")).unwrap());
            assert!(!s.grant_used(&g1.id, &rec("d", "grant_used")).unwrap());
            let unknown = $crate::grant::GrantId::from_random(3);
            assert!(!s.revoke_grant(&unknown, &r, &rec("a", "grant_revoked")).unwrap());
            assert!(!s.grant_used(&unknown, &rec("a", "grant_used")).unwrap());
            assert_eq!(
                s.open_grants(0).unwrap().iter().map(|g| &g.id).collect::<Vec<_>>(),
                vec![&g2.id]
            );
            let events: Vec<String> = s.audit_log(None).unwrap().into_iter().map(|r| r.event).collect();
            assert_eq!(
                events,
                ["grant_created", "grant_created", "grant_used", "grant_used", "grant_revoked"]
            );
        }

        #[test]
        fn a_full_store_refuses_grant_writes_and_keeps_nothing() {
            let s = $new;
            $full(&s);
            let big = AuditRecord {
                detail: serde_json::json!("x".repeat(64 * 1024)),
                ..rec("a", "grant_created")
            };
            assert!(s.insert_grant(&grant(1, 5_000), &big).is_err());
            $room(&s);
            assert!(s.open_grants(0).unwrap().is_empty());
            assert!(s.audit_log(None).unwrap().is_empty());
        }

        #[test]
        fn prompts_stay_open_until_finished_and_the_first_outcome_wins() {
            let s = $new;
            assert!(
                s.insert_approval(&approval("a"), &rec("a", "requested"))
                    .unwrap()
            );
            assert!(
                !s.insert_approval(&approval("a"), &rec("a", "requested"))
                    .unwrap()
            );
            s.insert_prompt(&"a".into(), &prompt("1", "10"), 5).unwrap();
            s.insert_prompt(&"a".into(), &prompt("1", "11"), 6).unwrap(); // duplicate target: ignored
            let open = s.open_approvals().unwrap();
            assert_eq!(open.len(), 1);
            assert_eq!(
                open[0].prompts,
                vec![StoredPrompt {
                    message: prompt("1", "10"),
                    finished: false,
                    digest: false
                }]
            );
            let outcome = Outcome::Decided {
                decision: Decision::Deny,
                by: Decider::Elsewhere { resolved_by: None },
                at_ms: 9,
            };
            s.set_outcome(&"a".into(), &outcome, &rec("a", "ended"))
                .unwrap();
            s.set_outcome(
                &"a".into(),
                &Outcome::Gone { at_ms: 10 },
                &rec("a", "ended"),
            )
            .unwrap(); // first write wins
            assert_eq!(
                s.open_approvals().unwrap()[0].outcome,
                Some(outcome.clone())
            );
            s.prompt_finished(&"a".into(), &prompt("1", "10"), 11)
                .unwrap();
            assert!(s.open_approvals().unwrap().is_empty());
            assert_eq!(s.outcome(&"a".into()).unwrap(), Some(outcome));
            assert_eq!(s.outcome(&"nope".into()).unwrap(), None);
        }

        #[test]
        fn open_approvals_come_oldest_first() {
            let s = $new;
            for (id, created) in [("b", 3), ("a", 2), ("c", 1)] {
                let mut a = approval(id);
                a.created_at_ms = created;
                s.insert_approval(&a, &rec(id, "requested")).unwrap();
            }
            let ids: Vec<String> = s
                .open_approvals()
                .unwrap()
                .into_iter()
                .map(|o| o.approval.id.0)
                .collect();
            assert_eq!(ids, ["c", "a", "b"]);
        }

        #[test]
        fn recent_prompts_are_the_last_few_messages_of_each_target_newest_first() {
            let s = $new;
            for (id, chat, msg) in [
                ("a", "1", "10"),
                ("b", "1", "12"),
                ("c", "1", "12"), // a digest: two rows, one message
                ("d", "1", "15"),
                ("e", "2", "3"),
            ] {
                s.insert_approval(&approval(id), &rec(id, "requested"))
                    .unwrap();
                s.insert_prompt(&id.into(), &prompt(chat, msg), 1).unwrap();
            }
            let got: Vec<(String, String)> = s
                .recent_prompts(2)
                .unwrap()
                .into_iter()
                .map(|m| (m.target.chat, m.message))
                .collect();
            let want = [("1", "15"), ("1", "12"), ("2", "3")];
            assert_eq!(got, want.map(|(c, m)| (c.to_owned(), m.to_owned())));
        }

        #[test]
        fn a_state_change_and_its_audit_record_are_written_together() {
            let s = $new;
            assert!(
                s.insert_approval(&approval("a"), &rec("a", "requested"))
                    .unwrap()
            );
            assert!(
                !s.insert_approval(&approval("a"), &rec("a", "requested"))
                    .unwrap()
            );
            let gone = Outcome::Gone { at_ms: 9 };
            assert!(
                s.set_outcome(&"a".into(), &gone, &rec("a", "ended"))
                    .unwrap()
            );
            assert!(
                !s.set_outcome(&"a".into(), &gone, &rec("a", "ended"))
                    .unwrap()
            );
            let events: Vec<String> = s
                .audit_log(Some(&"a".into()))
                .unwrap()
                .into_iter()
                .map(|r| r.event)
                .collect();
            assert_eq!(
                events,
                ["requested", "ended"],
                "one record per change, none for no-ops"
            );

            // A write that fails leaves neither the state change nor its record.
            let b = approval("b");
            $full(&s);
            let big = AuditRecord {
                detail: serde_json::json!("x".repeat(64 * 1024)),
                ..rec("b", "requested")
            };
            assert!(s.insert_approval(&b, &big).is_err());
            assert!(s.fault().is_some(), "the fault is remembered");
            $room(&s);
            assert!(s.audit_log(Some(&"b".into())).unwrap().is_empty());
            assert!(
                s.open_approvals()
                    .unwrap()
                    .iter()
                    .all(|o| o.approval.id != b.id),
                "no approval row without its audit record"
            );
            s.audit(&rec("b", "refused")).unwrap();
            assert_eq!(s.fault(), None, "a write that succeeds clears the fault");
        }

        #[test]
        fn a_digest_row_finishes_alone() {
            let s = $new;
            for id in ["a", "b"] {
                s.insert_approval(&approval(id), &rec(id, "requested"))
                    .unwrap();
                s.insert_prompt(&id.into(), &prompt("1", "10"), 5).unwrap();
            }
            s.set_outcome(&"a".into(), &Outcome::Gone { at_ms: 9 }, &rec("a", "ended"))
                .unwrap();
            s.prompt_finished(&"a".into(), &prompt("1", "10"), 11)
                .unwrap();
            let open = s.open_approvals().unwrap();
            assert_eq!(open.len(), 1, "only b is still open");
            assert_eq!(open[0].approval.id, "b".into());
            assert_eq!(
                open[0].prompts,
                vec![StoredPrompt {
                    message: prompt("1", "10"),
                    finished: false,
                    digest: true
                }]
            );
        }

        #[test]
        fn the_history_mark_starts_empty_and_only_moves_forward() {
            let s = $new;
            assert_eq!(s.history_mark().unwrap(), None);
            let mark = |ms: i64, id: &str| $crate::history::HistoryMark {
                resolved_at_ms: ms,
                id: id.into(),
            };
            s.set_history_mark(&mark(10, "b")).unwrap();
            assert_eq!(s.history_mark().unwrap(), Some(mark(10, "b")));
            s.set_history_mark(&mark(10, "a")).unwrap();
            s.set_history_mark(&mark(9, "z")).unwrap();
            assert_eq!(
                s.history_mark().unwrap(),
                Some(mark(10, "b")),
                "an older mark changes nothing"
            );
            s.set_history_mark(&mark(10, "c")).unwrap();
            assert_eq!(s.history_mark().unwrap(), Some(mark(10, "c")));
            s.set_history_mark(&mark(11, "a")).unwrap();
            assert_eq!(s.history_mark().unwrap(), Some(mark(11, "a")));
        }

        #[test]
        fn the_first_start_is_recorded_once() {
            let before = $crate::approval::now_ms();
            let s = $new;
            let after = $crate::approval::now_ms();
            let first = s.first_start_ms();
            assert!(
                (before..=after).contains(&first),
                "{before} <= {first} <= {after}"
            );
            s.audit(&rec("a", "requested")).unwrap();
            assert_eq!(s.first_start_ms(), first);
        }

        #[test]
        fn was_prompted_knows_any_prompt_recorded_for_an_approval() {
            let s = $new;
            assert!(!s.was_prompted(&"a".into()).unwrap(), "unknown approval");
            s.insert_approval(&approval("a"), &rec("a", "requested"))
                .unwrap();
            assert!(!s.was_prompted(&"a".into()).unwrap(), "known, never prompted");
            s.insert_prompt(&"a".into(), &prompt("1", "10"), 5).unwrap();
            assert!(s.was_prompted(&"a".into()).unwrap());
            s.set_outcome(&"a".into(), &Outcome::Gone { at_ms: 9 }, &rec("a", "ended"))
                .unwrap();
            s.prompt_finished(&"a".into(), &prompt("1", "10"), 11)
                .unwrap();
            assert!(
                s.was_prompted(&"a".into()).unwrap(),
                "finished prompts count too"
            );
            assert!(!s.was_prompted(&"b".into()).unwrap());
        }

        #[test]
        fn the_audit_log_keeps_every_record_in_order() {
            let s = $new;
            let refused = AuditRecord {
                at_ms: 1,
                approval_id: Some("a".into()),
                event: "refused".into(),
                channel: Some("telegram".into()),
                actor: Some("666".into()),
                detail: serde_json::json!({"reason": "not_allowed"}),
            };
            s.audit(&refused).unwrap();
            s.audit(&rec("b", "answered")).unwrap();
            s.audit(&rec("a", "answered")).unwrap();
            assert_eq!(
                s.audit_log(Some(&"a".into())).unwrap(),
                vec![refused, rec("a", "answered")]
            );
            assert_eq!(s.audit_log(None).unwrap().len(), 3);
        }
    };
}

#[cfg(test)]
pub(crate) use store_conformance;
