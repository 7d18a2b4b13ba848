//! Prompts as Block Kit: a header section, the command in a code block, context lines,
//! and (while pending) one button per offered decision.
//!
//! All request text is untrusted. In Slack's `mrkdwn`, `&`, `<` and `>` are the only
//! control characters that must be escaped: with them escaped, no `<!channel>`,
//! `<@U…>`, `<#C…>` or `<url|label>` can come from request text. Backticks could close
//! the code block (or an inline code span) early and let the rest be read as markup, so
//! each backtick is fenced by zero-width spaces (U+200B): it still shows as a backtick,
//! but never forms a fence. Text is cut between characters before escaping, never inside
//! an escape, within Slack's per-object limits (3000 characters per section text, 2000
//! per context element), with an ellipsis and a note of how much was shown.

use bridge::approval::{Approval, Choice, Decision, Kind, Outcome};
use bridge::grant::GrantId;
use serde_json::{Value, json};

use super::codec;
use crate::common::render::{decision_words, expires, icon, kind_title, revoke_buttons, utc};

/// Slack's limit on a section's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit on one context element's text.
pub const MAX_CONTEXT_CHARS: usize = 2000;
/// The most a message's top-level `text` should hold (Slack truncates past 40,000
/// characters and advises at most 4,000).
pub const MAX_TEXT_CHARS: usize = 4000;
/// Zero-width space, fencing backticks.
pub const ZWSP: char = '\u{200B}';

/// What closes the message.
#[derive(Debug, Clone, Copy)]
pub enum Footer<'a> {
    /// Still pending, rendered at `now_ms`: the time left, buttons and the `/approve`
    /// fallback line.
    Pending { now_ms: i64 },
    /// Finished: the outcome (and its time), no time left, no buttons.
    Finished(&'a Outcome),
}

/// A rendered message: `text` is the notification fallback, `blocks` what is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub blocks: Value,
    /// Set when the command was cut.
    pub cut: bool,
}

/// Escapes untrusted text for `mrkdwn` (also for plain `text` fields, which Slack parses
/// the same way).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '`' => {
            out.push(ZWSP);
            out.push('`');
            out.push(ZWSP);
        }
        c => out.push(c),
    }
}

fn escaped_len(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        '`' => 3,
        _ => 1,
    }
}

/// The longest escaped prefix of `s` within `budget` characters, and how many source
/// characters it holds.
fn escape_prefix(s: &str, budget: usize) -> (String, usize) {
    let mut out = String::new();
    let (mut used, mut n) = (0, 0);
    for c in s.chars() {
        let l = escaped_len(c);
        if used + l > budget {
            break;
        }
        used += l;
        n += 1;
        push_escaped(&mut out, c);
    }
    (out, n)
}

/// Escapes `s` within `max` characters; a cut ends with `…`.
pub fn escape_capped(s: &str, max: usize) -> String {
    let total: usize = s.chars().map(escaped_len).sum();
    if total <= max {
        return escape(s);
    }
    escape_prefix(s, max.saturating_sub(1)).0 + "…"
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": mrkdwn(text)})
}

/// Blocks for a plain `text` with a red Revoke button per grant under it; `None` when
/// there are no grants (the message is its `text` alone).
pub fn with_revoke_buttons<'a>(
    text: &str,
    grants: impl IntoIterator<Item = &'a GrantId>,
) -> Option<Value> {
    let buttons: Vec<Value> = revoke_buttons(grants)
        .into_iter()
        .map(|(label, data)| {
            json!({
                "type": "button",
                "text": {"type": "plain_text", "text": label, "emoji": false},
                "action_id": data,
                "value": data,
                "style": "danger",
            })
        })
        .collect();
    (!buttons.is_empty()).then(|| {
        json!([
            section(escape_capped(text, MAX_SECTION_CHARS)),
            {"type": "actions", "block_id": "grant_actions", "elements": buttons},
        ])
    })
}

/// Renders an approval prompt (or its finished form).
pub fn render(a: &Approval, footer: Footer<'_>) -> Rendered {
    let mut blocks = Vec::new();
    let (emoji, what) = kind_title(a.kind);
    let mut head = format!("{emoji} *{what}*");
    if let Some(sev) = &a.severity {
        head.push_str(&format!(" · severity `{}`", escape_capped(sev, 40)));
    }
    if a.cron {
        head.push_str(" · ⏰ *cron run*");
    }
    blocks.push(section(head));

    let mut cut = false;
    match a.kind {
        Kind::Exec => {
            let total: usize = a.command.chars().map(escaped_len).sum();
            let budget = MAX_SECTION_CHARS - 6; // the two fences
            let body = if total <= budget {
                escape(&a.command)
            } else {
                cut = true;
                let n = a.command.chars().count();
                let note = format!("\n✂️ cut: the command has {n} characters");
                let (prefix, _) = escape_prefix(&a.command, budget - note.chars().count() - 1);
                format!("{prefix}…{note}")
            };
            blocks.push(section(format!("```{body}```")));
        }
        Kind::Plugin | Kind::System => {
            let mut t = format!("*{}*", escape_capped(&a.command, 300));
            if let Some(d) = &a.description {
                t.push('\n');
                t.push_str(&escape_capped(d, 2000));
            }
            blocks.push(section(t));
        }
    }

    let mut context = Vec::new();
    let mut field = |name: &str, v: &Option<String>, cap: usize| {
        if let Some(v) = v {
            context.push(mrkdwn(format!("*{name}* `{}`", escape_capped(v, cap))));
        }
    };
    field("cwd", &a.cwd, 300);
    field("agent", &a.agent_id, 100);
    field("host", &a.host, 100);
    field("node", &a.node_id, 100);
    field("session", &a.session_key, 150);
    if !a.warnings.is_empty() {
        let w: Vec<String> = a
            .warnings
            .iter()
            .map(|w| format!("⚠️ {}", escape_capped(w, 300)))
            .collect();
        let mut joined = w.join("\n");
        if joined.chars().count() > MAX_CONTEXT_CHARS {
            joined = joined
                .chars()
                .take(MAX_CONTEXT_CHARS - 40)
                .collect::<String>();
            // Never leave a partial escape at the cut.
            if let Some(amp) = joined.rfind('&')
                && !joined[amp..].contains(';')
            {
                joined.truncate(amp);
            }
            joined.push_str("\n⚠️ … more warnings");
        }
        context.push(mrkdwn(joined));
    }
    if !a.risk_kinds.is_empty() {
        context.push(mrkdwn(format!(
            "*risk* {}",
            escape_capped(&a.risk_kinds.join(", "), 300)
        )));
    }
    if let (Some(exp), Footer::Pending { now_ms }) = (a.expires_at_ms, footer) {
        context.push(mrkdwn(format!(
            "*expires* {}",
            expires(a.created_at_ms, exp, now_ms)
        )));
    }
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": context}));
    }

    let id = escape_capped(a.id.as_str(), 130);
    match footer {
        Footer::Pending { .. } => {
            let buttons: Vec<Value> = a
                .choices()
                .into_iter()
                .filter_map(|c| {
                    let data = codec::encode(a.kind, &a.id, c).ok()?;
                    let mut b = json!({
                        "type": "button",
                        "text": {"type": "plain_text", "text": c.label(), "emoji": false},
                        "action_id": data,
                        "value": data,
                    });
                    match c {
                        Choice::Decide(Decision::AllowOnce) => b["style"] = json!("primary"),
                        Choice::Decide(Decision::Deny) => b["style"] = json!("danger"),
                        Choice::Decide(Decision::AllowAlways) | Choice::AllowFor(_) => {}
                    }
                    Some(b)
                })
                .collect();
            if !buttons.is_empty() {
                blocks.push(
                    json!({"type": "actions", "block_id": "approval_actions", "elements": buttons}),
                );
            }
            blocks.push(json!({"type": "context", "elements": [mrkdwn(format!("Or send `/approve {id} {}`", decision_words(a)))]}));
        }
        Footer::Finished(o) => {
            blocks.push(section(format!(
                "{} *{}* · {}",
                icon(o),
                escape_capped(&o.summary(), 400),
                utc(o.at_ms())
            )));
            blocks.push(json!({"type": "context", "elements": [mrkdwn(format!("*id* `{id}`"))]}));
        }
    }

    let text = match footer {
        Footer::Pending { .. } => format!("{what}: {}", escape_capped(&a.command, 200)),
        Footer::Finished(o) => format!("{what}: {}", escape_capped(&o.summary(), 200)),
    };
    Rendered {
        text,
        blocks: Value::Array(blocks),
        cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{ApprovalId, Decider, Responder};

    const UUID: &str = "0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11";
    /// Rendered the moment the request was made: 2 minutes before it expires.
    const PENDING: Footer<'static> = Footer::Pending {
        now_ms: 1_795_000_000_000,
    };

    fn exec(command: &str) -> Approval {
        Approval {
            id: ApprovalId::from(UUID),
            kind: Kind::Exec,
            command: command.to_owned(),
            cwd: Some("/srv/app".into()),
            host: Some("gateway".into()),
            node_id: None,
            agent_id: Some("main".into()),
            session_key: None,
            description: None,
            severity: None,
            warnings: vec!["deletes <files>".into()],
            risk_kinds: vec!["destructive".into()],
            cron: false,
            allowed_decisions: vec![Decision::AllowOnce, Decision::Deny],
            windows: Vec::new(),
            created_at_ms: 1_795_000_000_000,
            expires_at_ms: Some(1_795_000_120_000),
        }
    }

    /// Snapshot helper: the blocks as compact JSON lines.
    #[track_caller]
    fn check(r: &Rendered, expect: &str) {
        let got: Vec<String> = r
            .blocks
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect();
        let got = got.join("\n");
        assert_eq!(got, expect.trim(), "\n--- got ---\n{got}\n");
    }

    #[test]
    fn escape_neutralises_mentions_links_and_fences() {
        assert_eq!(
            escape("<!channel> <@U123> <https://x|y> a&b"),
            "&lt;!channel&gt; &lt;@U123&gt; &lt;https://x|y&gt; a&amp;b"
        );
        assert_eq!(
            escape("```x```"),
            "\u{200B}`\u{200B}\u{200B}`\u{200B}\u{200B}`\u{200B}x\u{200B}`\u{200B}\u{200B}`\u{200B}\u{200B}`\u{200B}"
        );
        assert!(!escape("a``` *b* ```").contains("``"));
    }

    #[test]
    fn pending_exec_prompt() {
        check(
            &render(&exec("rm -rf /tmp/x && echo <b>"), PENDING),
            r#"
{"text":{"text":"🔐 *Exec approval*","type":"mrkdwn","verbatim":true},"type":"section"}
{"text":{"text":"```rm -rf /tmp/x &amp;&amp; echo &lt;b&gt;```","type":"mrkdwn","verbatim":true},"type":"section"}
{"elements":[{"text":"*cwd* `/srv/app`","type":"mrkdwn","verbatim":true},{"text":"*agent* `main`","type":"mrkdwn","verbatim":true},{"text":"*host* `gateway`","type":"mrkdwn","verbatim":true},{"text":"⚠️ deletes &lt;files&gt;","type":"mrkdwn","verbatim":true},{"text":"*risk* destructive","type":"mrkdwn","verbatim":true},{"text":"*expires* in 2 min (11:08 UTC)","type":"mrkdwn","verbatim":true}],"type":"context"}
{"block_id":"approval_actions","elements":[{"action_id":"exec_approve:0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11:allow-once","style":"primary","text":{"emoji":false,"text":"Allow once","type":"plain_text"},"type":"button","value":"exec_approve:0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11:allow-once"},{"action_id":"exec_approve:0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11:deny","style":"danger","text":{"emoji":false,"text":"Deny","type":"plain_text"},"type":"button","value":"exec_approve:0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11:deny"}],"type":"actions"}
{"elements":[{"text":"Or send `/approve 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|deny`","type":"mrkdwn","verbatim":true}],"type":"context"}
"#,
        );
    }

    #[test]
    fn finished_prompt_has_no_buttons_and_shows_the_outcome() {
        let o = Outcome::Decided {
            decision: Decision::Deny,
            by: Decider::Responder(Responder {
                channel: "slack".into(),
                user_id: "U0123ABCD".into(),
                display: Some("<@U999>".into()),
            }),
            at_ms: 1_795_000_005_000,
        };
        let mut a = exec("ls");
        a.warnings.clear();
        a.risk_kinds.clear();
        // The time left is gone with the buttons.
        a.cwd = None;
        a.host = None;
        a.agent_id = None;
        let r = render(&a, Footer::Finished(&o));
        check(
            &r,
            r#"
{"text":{"text":"🔐 *Exec approval*","type":"mrkdwn","verbatim":true},"type":"section"}
{"text":{"text":"```ls```","type":"mrkdwn","verbatim":true},"type":"section"}
{"text":{"text":"⛔ *Denied by &lt;@U999&gt; (U0123ABCD) via slack* · 2026-11-18 11:06:45 UTC","type":"mrkdwn","verbatim":true},"type":"section"}
{"elements":[{"text":"*id* `0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11`","type":"mrkdwn","verbatim":true}],"type":"context"}
"#,
        );
        assert_eq!(
            r.text,
            "Exec approval: Denied by &lt;@U999&gt; (U0123ABCD) via slack"
        );
    }

    #[test]
    fn long_hostile_command_is_cut_within_the_section_limit_never_mid_escape() {
        let command = "<&>`".repeat(2000);
        let r = render(&exec(&command), PENDING);
        assert!(r.cut);
        let t = r.blocks[1]["text"]["text"].as_str().unwrap();
        assert!(
            t.chars().count() <= MAX_SECTION_CHARS,
            "{}",
            t.chars().count()
        );
        assert!(t.ends_with("\n✂️ cut: the command has 8000 characters```"));
        let before = t.split('…').next().unwrap();
        let amp = before.rfind('&').unwrap();
        assert!(before[amp..].contains(';'), "dangling escape");
        assert!(!t.contains("<") && !t[3..t.len() - 3].contains("``"));
    }

    #[test]
    fn many_warnings_fit_one_context_element() {
        let mut a = exec("x");
        a.warnings = (0..50)
            .map(|i| format!("{i} {}", "&".repeat(100)))
            .collect();
        let r = render(&a, PENDING);
        for b in r.blocks.as_array().unwrap() {
            for e in b["elements"].as_array().into_iter().flatten() {
                if let Some(t) = e["text"].as_str() {
                    assert!(t.chars().count() <= MAX_CONTEXT_CHARS);
                }
            }
        }
    }
}
