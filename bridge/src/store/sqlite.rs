//! The SQLite store (WAL): the daemon's durable state, one file in `state.dir`. The audit
//! table refuses UPDATE and DELETE (triggers), so the log stays append-only.
//!
//! The schema is versioned in `PRAGMA user_version`: 0 is `SCHEMA` (every database before
//! versioning had exactly these tables), each entry of `MIGRATIONS` moves it one version
//! forward, all in one transaction at open. A database at the latest version is opened
//! without a write; one newer than this build knows is refused.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditRecord, OpenApproval, Store, StoreError, StoredPrompt};
use crate::approval::{Approval, ApprovalId, Outcome, now_ms};
use crate::channel::{MessageRef, Target};
use crate::grant::{Grant, GrantId, Revocation};
use crate::history::HistoryMark;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The last write's error, cleared by the next write that succeeds; `/healthz` reports it.
    fault: Mutex<Option<String>>,
    /// `bridge_state.first_start_ms`, read once at open.
    first_start_ms: i64,
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

/// Version `i + 1` of the schema is version `i` plus `MIGRATIONS[i]`. Append, never edit.
const MIGRATIONS: [&str; 2] = [
    // 1: one row of the bridge's own state: when this database was first opened (a fresh
    // one at its creation, an older one at this upgrade; the row is inserted right after
    // the migrations run), and how far the gateway's approval history has been read.
    "CREATE TABLE bridge_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        first_start_ms  INTEGER NOT NULL,
        history_mark_ms INTEGER,
        history_mark_id TEXT,
        CHECK ((history_mark_ms IS NULL) = (history_mark_id IS NULL))
    );",
    // 2: the owners' time-boxed grants. `body` is the grant as minted (JSON); its use
    // count and revocation are columns, changed with their audit record.
    "CREATE TABLE grants (
        id            TEXT PRIMARY KEY,
        body          TEXT NOT NULL,
        until_ms      INTEGER NOT NULL,
        uses          INTEGER NOT NULL DEFAULT 0,
        revoked_at_ms INTEGER,
        revoked_by    TEXT
    );",
];

/// The schema version this build writes and reads.
const VERSION: i64 = MIGRATIONS.len() as i64;

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
        let mut conn = conn;
        migrate(&mut conn, now_ms())?;
        let first_start_ms =
            conn.query_row("SELECT first_start_ms FROM bridge_state", [], |r| r.get(0))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            fault: Mutex::new(None),
            first_start_ms,
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

    fn history_mark(&self) -> Result<Option<HistoryMark>, StoreError> {
        let (ms, id): (Option<i64>, Option<String>) = self.conn().query_row(
            "SELECT history_mark_ms, history_mark_id FROM bridge_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(ms.zip(id).map(|(resolved_at_ms, id)| HistoryMark {
            resolved_at_ms,
            id: ApprovalId(id),
        }))
    }

    fn set_history_mark(&self, mark: &HistoryMark) -> Result<(), StoreError> {
        // Row values compare left to right, as `HistoryMark`'s order does; ids as BINARY
        // text, byte by byte, like Rust's `str`.
        let r = self.conn().execute(
            "UPDATE bridge_state SET history_mark_ms = ?1, history_mark_id = ?2
              WHERE history_mark_ms IS NULL OR (?1, ?2) > (history_mark_ms, history_mark_id)",
            params![mark.resolved_at_ms, mark.id.as_str()],
        );
        self.wrote(r)?;
        Ok(())
    }

    fn first_start_ms(&self) -> i64 {
        self.first_start_ms
    }

    fn was_prompted(&self, id: &ApprovalId) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM prompts WHERE approval_id = ?1)",
            [id.as_str()],
            |r| r.get(0),
        )?)
    }

    fn insert_grant(&self, g: &Grant, audit: &AuditRecord) -> Result<bool, StoreError> {
        let body = serde_json::to_string(&g.as_minted())?;
        self.audited(
            "INSERT OR IGNORE INTO grants (id, body, until_ms) VALUES (?1, ?2, ?3)",
            params![g.id.as_str(), body, g.until_ms],
            audit,
        )
    }

    fn grant_used(&self, id: &GrantId, audit: &AuditRecord) -> Result<bool, StoreError> {
        self.audited(
            "UPDATE grants SET uses = uses + 1 WHERE id = ?1 AND revoked_at_ms IS NULL",
            [id.as_str()],
            audit,
        )
    }

    fn revoke_grant(
        &self,
        id: &GrantId,
        revocation: &Revocation,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        self.audited(
            "UPDATE grants SET revoked_at_ms = ?2, revoked_by = ?3 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id.as_str(), revocation.at_ms, revocation.by],
            audit,
        )
    }

    fn open_grants(&self, after_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT body, uses FROM grants WHERE revoked_at_ms IS NULL AND until_ms > ?1 ORDER BY rowid",
        )?;
        let rows: Vec<(String, u32)> = stmt
            .query_map([after_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(body, uses)| {
                let g: Grant = serde_json::from_str(&body)?;
                Ok(Grant { uses, ..g })
            })
            .collect()
    }
}

/// Brings the schema to `VERSION` in one transaction; writes nothing when it is there.
fn migrate(conn: &mut Connection, now_ms: i64) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::TooNew {
            found: version,
            known: VERSION,
        });
    }
    if version == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated it meanwhile.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < VERSION {
        tx.execute_batch(SCHEMA)?;
        for sql in &MIGRATIONS[version as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO bridge_state (id, first_start_ms) VALUES (1, ?1)",
            [now_ms],
        )?;
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()?;
    Ok(())
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
    fn a_reopened_database_keeps_its_first_start_and_history_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.sqlite");
        let mark = HistoryMark {
            resolved_at_ms: 42,
            id: "a".into(),
        };
        let first = {
            let s = SqliteStore::open(&path).unwrap();
            s.set_history_mark(&mark).unwrap();
            s.first_start_ms()
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.first_start_ms(), first);
        assert_eq!(s.history_mark().unwrap(), Some(mark));
    }

    #[test]
    fn a_database_from_before_versioning_is_migrated_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.sqlite");
        {
            // What every earlier bridge wrote: `SCHEMA`, user_version 0.
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            let body = serde_json::to_string(&approval("a")).unwrap();
            old.execute(
                "INSERT INTO approvals (id, body, created_ms) VALUES ('a', ?1, 1)",
                [body],
            )
            .unwrap();
            old.execute(
                "INSERT INTO prompts (approval_id, channel, chat, message, sent_ms)
                 VALUES ('a', 'telegram', '1', '10', 5)",
                [],
            )
            .unwrap();
            insert_audit(&old, &rec("a", "requested")).unwrap();
        }
        let before = now_ms();
        let s = SqliteStore::open(&path).unwrap();
        assert!(
            s.first_start_ms() >= before,
            "an upgraded database starts at the upgrade"
        );
        assert_eq!(s.history_mark().unwrap(), None);
        assert!(s.was_prompted(&"a".into()).unwrap());
        assert_eq!(s.open_approvals().unwrap().len(), 1);
        assert_eq!(s.audit_log(None).unwrap(), vec![rec("a", "requested")]);
        let conn = s.conn();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        assert!(
            conn.execute("DELETE FROM audit", []).is_err(),
            "the audit triggers survive the migration"
        );
        assert!(conn.execute("UPDATE audit SET event = 'x'", []).is_err());
    }

    #[test]
    fn a_database_from_a_newer_bridge_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found, known }) if found == VERSION + 1 && known == VERSION
        ));
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
