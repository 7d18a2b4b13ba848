//! The SQLite store (WAL): the daemon's durable state, one file in `state.dir`. The audit
//! table refuses UPDATE and DELETE (triggers), so the log stays append-only.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditRecord, OpenApproval, Store, StoreError, StoredPrompt};
use crate::approval::{Approval, ApprovalId, Outcome};
use crate::channel::{MessageRef, Target};

pub struct SqliteStore {
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable across process crashes (kill -9) in WAL mode; only an OS
        // crash can lose the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            fault: Mutex::new(None),
        })
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
}

impl Store for SqliteStore {
    fn insert_approval(&self, a: &Approval, audit: &AuditRecord) -> Result<bool, StoreError> {
        let body = serde_json::to_string(a)?;
        self.audited(
            "INSERT OR IGNORE INTO approvals (id, body, created_ms) VALUES (?1, ?2, ?3)",
            params![a.id.as_str(), body, a.created_at_ms],
            audit,
        )
    }

    fn set_outcome(
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

    fn insert_prompt(
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

    fn prompt_finished(
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

    fn open_approvals(&self) -> Result<Vec<OpenApproval>, StoreError> {
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

    fn recent_prompts(&self, per_target: usize) -> Result<Vec<MessageRef>, StoreError> {
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

    fn outcome(&self, id: &ApprovalId) -> Result<Option<Outcome>, StoreError> {
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

    fn audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        let res = insert_audit(&self.conn(), r);
        self.wrote(res)
    }

    fn audit_log(&self, approval: Option<&ApprovalId>) -> Result<Vec<AuditRecord>, StoreError> {
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

    fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
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

    crate::store::store_conformance!(
        SqliteStore::in_memory().unwrap(),
        SqliteStore::fill_up,
        SqliteStore::unfill
    );

    #[test]
    fn a_reopened_database_still_knows_its_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.sqlite");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.insert_approval(&approval("a"), &rec("a", "requested"))
                .unwrap();
            s.insert_prompt(&"a".into(), &prompt("1", "10"), 5).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let open = s.open_approvals().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].approval, approval("a"));
        assert_eq!(
            open[0].prompts,
            vec![StoredPrompt {
                message: prompt("1", "10"),
                finished: false,
                digest: false
            }]
        );
        assert_eq!(s.audit_log(None).unwrap(), vec![rec("a", "requested")]);
    }

    #[test]
    fn audit_log_is_append_only() {
        let s = SqliteStore::in_memory().unwrap();
        s.audit(&rec("a", "refused")).unwrap();
        let conn = s.conn();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET event = 'x'", []).is_err());
    }
}
