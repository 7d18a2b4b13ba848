//! Prompt rendering in Telegram's HTML parse mode.
//!
//! Every piece of request text is escaped (`&`, `<`, `>`; no untrusted text ever lands in
//! an attribute, so quotes need nothing), so a command cannot forge markup, links or
//! mentions. Telegram allows 4096 UTF-16 units of text per message, counted after entity
//! parsing; we bound the HTML source itself, which is never shorter than the text it
//! shows, so the budget holds whatever the command contains. Cuts happen between
//! characters of the unescaped text, before escaping: never inside an escape sequence,
//! a UTF-8 sequence or a UTF-16 surrogate pair.

use bridge::approval::{Approval, Kind, Outcome};

use crate::common::render::{decision_words, expires, icon, kind_title, utc};

/// Telegram's limit on a message's text, in UTF-16 code units.
pub const MAX_MESSAGE_UTF16: usize = 4096;

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub html: String,
    /// Set when the command (or title) was cut: the full text must be sent separately.
    pub cut: bool,
}

/// What closes the message.
#[derive(Debug, Clone, Copy)]
pub enum Footer<'a> {
    /// Still pending, rendered at `now_ms`: the time left, then the `/approve` fallback line.
    Pending { now_ms: i64 },
    /// Finished: the outcome line (and its time), no time left, no fallback.
    Finished(&'a Outcome),
}

/// HTML-escapes untrusted text for Telegram.
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
        c => out.push(c),
    }
}

fn escaped_units(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        c => c.len_utf16(),
    }
}

/// Length as Telegram counts it.
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// UTF-16 units of the text Telegram shows for `html` we built, which is what its limit
/// counts: tags count nothing and an escape (`&lt;`) one character. Only for our own HTML,
/// where every `<` opens a tag and every `&` an escape.
pub fn visible_len(html: &str) -> usize {
    let mut units = 0;
    let mut chars = html.chars();
    while let Some(c) = chars.next() {
        match c {
            '<' => chars.by_ref().take_while(|c| *c != '>').for_each(drop),
            '&' => {
                chars.by_ref().take_while(|c| *c != ';').for_each(drop);
                units += 1;
            }
            c => units += c.len_utf16(),
        }
    }
    units
}

/// Escapes `s`, keeping the result within `max_units` UTF-16 units (an ellipsis marks a cut).
pub(crate) fn escape_capped(s: &str, max_units: usize) -> String {
    let total: usize = s.chars().map(escaped_units).sum();
    if total <= max_units {
        return escape(s);
    }
    let (head, _) = escape_prefix(s, max_units.saturating_sub(1));
    head + "…"
}

/// The longest escaped prefix of `s` within `budget` units, and how many chars it holds.
fn escape_prefix(s: &str, budget: usize) -> (String, usize) {
    let mut out = String::new();
    let mut used = 0;
    let mut n = 0;
    for c in s.chars() {
        let u = escaped_units(c);
        if used + u > budget {
            break;
        }
        used += u;
        n += 1;
        push_escaped(&mut out, c);
    }
    (out, n)
}

/// Renders an approval prompt (or its finished form).
pub fn render(a: &Approval, footer: Footer<'_>) -> Rendered {
    let (emoji, name) = kind_title(a.kind);
    let mut head = format!("{emoji} <b>{name}</b>");
    if let Some(sev) = &a.severity {
        head.push_str(&format!(" · severity <b>{}</b>", escape_capped(sev, 40)));
    }
    if a.cron {
        head.push_str(" · ⏰ <b>cron run</b>");
    }
    head.push('\n');
    let (open, close) = match a.kind {
        Kind::Exec => ("<pre><code>", "</code></pre>"),
        Kind::Plugin | Kind::System => ("<b>", "</b>"),
    };

    let mut tail = String::new();
    if let Some(d) = &a.description {
        tail.push_str(&format!("\n{}", escape_capped(d, 600)));
    }
    let field = |tail: &mut String, name: &str, v: &Option<String>, cap: usize| {
        if let Some(v) = v {
            tail.push_str(&format!(
                "\n<b>{name}</b> <code>{}</code>",
                escape_capped(v, cap)
            ));
        }
    };
    field(&mut tail, "cwd", &a.cwd, 300);
    field(&mut tail, "agent", &a.agent_id, 100);
    field(&mut tail, "host", &a.host, 100);
    field(&mut tail, "node", &a.node_id, 100);
    field(&mut tail, "session", &a.session_key, 150);
    let mut warn_budget = 900usize;
    for (i, w) in a.warnings.iter().enumerate() {
        let line = format!("\n⚠️ {}", escape_capped(w, 300.min(warn_budget)));
        if warn_budget < 40 {
            tail.push_str(&format!(
                "\n⚠️ … and {} more warnings",
                a.warnings.len() - i
            ));
            break;
        }
        warn_budget = warn_budget.saturating_sub(utf16_len(&line));
        tail.push_str(&line);
    }
    if !a.risk_kinds.is_empty() {
        tail.push_str(&format!(
            "\n<b>risk</b> {}",
            escape_capped(&a.risk_kinds.join(", "), 300)
        ));
    }
    let id = escape_capped(a.id.as_str(), 80);
    match footer {
        Footer::Pending { now_ms } => {
            if let Some(exp) = a.expires_at_ms {
                tail.push_str(&format!(
                    "\n<b>expires</b> {}",
                    expires(a.created_at_ms, exp, now_ms)
                ));
            }
            tail.push_str(&format!(
                "\n\nOr send <code>/approve {id} {}</code>",
                decision_words(a)
            ));
        }
        Footer::Finished(o) => {
            tail.push_str(&format!("\n<b>id</b> <code>{id}</code>"));
            tail.push_str(&format!(
                "\n\n{} <b>{}</b> · {}",
                icon(o),
                escape_capped(&o.summary(), 400),
                utc(o.at_ms())
            ));
        }
    }

    let fixed = utf16_len(&head) + utf16_len(open) + utf16_len(close) + utf16_len(&tail);
    let full_units: usize = a.command.chars().map(escaped_units).sum();
    let (body, cut) = if fixed + full_units <= MAX_MESSAGE_UTF16 {
        (escape(&a.command), false)
    } else {
        let total = a.command.chars().count();
        // The marker's digits are bounded by `total`'s, so size it with `total` twice.
        let marker_for = |shown: usize| {
            format!(
                "\n<i>✂️ Cut: showing {shown} of {total} characters; the full text follows as command.txt.</i>"
            )
        };
        let budget = MAX_MESSAGE_UTF16.saturating_sub(fixed + utf16_len(&marker_for(total)) + 1);
        let (prefix, shown) = escape_prefix(&a.command, budget);
        (format!("{prefix}…{close}{}", marker_for(shown)), true)
    };
    let html = if cut {
        // `body` already carries the closing tag before the marker.
        format!("{head}{open}{body}{tail}")
    } else {
        format!("{head}{open}{body}{close}{tail}")
    };
    debug_assert!(utf16_len(&html) <= MAX_MESSAGE_UTF16);
    Rendered { html, cut }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::{ApprovalId, Decider, Decision, Responder};

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
            session_key: Some("agent:main:main".into()),
            description: None,
            severity: None,
            warnings: vec!["deletes files".into()],
            risk_kinds: vec!["destructive".into(), "network".into()],
            cron: false,
            allowed_decisions: vec![Decision::AllowOnce, Decision::Deny],
            windows: Vec::new(),
            created_at_ms: 1_795_000_000_000,
            expires_at_ms: Some(1_795_000_120_000),
        }
    }

    /// Snapshot helper: the rendered HTML must equal `expect` exactly.
    #[track_caller]
    fn check(a: &Approval, footer: Footer<'_>, expect: &str) {
        let r = render(a, footer);
        assert_eq!(r.html, expect, "\n--- got ---\n{}\n", r.html);
    }

    #[test]
    fn visible_length_counts_what_telegram_shows() {
        assert_eq!(visible_len("<b>1.</b> <code>a &lt;b&gt; &amp;</code>"), 10);
        assert_eq!(visible_len("🔐 ♾️"), 5, "UTF-16 units, not chars");
        let html = escape("<i>&amp;</i>");
        assert_eq!(visible_len(&html), 12);
    }

    #[test]
    fn pending_exec_prompt() {
        check(
            &exec("rm -rf /tmp/x && echo done"),
            PENDING,
            "🔐 <b>Exec approval</b>
<pre><code>rm -rf /tmp/x &amp;&amp; echo done</code></pre>
<b>cwd</b> <code>/srv/app</code>
<b>agent</b> <code>main</code>
<b>host</b> <code>gateway</code>
<b>session</b> <code>agent:main:main</code>
⚠️ deletes files
<b>risk</b> destructive, network
<b>expires</b> in 2 min (11:08 UTC)

Or send <code>/approve 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|deny</code>",
        );
    }

    #[test]
    fn finished_prompt_keeps_the_request_and_shows_the_outcome_for_the_time_left() {
        let o = Outcome::Decided {
            decision: Decision::AllowOnce,
            by: Decider::Responder(Responder {
                channel: "telegram".into(),
                user_id: "42".into(),
                display: Some("<Ann & co>".into()),
            }),
            at_ms: 1_795_000_005_000,
        };
        let mut a = exec("ls");
        a.cron = true;
        a.warnings.clear();
        a.risk_kinds.clear();
        check(
            &a,
            Footer::Finished(&o),
            "🔐 <b>Exec approval</b> · ⏰ <b>cron run</b>
<pre><code>ls</code></pre>
<b>cwd</b> <code>/srv/app</code>
<b>agent</b> <code>main</code>
<b>host</b> <code>gateway</code>
<b>session</b> <code>agent:main:main</code>
<b>id</b> <code>0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11</code>

✅ <b>Allowed once by &lt;Ann &amp; co&gt; (42) via telegram</b> · 2026-11-18 11:06:45 UTC",
        );
        check(
            &a,
            Footer::Finished(&Outcome::Expired {
                at_ms: 1_795_000_120_000,
            }),
            "🔐 <b>Exec approval</b> · ⏰ <b>cron run</b>
<pre><code>ls</code></pre>
<b>cwd</b> <code>/srv/app</code>
<b>agent</b> <code>main</code>
<b>host</b> <code>gateway</code>
<b>session</b> <code>agent:main:main</code>
<b>id</b> <code>0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11</code>

⌛ <b>Expired without a decision</b> · 2026-11-18 11:08:40 UTC",
        );
        check(
            &a,
            Footer::Finished(&Outcome::NoRoute {
                at_ms: 1_795_000_005_000,
            }),
            "🔐 <b>Exec approval</b> · ⏰ <b>cron run</b>
<pre><code>ls</code></pre>
<b>cwd</b> <code>/srv/app</code>
<b>agent</b> <code>main</code>
<b>host</b> <code>gateway</code>
<b>session</b> <code>agent:main:main</code>
<b>id</b> <code>0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11</code>

🚫 <b>Denied: no approval route reached anyone</b> · 2026-11-18 11:06:45 UTC",
        );
    }

    #[test]
    fn plugin_prompt_shows_title_description_and_severity() {
        let a = Approval {
            id: ApprovalId(format!("plugin:{UUID}")),
            kind: Kind::Plugin,
            command: "Send <email>".into(),
            description: Some("to \"boss\" & team".into()),
            severity: Some("critical".into()),
            cwd: None,
            host: None,
            agent_id: None,
            session_key: None,
            warnings: vec![],
            risk_kinds: vec![],
            allowed_decisions: Decision::ALL.to_vec(),
            windows: Vec::new(),
            expires_at_ms: None,
            ..exec("")
        };
        check(
            &a,
            PENDING,
            "🧩 <b>Plugin approval</b> · severity <b>critical</b>
<b>Send &lt;email&gt;</b>
to \"boss\" &amp; team

Or send <code>/approve plugin:0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|allow-always|deny</code>",
        );
    }

    #[test]
    fn hostile_long_command_is_literal_and_cut_within_the_limit() {
        let hostile = "echo '<b>bold</b>' '</code></pre><a href=\"tg://user?id=1\">x</a>' &amp; ";
        let command = format!("{hostile}{}", "é😀<&>".repeat(1000)); // 5000-char tail
        let r = render(&exec(&command), PENDING);
        assert!(r.cut);
        assert!(
            utf16_len(&r.html) <= MAX_MESSAGE_UTF16,
            "{}",
            utf16_len(&r.html)
        );
        assert!(r.html.starts_with(
            "🔐 <b>Exec approval</b>\n<pre><code>echo '&lt;b&gt;bold&lt;/b&gt;' '&lt;/code&gt;&lt;/pre&gt;&lt;a href=\"tg://user?id=1\"&gt;x&lt;/a&gt;' &amp;amp; é😀&lt;&amp;&gt;"
        ));
        let total = command.chars().count();
        assert!(r.html.contains(&format!(
            " of {total} characters; the full text follows as command.txt.</i>"
        )));
        assert!(r.html.ends_with("allow-once|deny</code>"));
        assert_valid_telegram_html(&r.html);
        // The cut leaves no partial escape before the ellipsis.
        let before = r.html.split("…</code></pre>").next().unwrap();
        let last_amp = before.rfind('&').unwrap();
        assert!(
            before[last_amp..].contains(';'),
            "dangling escape: {}",
            &before[last_amp..]
        );
        // And it is not wasteful: the command fills most of the message.
        assert!(utf16_len(&r.html) > MAX_MESSAGE_UTF16 - 20);
    }

    #[test]
    fn many_huge_fields_still_fit() {
        let mut a = exec(&"x".repeat(10_000));
        a.cwd = Some("&".repeat(5000));
        a.warnings = (0..50)
            .map(|i| format!("{i} {}", "<".repeat(500)))
            .collect();
        a.risk_kinds = vec!["r".repeat(1000)];
        a.session_key = Some(">".repeat(1000));
        let r = render(&a, Footer::Finished(&Outcome::Gone { at_ms: 0 }));
        assert!(r.cut);
        assert!(utf16_len(&r.html) <= MAX_MESSAGE_UTF16);
        assert_valid_telegram_html(&r.html);
    }

    #[test]
    fn short_command_is_not_cut() {
        let r = render(&exec(&"a".repeat(3000)), PENDING);
        assert!(!r.cut);
        assert!(r.html.contains(&"a".repeat(3000)));
    }

    /// Checks tags balance and every `&` starts one of the four entities Telegram knows.
    fn assert_valid_telegram_html(html: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find(['<', '&']) {
            let s = &rest[i..];
            if let Some(after) = s.strip_prefix('&') {
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|e| s.starts_with(e)),
                    "bad entity at {:?}",
                    &s[..s.len().min(10)]
                );
                rest = after;
                continue;
            }
            let end = s.find('>').expect("unclosed tag");
            let tag = &s[1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "misnested </{name}>");
            } else {
                assert!(
                    ["b", "i", "code", "pre"].contains(&tag),
                    "unexpected tag <{tag}>"
                );
                stack.push(tag);
            }
            rest = &s[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }
}
