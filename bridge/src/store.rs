//! Durable state in SQLite: approvals the bridge knows, the prompts it sent for them
//! (approval -> channel message refs) and an append-only audit log. It is what lets a
//! restarted bridge edit old prompts, honour their buttons and send no duplicates.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::approval::{Approval, ApprovalId, Outcome};
use crate::channel::{MessageRef, Target};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
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

pub struct Store {
    conn: Mutex<Connection>,
    /// The last write's error, cleared by the next write that succeeds; `/healthz` reports it.
    fault: Mutex<Option<String>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    outcome     TEXT,
    created_ms  INTEGER NOT NULL,
    ended_ms    INTEGER
);
CREATE TABLE IF NOT EXISTS prompts (
    approval_id TEXT NOT NULL REFERENCES approvals(id),
    channel     TEXT NOT NULL,
    chat        TEXT NOT NULL,
    message     TEXT NOT NULL,
    sent_ms     INTEGER NOT NULL,
    finished_ms INTEGER,
    PRIMARY KEY (approval_id, channel, chat)
);
CREATE INDEX IF NOT EXISTS prompts_by_message ON prompts(channel, chat, message);
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    approval_id TEXT,
    event       TEXT NOT NULL,
    channel     TEXT,
    actor       TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_approval ON audit(approval_id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
";

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable across process crashes (kill -9) in WAL mode; only an OS
        // crash can lose the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
            fault: Mutex::new(None),
        })
    }

    /// Why the last write failed, while no later write has succeeded (disk full,
    /// read-only file): the bridge then refuses answers, since it cannot record them.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers a write's result for [`Store::fault`].
    fn wrote<T>(&self, r: Result<T, rusqlite::Error>) -> Result<T, StoreError> {
        let mut fault = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(v) => {
                *fault = None;
                Ok(v)
            }
            Err(e) => {
                *fault = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    /// Caps the database at its current size, as a full disk would (SQLite then answers
    /// SQLITE_FULL to any write that needs a new page). For tests of the fail-closed path.
    #[cfg(test)]
    pub(crate) fn fill_up(&self) {
        let conn = self.conn();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        conn.pragma_update(None, "max_page_count", pages)
            .expect("max_page_count");
    }

    #[cfg(test)]
    pub(crate) fn unfill(&self) {
        self.conn()
            .pragma_update(None, "max_page_count", 1_000_000_000i64)
            .expect("max_page_count");
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: every write is
        // one statement or one transaction.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a pending approval and, in the same transaction, its audit record `audit`
    /// (so a crash cannot leave one without the other). Returns false when it was already
    /// known; then nothing is written.
    pub fn insert_approval(&self, a: &Approval, audit: &AuditRecord) -> Result<bool, StoreError> {
        let body = serde_json::to_string(a)?;
        self.audited(
            "INSERT OR IGNORE INTO approvals (id, body, created_ms) VALUES (?1, ?2, ?3)",
            params![a.id.as_str(), body, a.created_at_ms],
            audit,
        )
    }

    /// Records how an approval ended (first write wins) and, in the same transaction, its
    /// audit record. Returns false when an outcome was already recorded.
    pub fn set_outcome(
        &self,
        id: &ApprovalId,
        outcome: &Outcome,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let o = serde_json::to_string(outcome)?;
        self.audited(
            "UPDATE approvals SET outcome = ?2, ended_ms = ?3 WHERE id = ?1 AND outcome IS NULL",
            params![id.as_str(), o, outcome.at_ms()],
            audit,
        )
    }

    /// Runs one state change and, when it changed a row, appends `audit`: both or neither.
    fn audited(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let r = (|| {
            let tx = conn.transaction()?;
            let changed = tx.execute(sql, args)? == 1;
            if changed {
                insert_audit(&tx, audit)?;
            }
            tx.commit()?;
            Ok(changed)
        })();
        drop(conn);
        self.wrote(r)
    }

    /// Records a sent prompt. One per (approval, target): a second is ignored.
    pub fn insert_prompt(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let r = self.conn().execute(
            "INSERT OR IGNORE INTO prompts (approval_id, channel, chat, message, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.as_str(), prompt.target.channel, prompt.target.chat, prompt.message, at_ms],
        );
        self.wrote(r)?;
        Ok(())
    }

    /// Marks a prompt as showing its approval's outcome.
    pub fn prompt_finished(
        &self,
        id: &ApprovalId,
        prompt: &MessageRef,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let r = self.conn().execute(
            "UPDATE prompts SET finished_ms = ?5 WHERE approval_id = ?1 AND channel = ?2 AND chat = ?3 AND message = ?4",
            params![
                id.as_str(),
                prompt.target.channel,
                prompt.target.chat,
                prompt.message,
                at_ms
            ],
        );
        self.wrote(r)?;
        Ok(())
    }

    /// Everything the engine must pick up after a restart.
    pub fn open_approvals(&self) -> Result<Vec<OpenApproval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, body, outcome FROM approvals a WHERE outcome IS NULL
               OR EXISTS (SELECT 1 FROM prompts p WHERE p.approval_id = a.id AND p.finished_ms IS NULL)
             ORDER BY created_ms, id",
        )?;
        let rows: Vec<(String, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut prompts = conn.prepare(
            "SELECT channel, chat, message, finished_ms IS NOT NULL,
                    (SELECT COUNT(*) FROM prompts q WHERE q.channel = p.channel AND q.chat = p.chat AND q.message = p.message) > 1
               FROM prompts p WHERE approval_id = ?1 ORDER BY channel, chat",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, body, outcome) in rows {
            let approval: Approval = serde_json::from_str(&body)?;
            let outcome = outcome.map(|o| serde_json::from_str(&o)).transpose()?;
            let prompts = prompts
                .query_map([&id], |r| {
                    Ok(StoredPrompt {
                        message: MessageRef {
                            target: Target {
                                channel: r.get(0)?,
                                chat: r.get(1)?,
                            },
                            message: r.get(2)?,
                        },
                        finished: r.get(3)?,
                        digest: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            out.push(OpenApproval {
                approval,
                outcome,
                prompts,
            });
        }
        Ok(out)
    }

    /// The last `per_target` distinct prompt messages recorded in each target, newest first.
    pub fn recent_prompts(&self, per_target: usize) -> Result<Vec<MessageRef>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT channel, chat, message FROM (
                SELECT channel, chat, message,
                       ROW_NUMBER() OVER (PARTITION BY channel, chat ORDER BY MAX(rowid) DESC) AS n
                  FROM prompts GROUP BY channel, chat, message)
              WHERE n <= ?1 ORDER BY channel, chat, n",
        )?;
        let rows = stmt
            .query_map([per_target as i64], |r| {
                Ok(MessageRef {
                    target: Target {
                        channel: r.get(0)?,
                        chat: r.get(1)?,
                    },
                    message: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// How a finished approval ended, if the store knows it.
    pub fn outcome(&self, id: &ApprovalId) -> Result<Option<Outcome>, StoreError> {
        let o: Option<Option<String>> = self
            .conn()
            .query_row(
                "SELECT outcome FROM approvals WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(o.flatten().map(|o| serde_json::from_str(&o)).transpose()?)
    }

    /// Appends one audit record.
    pub fn audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        let res = insert_audit(&self.conn(), r);
        self.wrote(res)
    }

    /// The audit log in order, optionally for one approval.
    pub fn audit_log(&self, approval: Option<&ApprovalId>) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at_ms, approval_id, event, channel, actor, detail FROM audit
             WHERE ?1 IS NULL OR approval_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([approval.map(|a| a.as_str())], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at_ms, approval_id, event, channel, actor, detail) = row?;
            out.push(AuditRecord {
                at_ms,
                approval_id,
                event,
                channel,
                actor,
                detail: serde_json::from_str(&detail)?,
            });
        }
        Ok(out)
    }
}

fn insert_audit(conn: &Connection, r: &AuditRecord) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO audit (at_ms, approval_id, event, channel, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![r.at_ms, r.approval_id, r.event, r.channel, r.actor, r.detail.to_string()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Decider, Decision, Kind};

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

    fn approval(id: &str) -> Approval {
        Approval::from_gateway(
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

    #[test]
    fn reopened_database_still_knows_prompts_until_they_are_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.sqlite");
        {
            let s = Store::open(&path).unwrap();
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
        }
        let s = Store::open(&path).unwrap();
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
    }

    #[test]
    fn recent_prompts_are_the_last_few_messages_of_each_target_newest_first() {
        let s = Store::in_memory().unwrap();
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
        let s = Store::in_memory().unwrap();
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
        s.fill_up();
        let big = AuditRecord {
            detail: serde_json::json!("x".repeat(64 * 1024)),
            ..rec("b", "requested")
        };
        assert!(s.insert_approval(&b, &big).is_err());
        assert!(s.audit_log(Some(&"b".into())).unwrap().is_empty());
        assert!(
            s.open_approvals()
                .unwrap()
                .iter()
                .all(|o| o.approval.id != b.id),
            "no approval row without its audit record"
        );
    }

    #[test]
    fn a_digest_row_finishes_alone() {
        let s = Store::in_memory().unwrap();
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
    fn audit_log_is_append_only() {
        let s = Store::in_memory().unwrap();
        let rec = AuditRecord {
            at_ms: 1,
            approval_id: Some("a".into()),
            event: "refused".into(),
            channel: Some("telegram".into()),
            actor: Some("666".into()),
            detail: serde_json::json!({"reason": "not_allowed"}),
        };
        s.audit(&rec).unwrap();
        assert_eq!(s.audit_log(Some(&"a".into())).unwrap(), vec![rec]);
        let conn = s.conn();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET event = 'x'", []).is_err());
    }
}
