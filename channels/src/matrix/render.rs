//! Prompt rendering: a plain `body` and an HTML `formatted_body` (`org.matrix.custom.html`).
//!
//! Every piece of request text is escaped in the HTML (`&`, `<`, `>`, `"`, `'`), so a command
//! cannot forge markup, links or mentions; the plain body carries it verbatim. Long texts are
//! cut on character boundaries before escaping, so no escape sequence is ever split. Matrix
//! caps an event at 65 536 bytes (encryption adds a third): each cap bounds a text's bytes in
//! both bodies' JSON as well as its characters, which keeps the prompt event well inside that.

use bridge::approval::{Approval, Choice, Decision, Kind, Outcome, Window};

use crate::common::render::{decision_words, expires, icon, kind_title, utc};

/// Longest command shown, in characters. With every other text at its cap too, the edit that
/// finishes a prompt (two copies of both bodies) stays under 65 536 bytes once encrypted.
pub const MAX_COMMAND_CHARS: usize = 5000;

/// Seeding order: ✅ ❌ ♾️, only those offered, then the time-boxed allows (`⏳1h`).
pub fn seeded(a: &Approval) -> Vec<Choice> {
    let mut out: Vec<Choice> = [Decision::AllowOnce, Decision::Deny, Decision::AllowAlways]
        .into_iter()
        .filter(|d| a.offers(*d))
        .map(Choice::from)
        .collect();
    if a.offers(Decision::AllowOnce) {
        out.extend(a.windows.iter().copied().map(Choice::AllowFor));
    }
    out
}

/// Reads a reaction key: variation selectors and skin tones are ignored; `⏳<window>` is a
/// time-boxed allow; anything else is not a decision.
pub fn choice_of(key: &str) -> Option<Choice> {
    let bare: String = key
        .chars()
        .filter(|c| !matches!(*c, '\u{FE0F}' | '\u{FE0E}' | '\u{1F3FB}'..='\u{1F3FF}'))
        .collect();
    match bare.as_str() {
        "✅" => Some(Decision::AllowOnce.into()),
        "❌" => Some(Decision::Deny.into()),
        "♾" => Some(Decision::AllowAlways.into()),
        other => other
            .strip_prefix('⏳')
            .and_then(Window::parse)
            .map(Choice::AllowFor),
    }
}

/// HTML-escapes untrusted text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The bytes one character adds to the event: its JSON form in `body` plus the JSON form of
/// its escape in `formatted_body` (2 for an ASCII letter, 12 for a control character).
fn weight(c: char) -> usize {
    let json = |c: char| match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    };
    let html = match c {
        '&' | '\'' => 5,
        '<' | '>' => 4,
        '"' => 6,
        c => json(c),
    };
    json(c) + html
}

/// At most `max` characters weighing no more than `max` ASCII letters would (plus the
/// ellipsis), so no text can make the event bigger than plain text of the same caps;
/// a cut ends with `…`. Also returns how many characters of `s` are kept.
fn cap_counted(s: &str, max: usize) -> (String, usize) {
    let budget = 2 * max + 4;
    let (n, w) = s.chars().fold((0, 0), |(n, w), c| (n + 1, w + weight(c)));
    if n <= max && w <= budget {
        return (s.to_owned(), n);
    }
    let room = budget - weight('…');
    let (mut t, mut used, mut kept) = (String::new(), 0, 0);
    for c in s.chars().take(max.saturating_sub(1)) {
        used += weight(c);
        if used > room {
            break;
        }
        t.push(c);
        kept += 1;
    }
    t.push('…');
    (t, kept)
}

fn cap(s: &str, max: usize) -> String {
    cap_counted(s, max).0
}

/// A rendered message: both bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    pub html: String,
}

/// What closes the message.
#[derive(Debug, Clone, Copy)]
pub enum Footer<'a> {
    /// Still pending, rendered at `now_ms`: the time left, then what to react or send.
    Pending { now_ms: i64 },
    /// Finished: the outcome (and its time), no time left.
    Finished(&'a Outcome),
}

/// Renders the prompt (or its finished form).
pub fn render(a: &Approval, footer: Footer<'_>) -> Rendered {
    let mut body = String::new();
    let mut html = String::new();
    let (emoji, name) = kind_title(a.kind);
    let title = format!("{emoji} {name}");
    body.push_str(&title);
    html.push_str(&format!("<b>{title}</b>"));
    if let Some(sev) = &a.severity {
        let sev = cap(sev, 40);
        body.push_str(&format!(" · severity {sev}"));
        html.push_str(&format!(" · severity <b>{}</b>", escape(&sev)));
    }
    if a.cron {
        body.push_str(" · ⏰ cron run");
        html.push_str(" · ⏰ <b>cron run</b>");
    }
    let total = a.command.chars().count();
    let (command, shown) = cap_counted(&a.command, MAX_COMMAND_CHARS);
    body.push('\n');
    body.push_str(&command);
    match a.kind {
        Kind::Exec => html.push_str(&format!("<pre><code>{}</code></pre>", escape(&command))),
        Kind::Plugin | Kind::System => html.push_str(&format!("<br><b>{}</b>", escape(&command))),
    }
    if shown < total {
        let note = format!("✂️ Cut: showing {shown} of {total} characters.");
        body.push_str(&format!("\n{note}"));
        html.push_str(&format!("<br><i>{note}</i>"));
    }
    let mut line = |name: &str, v: &str, code: bool| {
        body.push_str(&format!("\n{name}: {v}"));
        if code {
            html.push_str(&format!("<br><b>{name}</b> <code>{}</code>", escape(v)));
        } else {
            html.push_str(&format!("<br><b>{name}</b> {}", escape(v)));
        }
    };
    if let Some(d) = &a.description {
        line("description", &cap(d, 600), false);
    }
    for (name, v) in [
        ("cwd", &a.cwd),
        ("agent", &a.agent_id),
        ("host", &a.host),
        ("node", &a.node_id),
        ("session", &a.session_key),
    ] {
        if let Some(v) = v {
            line(name, &cap(v, 300), true);
        }
    }
    for w in a.warnings.iter().take(10) {
        line("⚠️", &cap(w, 300), false);
    }
    if !a.risk_kinds.is_empty() {
        line("risk", &cap(&a.risk_kinds.join(", "), 300), false);
    }
    let id = cap(a.id.as_str(), 100);
    match footer {
        Footer::Pending { now_ms } => {
            if let Some(exp) = a.expires_at_ms {
                // Our own text, nothing to escape; `expires in …` reads as one phrase.
                let left = expires(a.created_at_ms, exp, now_ms);
                body.push_str(&format!("\nexpires {left}"));
                html.push_str(&format!("<br><b>expires</b> {left}"));
            }
            let offered = seeded(a);
            let reacts: Vec<String> = offered
                .iter()
                .map(|d| format!("{} {}", d.emoji(), d.label().to_lowercase()))
                .collect();
            let cmd = format!("/approve {id} {}", decision_words(a));
            body.push_str(&format!(
                "\n\nReact {} — or send: {cmd}",
                reacts.join(" · ")
            ));
            html.push_str(&format!(
                "<br><br>React {} — or send: <code>{}</code>",
                reacts.join(" · "),
                escape(&cmd)
            ));
        }
        Footer::Finished(o) => {
            let summary = cap(&o.summary(), 400);
            body.push_str(&format!(
                "\nid: {id}\n\n{} {summary} · {}",
                icon(o),
                utc(o.at_ms())
            ));
            html.push_str(&format!(
                "<br><b>id</b> <code>{}</code><br><br>{} <b>{}</b> · {}",
                escape(&id),
                icon(o),
                escape(&summary),
                utc(o.at_ms())
            ));
        }
    }
    Rendered { body, html }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::ApprovalId;

    /// Rendered 12 minutes 20 seconds before the approval expires.
    const PENDING: Footer<'static> = Footer::Pending {
        now_ms: 1_700_000_000_000 - 740_000,
    };

    fn approval(command: &str, allowed: &[Decision]) -> Approval {
        Approval {
            id: ApprovalId("0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11".into()),
            kind: Kind::Exec,
            command: command.into(),
            cwd: Some("/srv/<x>".into()),
            host: Some("gateway".into()),
            node_id: None,
            agent_id: Some("main".into()),
            session_key: None,
            description: None,
            severity: None,
            warnings: vec!["deletes <files>".into()],
            risk_kinds: vec![],
            cron: false,
            allowed_decisions: allowed.to_vec(),
            windows: Vec::new(),
            created_at_ms: 0,
            expires_at_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn request_text_is_escaped_in_html_and_verbatim_in_body() {
        let r = render(
            &approval("echo '<a href=\"x\">@room</a>' & ls", &Decision::ALL),
            PENDING,
        );
        assert!(
            r.body.contains("echo '<a href=\"x\">@room</a>' & ls"),
            "{}",
            r.body
        );
        assert!(
            r.html
                .contains("echo &#39;&lt;a href=&quot;x&quot;&gt;@room&lt;/a&gt;&#39; &amp; ls"),
            "{}",
            r.html
        );
        assert!(!r.html.contains("<a "));
        assert!(r.html.contains("/srv/&lt;x&gt;") && r.html.contains("deletes &lt;files&gt;"));
        assert!(
            r.body.contains(
                "/approve 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|allow-always|deny"
            ),
            "{}",
            r.body
        );
        assert!(
            r.body.contains("\nexpires in 12 min (22:13 UTC)\n"),
            "{}",
            r.body
        );
    }

    #[test]
    fn a_finished_prompt_shows_its_outcome_and_no_time_left() {
        let a = approval("ls", &Decision::ALL);
        let r = render(
            &a,
            Footer::Finished(&Outcome::Expired {
                at_ms: 1_700_000_000_000,
            }),
        );
        assert!(
            r.body.ends_with(
                "\nid: 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11\n\n⌛ Expired without a decision · 2023-11-14 22:13:20 UTC"
            ),
            "{}",
            r.body
        );
        assert!(
            !r.body.contains("expires") && !r.html.contains("expires"),
            "{}",
            r.html
        );
    }

    #[test]
    fn footer_lists_only_offered_decisions() {
        let r = render(
            &approval("ls", &[Decision::AllowOnce, Decision::Deny]),
            PENDING,
        );
        assert!(r.body.contains("React ✅ allow once · ❌ deny — or send: /approve 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|deny"), "{}", r.body);
    }

    #[test]
    fn long_commands_are_cut_on_char_boundaries() {
        let cmd = "é&".repeat(MAX_COMMAND_CHARS);
        let r = render(&approval(&cmd, &Decision::ALL), PENDING);
        assert!(r.body.contains("✂️ Cut: showing"));
        assert!(r.html.len() < 40_000);
        assert!(!r.html.contains("&am…") && !r.html.contains("&…"));
    }

    /// Found by channels/tests/prop_escaping.rs: caps counted characters, so 6000 control
    /// characters made 72 000 bytes of event JSON, over Matrix's 65 536 (M_TOO_LARGE).
    #[test]
    fn caps_bound_the_event_bytes_whatever_the_text() {
        let size = |r: &Rendered| serde_json::to_string(&(&r.body, &r.html)).unwrap().len();
        let plain = render(&approval(&"a".repeat(9000), &Decision::ALL), PENDING);
        assert!(plain.body.contains("showing 4999 of 9000 characters"));
        for c in ['\u{1}', '"', '<', '&', '😀'] {
            let r = render(
                &approval(&c.to_string().repeat(9000), &Decision::ALL),
                PENDING,
            );
            assert!(size(&r) <= size(&plain) + 16, "{c:?}: {} bytes", size(&r));
            assert!(r.body.contains("✂️ Cut: showing"), "{c:?}");
        }
    }

    #[test]
    fn reaction_keys_normalize() {
        let d = |d: Decision| Some(Choice::from(d));
        assert_eq!(choice_of("✅"), d(Decision::AllowOnce));
        assert_eq!(choice_of("✅\u{FE0F}"), d(Decision::AllowOnce));
        assert_eq!(choice_of("❌"), d(Decision::Deny));
        assert_eq!(choice_of("♾️"), d(Decision::AllowAlways));
        assert_eq!(choice_of("♾"), d(Decision::AllowAlways));
        assert_eq!(choice_of("👍"), None);
        assert_eq!(choice_of("👍🏽"), None);
        assert_eq!(choice_of("✅✅"), None);
        assert_eq!(choice_of(""), None);
        assert_eq!(choice_of("⏳25h"), None);
        assert_eq!(choice_of("⏳"), None);
        let hour = Choice::AllowFor(Window::parse("1h").unwrap());
        assert_eq!(choice_of("⏳1h"), Some(hour));
        assert_eq!(choice_of("⏳\u{FE0F}1h"), Some(hour));
        for c in Decision::ALL.map(Choice::from).into_iter().chain([hour]) {
            assert_eq!(choice_of(&c.emoji()), Some(c));
        }
    }
}
