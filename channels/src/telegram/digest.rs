//! Digests: once several approvals wait for one chat, they share one message with a
//! numbered row and a row of buttons per approval, so a burst is actionable after one
//! send instead of one per second. Only approvals a row shows in full may join one.

use bridge::approval::{Approval, Kind};
use bridge::channel::DigestRow;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};

use super::codec::{self, CodecError};
use super::render::{MAX_MESSAGE_UTF16, escape, escape_capped, utf16_len, visible_len};
use crate::common::render::{expires, icon};

/// Most rows per digest: three buttons a row stays within Telegram's 100 per keyboard.
pub const MAX_ROWS: usize = 25;
/// Longest command a row shows, in UTF-16 units after escaping; longer ones get a prompt.
const MAX_COMMAND_UNITS: usize = 160;
/// Longest cwd, agent or host a row shows.
const MAX_CONTEXT_UNITS: usize = 80;
/// Room kept per row for its outcome line (newline, icon, space, summary), so rewrites
/// never outgrow the message.
const OUTCOME_UNITS: usize = 64;
const HEAD_UNITS: usize = 80;
/// Room kept per pending row for its time left to grow as it counts down and the digest
/// is edited (`in 2 h` becomes `in 1 h 59 min`, `in 3 min` becomes `in 1 min 59 s`).
const COUNTDOWN_UNITS: usize = 12;
const FOOTER: &str = "\n\nEach button names its row. /pending lists the ids for /approve.";

/// Whether a digest row can show `a` in full: a one-line exec command with no warnings,
/// risk notes or description (those get a prompt of their own).
pub fn fits(a: &Approval) -> bool {
    let short = |s: &str, max: usize| !s.contains('\n') && utf16_len(&escape(s)) <= max;
    a.kind == Kind::Exec
        && a.warnings.is_empty()
        && a.risk_kinds.is_empty()
        && a.description.is_none()
        && a.severity.is_none()
        && short(&a.command, MAX_COMMAND_UNITS)
        && [&a.cwd, &a.agent_id, &a.host]
            .iter()
            .all(|f| f.as_deref().is_none_or(|v| short(v, MAX_CONTEXT_UNITS)))
}

/// How many of `approvals`, first first, one digest sent at `now_ms` carries: the leading
/// run that fits rows, within the row limit and the message length (the text Telegram
/// shows) with room for every row's outcome in place of its context, and for its time
/// left to lengthen in later edits.
pub fn take(approvals: &[Approval], now_ms: i64) -> usize {
    let mut used = HEAD_UNITS + visible_len(FOOTER);
    let mut n = 0;
    for a in approvals.iter().take(MAX_ROWS) {
        if !fits(a) {
            break;
        }
        let context = visible_len(&context(a, now_ms)) + COUNTDOWN_UNITS;
        let row = visible_len(&head(n, a)) + context.max(OUTCOME_UNITS);
        if used + row > MAX_MESSAGE_UTF16 {
            break;
        }
        used += row;
        n += 1;
    }
    n
}

/// A row's first line: number and command.
fn head(i: usize, a: &Approval) -> String {
    format!("\n\n<b>{}.</b> <code>{}</code>", i + 1, escape(&a.command))
}

/// A pending row's second line at `now_ms` (empty when there is nothing to say): agent,
/// cwd, host, cron, time left. Once the row ends, its outcome takes this line's place.
fn context(a: &Approval, now_ms: i64) -> String {
    let mut context: Vec<String> = [("agent", &a.agent_id), ("cwd", &a.cwd), ("host", &a.host)]
        .into_iter()
        .filter_map(|(name, v)| {
            v.as_deref()
                .map(|v| format!("{name} <code>{}</code>", escape(v)))
        })
        .collect();
    if a.cron {
        context.push("⏰ cron run".into());
    }
    if let Some(exp) = a.expires_at_ms {
        context.push(format!("expires {}", expires(a.created_at_ms, exp, now_ms)));
    }
    if context.is_empty() {
        String::new()
    } else {
        format!("\n{}", context.join(" · "))
    }
}

/// The digest's HTML at `now_ms`: a count, then every row, each with its time left while
/// pending and its outcome once ended.
pub fn render(rows: &[DigestRow], now_ms: i64) -> String {
    let pending = rows.iter().filter(|r| r.outcome.is_none()).count();
    let mut html = if pending > 0 {
        format!(
            "🔐 <b>{pending} of {} exec approvals pending</b>",
            rows.len()
        )
    } else {
        format!("🔐 <b>{} exec approvals</b> · all ended", rows.len())
    };
    for (i, r) in rows.iter().enumerate() {
        html.push_str(&head(i, &r.approval));
        match &r.outcome {
            Some(o) => html.push_str(&format!(
                "\n{} <b>{}</b>",
                icon(o),
                escape_capped(&o.summary(), OUTCOME_UNITS - 4)
            )),
            None => html.push_str(&context(&r.approval, now_ms)),
        }
    }
    if pending > 0 {
        html.push_str(FOOTER);
    }
    html
}

/// One keyboard row per pending approval; each button shows its decision and row number.
pub fn keyboard(rows: &[DigestRow]) -> Result<InlineKeyboardMarkup, CodecError> {
    let mut keyboard = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if r.outcome.is_some() {
            continue;
        }
        let a = &r.approval;
        let buttons = a
            .choices()
            .into_iter()
            .map(|c| {
                Ok(InlineKeyboardButton::callback(
                    format!("{} {}", c.emoji(), i + 1),
                    codec::encode(a.kind, &a.id, c)?,
                ))
            })
            .collect::<Result<Vec<_>, CodecError>>()?;
        keyboard.push(buttons);
    }
    Ok(InlineKeyboardMarkup::new(keyboard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::Decision;
    use bridge::approval::{ApprovalId, Decider, Outcome, Responder};

    /// When the tests render: the requests' creation, 11:06:40 UTC.
    const NOW: i64 = 1_795_000_000_000;

    fn exec(i: usize, command: &str) -> Approval {
        Approval {
            id: ApprovalId(format!("0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e{i:02}")),
            kind: Kind::Exec,
            command: command.to_owned(),
            cwd: Some("/srv/app".into()),
            host: None,
            node_id: None,
            agent_id: Some("main".into()),
            session_key: None,
            description: None,
            severity: None,
            warnings: vec![],
            risk_kinds: vec![],
            cron: false,
            allowed_decisions: Decision::ALL.to_vec(),
            windows: Vec::new(),
            created_at_ms: 1_795_000_000_000,
            expires_at_ms: None,
        }
    }

    fn pending(a: Approval) -> DigestRow {
        DigestRow {
            approval: a,
            outcome: None,
        }
    }

    #[test]
    fn rows_show_commands_escaped_and_buttons_name_their_row() {
        let rows = vec![
            pending(exec(1, "echo <b>hi</b> & bye")),
            DigestRow {
                approval: exec(2, "ls"),
                outcome: Some(Outcome::Decided {
                    decision: Decision::Deny,
                    by: Decider::Responder(Responder {
                        channel: "telegram".into(),
                        user_id: "42".into(),
                        display: Some("<owner>".into()),
                    }),
                    at_ms: 1,
                }),
            },
            pending(Approval {
                expires_at_ms: Some(NOW + 12 * 60_000),
                ..exec(3, "pwd")
            }),
        ];
        let html = render(&rows, NOW);
        assert!(html.starts_with("🔐 <b>2 of 3 exec approvals pending</b>"));
        assert!(html.contains("<b>1.</b> <code>echo &lt;b&gt;hi&lt;/b&gt; &amp; bye</code>"));
        assert!(html.contains("agent <code>main</code> · cwd <code>/srv/app</code>"));
        assert!(html.contains("⛔ <b>Denied by &lt;owner&gt;"), "{html}");
        assert!(
            html.contains(
                "<b>3.</b> <code>pwd</code>\nagent <code>main</code> · cwd <code>/srv/app</code> · expires in 12 min (11:18 UTC)\n"
            ),
            "{html}"
        );
        let kb = keyboard(&rows).unwrap().inline_keyboard;
        assert_eq!(kb.len(), 2, "no buttons for the ended row");
        let labels: Vec<&str> = kb[1].iter().map(|b| b.text.as_str()).collect();
        assert_eq!(labels, ["✅ 3", "♾️ 3", "❌ 3"]);
    }

    #[test]
    fn only_short_plain_commands_join_and_the_message_stays_within_limits() {
        let long = "x".repeat(MAX_COMMAND_UNITS + 1);
        let mut warned = exec(9, "rm -rf /");
        warned.warnings.push("deletes files".into());
        assert!(!fits(&exec(1, &long)));
        assert!(!fits(&exec(1, "echo a\necho b")));
        assert!(!fits(&warned));
        assert!(fits(&exec(1, "echo ok")));

        let burst: Vec<Approval> = (0..60).map(|i| exec(i, &"y".repeat(150))).collect();
        let n = take(&burst, NOW);
        assert!((2..=MAX_ROWS).contains(&n), "{n}");
        // Every row ended with the longest outcome line still fits.
        let ended: Vec<DigestRow> = burst[..n]
            .iter()
            .map(|a| DigestRow {
                approval: a.clone(),
                outcome: Some(Outcome::Decided {
                    decision: Decision::AllowAlways,
                    by: Decider::Responder(Responder {
                        channel: "telegram".into(),
                        user_id: "4".repeat(20),
                        display: Some("&".repeat(200)),
                    }),
                    at_ms: 1,
                }),
            })
            .collect();
        assert!(visible_len(&render(&ended, NOW)) <= MAX_MESSAGE_UTF16);

        // A burst of ordinary commands fills a whole digest.
        let typical: Vec<Approval> = (0..30)
            .map(|i| Approval {
                host: Some("gateway".into()),
                expires_at_ms: Some(1_795_000_300_000),
                ..exec(i, &format!("echo bench-burst-1a2b3c4d-{i}-end"))
            })
            .collect();
        assert_eq!(take(&typical, NOW), MAX_ROWS);

        let mut mixed = vec![exec(1, "a"), exec(2, "b"), warned, exec(4, "c")];
        assert_eq!(
            take(&mixed, NOW),
            2,
            "a digest stops before a row that does not fit"
        );
        mixed.rotate_left(2);
        assert_eq!(take(&mixed, NOW), 0);
    }

    #[test]
    fn rows_keep_room_for_their_time_left_to_lengthen() {
        // The longest rows a digest takes, sent a day before they expire ("in 1 d") and
        // edited a minute later ("in 23 h 59 min"): the edit still fits.
        let exp = NOW + 86_400_000;
        let longest: Vec<Approval> = (0..MAX_ROWS)
            .map(|i| Approval {
                cwd: Some("c".repeat(MAX_CONTEXT_UNITS)),
                agent_id: Some("a".repeat(MAX_CONTEXT_UNITS)),
                host: Some("h".repeat(MAX_CONTEXT_UNITS)),
                cron: true,
                expires_at_ms: Some(exp),
                ..exec(i, &"y".repeat(MAX_COMMAND_UNITS))
            })
            .collect();
        let n = take(&longest, exp - 86_400_000);
        assert!(n >= 2, "{n}");
        let rows: Vec<DigestRow> = longest[..n].iter().cloned().map(pending).collect();
        let sent = render(&rows, exp - 86_400_000);
        let edited = render(&rows, exp - 86_340_000);
        assert!(
            sent.contains("expires in 1 d (2026-11-19 11:06:40 UTC)"),
            "{sent}"
        );
        assert!(edited.contains("expires in 23 h 59 min (2026-11-19 11:06:40 UTC)"));
        assert!(visible_len(&edited) <= MAX_MESSAGE_UTF16);
    }
}
