//! Prompt rendering as a Discord embed.
//!
//! Request text is untrusted. The command sits in a fenced code block whose backticks are
//! broken with a zero-width space, so no run of backticks can close the fence; every other
//! piece of request text is markdown-escaped (a backslash before each ASCII punctuation
//! character Discord's markdown reads, `<` and `@` included), so it cannot forge links,
//! headings, mentions or layout. Mentions cannot ping anyway: embeds never ping, and every
//! message is sent with `allowed_mentions: {parse: []}`. Texts are cut between characters
//! of the unescaped text, never inside an escape, within Discord's embed limits.

use bridge::approval::{Approval, Choice, Decision, Kind, Outcome};
use bridge::grant::GrantId;
use serde_json::{Value, json};

use crate::common::render::{
    deadline, decision_words, icon, kind_title, plausible_now, revoke_buttons, utc,
};

/// Discord's limits on an embed, in characters.
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_EMBED_TOTAL: usize = 6000;
pub const MAX_FOOTER: usize = 2048;

const PENDING_COLOR: u32 = 0xF1C40F;
const ALLOWED_COLOR: u32 = 0x2ECC71;
const DENIED_COLOR: u32 = 0xE74C3C;
const ENDED_COLOR: u32 = 0x95A5A6;

const ZWSP: char = '\u{200B}';

/// What closes the prompt.
#[derive(Debug, Clone, Copy)]
pub enum Footer<'a> {
    /// Still pending, rendered at `now_ms`: the time left, then the `/approve` fallback line.
    Pending { now_ms: i64 },
    /// Finished: the outcome (and its time), no time left.
    Finished(&'a Outcome),
}

/// Characters Discord's markdown gives meaning to (escaped with a backslash).
fn special(c: char) -> bool {
    matches!(
        c,
        '\\' | '*'
            | '_'
            | '~'
            | '`'
            | '|'
            | '>'
            | '<'
            | '#'
            | '-'
            | '['
            | ']'
            | '('
            | ')'
            | '@'
            | ':'
            | '.'
            | '!'
    )
}

fn escaped_len(c: char) -> usize {
    if special(c) { 2 } else { 1 }
}

/// Markdown-escapes untrusted text.
pub fn escape_markdown(s: &str) -> String {
    escape_capped(s, usize::MAX)
}

/// Escapes `s` within `max` characters; a cut ends with `…`.
pub fn escape_capped(s: &str, max: usize) -> String {
    let total: usize = s.chars().map(escaped_len).sum();
    let budget = if total <= max {
        usize::MAX
    } else {
        max.saturating_sub(1)
    };
    let mut out = String::with_capacity(s.len());
    let mut used = 0;
    for c in s.chars() {
        let n = escaped_len(c);
        if used + n > budget {
            out.push('…');
            return out;
        }
        used += n;
        if special(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The command inside a code block: backticks are followed by a zero-width space so none
/// can close the fence. Returns the block and whether the command was cut.
fn code_block(s: &str, max: usize) -> (String, bool) {
    const FENCES: usize = "```\n".len() + "\n```".len();
    let units = |c: char| if c == '`' { 2 } else { 1 };
    let total: usize = s.chars().map(units).sum();
    let budget = if total + FENCES <= max {
        usize::MAX
    } else {
        max.saturating_sub(FENCES + 1)
    };
    let mut body = String::with_capacity(s.len() + 8);
    let mut used = 0;
    let mut cut = false;
    for c in s.chars() {
        if used + units(c) > budget {
            body.push('…');
            cut = true;
            break;
        }
        used += units(c);
        body.push(c);
        if c == '`' {
            body.push(ZWSP);
        }
    }
    (format!("```\n{body}\n```"), cut)
}

/// The prompt's embed (or its finished form).
pub fn embed(a: &Approval, footer: Footer<'_>) -> Value {
    let (emoji, name) = kind_title(a.kind);
    let mut title = format!("{emoji} {name}");
    if let Some(sev) = &a.severity {
        title.push_str(&format!(" · severity {}", escape_capped(sev, 40)));
    }
    if a.cron {
        title.push_str(" · ⏰ cron run");
    }

    let mut fields: Vec<Value> = Vec::new();
    // Discord refuses an embed with a blank field value (e.g. `riskKinds: [""]`): a
    // zero-width space stands in for it.
    let mut field = |name: &str, value: String| {
        let value = if value.trim().is_empty() {
            ZWSP.to_string()
        } else {
            value
        };
        fields.push(json!({"name": name, "value": value, "inline": false}))
    };
    let text = |v: &Option<String>, cap: usize| v.as_deref().map(|v| escape_capped(v, cap));
    if let Some(v) = text(&a.cwd, 300) {
        field("cwd", v);
    }
    if let Some(v) = text(&a.agent_id, 100) {
        field("agent", v);
    }
    if let Some(v) = text(&a.host, 100) {
        field("host", v);
    }
    if let Some(v) = text(&a.node_id, 100) {
        field("node", v);
    }
    if let Some(v) = text(&a.session_key, 150) {
        field("session", v);
    }
    if !a.warnings.is_empty() {
        let mut w = String::new();
        for (i, line) in a.warnings.iter().enumerate() {
            let l = format!("⚠️ {}\n", escape_capped(line, 300));
            if w.chars().count() + l.chars().count() > 900 {
                w.push_str(&format!("… and {} more", a.warnings.len() - i));
                break;
            }
            w.push_str(&l);
        }
        field("warnings", w.trim_end().to_owned());
    }
    if !a.risk_kinds.is_empty() {
        field("risk", escape_capped(&a.risk_kinds.join(", "), 300));
    }
    if let (Some(exp), Footer::Pending { now_ms }) = (a.expires_at_ms, footer) {
        // The time left as Discord's own relative timestamp rather than the other channels'
        // `in 12 min` (common::render::expires): `<t:…:R>` renders as `in 12 minutes` in
        // the reader's client and counts down by itself, with no edit. The instant beside
        // it is the one the other channels show.
        field(
            "expires",
            format!(
                "<t:{}:R> ({})",
                exp.div_euclid(1000),
                deadline(exp, plausible_now(a.created_at_ms, exp, now_ms))
            ),
        );
    }
    field("id", escape_capped(a.id.as_str(), 120));
    let (color, foot) = match footer {
        Footer::Pending { .. } => (
            PENDING_COLOR,
            format!("Or send: /approve {} {}", a.id, decision_words(a)),
        ),
        Footer::Finished(o) => {
            field(
                "outcome",
                format!(
                    "{} **{}** · {}",
                    icon(o),
                    escape_capped(&o.summary(), 600),
                    utc(o.at_ms())
                ),
            );
            (color(o), format!("Approval {}", a.id))
        }
    };
    let foot: String = foot.chars().take(MAX_FOOTER).collect();

    let used = title.chars().count()
        + foot.chars().count()
        + fields
            .iter()
            .map(|f| {
                f["name"].as_str().unwrap_or_default().chars().count()
                    + f["value"].as_str().unwrap_or_default().chars().count()
            })
            .sum::<usize>();
    // What is left for the description, with room for the cut marker.
    let room = MAX_DESCRIPTION.min(MAX_EMBED_TOTAL.saturating_sub(used + 80));
    let description = match a.kind {
        Kind::Exec => {
            let (block, cut) = code_block(&a.command, room);
            if cut {
                let total = a.command.chars().count();
                let (block, _) = code_block(&a.command, room.saturating_sub(60));
                let shown = block
                    .chars()
                    .filter(|c| *c != ZWSP)
                    .count()
                    .saturating_sub(9);
                format!("{block}\n✂️ Cut: showing {shown} of {total} characters.")
            } else {
                block
            }
        }
        Kind::Plugin | Kind::System => {
            let mut d = format!("**{}**", escape_capped(&a.command, 300));
            if let Some(desc) = &a.description {
                d.push('\n');
                d.push_str(&escape_capped(desc, room.saturating_sub(310).min(1500)));
            }
            d
        }
    };
    json!({
        "title": title,
        "description": description,
        "color": color,
        "fields": fields,
        "footer": {"text": foot},
    })
}

/// One button per offered decision, in a fixed order, in one action row; the time-boxed
/// allows in a second row (a row holds at most 5 buttons).
pub fn components(a: &Approval) -> Result<Value, super::codec::CodecError> {
    let button = |c: Choice| {
        Ok(json!({
            "type": 2,
            "style": style(c),
            "label": c.label(),
            "custom_id": super::codec::encode(a.kind, &a.id, c)?,
        }))
    };
    let (timed, plain): (Vec<Choice>, Vec<Choice>) =
        a.choices().into_iter().partition(|c| c.window().is_some());
    let mut rows = vec![
        json!({"type": 1, "components": plain.into_iter().map(button).collect::<Result<Vec<_>, super::codec::CodecError>>()?}),
    ];
    if !timed.is_empty() {
        let timed = timed
            .into_iter()
            .take(5)
            .map(button)
            .collect::<Result<Vec<_>, super::codec::CodecError>>()?;
        rows.push(json!({"type": 1, "components": timed}));
    }
    Ok(Value::Array(rows))
}

/// A red Revoke button per grant, five to an action row (none: no rows).
pub fn revoke_rows<'a>(grants: impl IntoIterator<Item = &'a GrantId>) -> Vec<Value> {
    let buttons: Vec<Value> = revoke_buttons(grants)
        .into_iter()
        .map(|(label, id)| json!({"type": 2, "style": 4, "label": label, "custom_id": id}))
        .collect();
    buttons
        .chunks(5)
        .map(|row| json!({"type": 1, "components": row}))
        .collect()
}

/// Allow once: success (green), Allow always: primary (blurple), Deny: danger (red), a
/// time-boxed allow: secondary (grey).
pub fn style(c: Choice) -> u8 {
    match c {
        Choice::AllowFor(_) => 2,
        Choice::Decide(Decision::AllowOnce) => 3,
        Choice::Decide(Decision::AllowAlways) => 1,
        Choice::Decide(Decision::Deny) => 4,
    }
}

fn color(o: &Outcome) -> u32 {
    match o {
        Outcome::Decided {
            decision: Decision::Deny,
            ..
        }
        | Outcome::NoRoute { .. } => DENIED_COLOR,
        Outcome::Decided { .. } => ALLOWED_COLOR,
        Outcome::Expired { .. } | Outcome::Gone { .. } | Outcome::Cancelled { .. } => ENDED_COLOR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge::approval::ApprovalId;

    /// Rendered 2 minutes before the approval expires.
    const PENDING: Footer<'static> = Footer::Pending {
        now_ms: 1_795_000_000_000,
    };

    fn exec(command: &str) -> Approval {
        Approval {
            id: ApprovalId::from("0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11"),
            kind: Kind::Exec,
            command: command.to_owned(),
            cwd: Some("/srv/@everyone".into()),
            host: Some("gateway".into()),
            node_id: None,
            agent_id: Some("main".into()),
            session_key: None,
            description: None,
            severity: None,
            warnings: vec!["deletes [files](https://evil)".into()],
            risk_kinds: vec![],
            cron: false,
            allowed_decisions: vec![Decision::AllowOnce, Decision::Deny],
            windows: Vec::new(),
            created_at_ms: 0,
            expires_at_ms: Some(1_795_000_120_000),
        }
    }

    /// Found by channels/tests/prop_escaping.rs: `riskKinds: [""]` made an empty `risk`
    /// field, and Discord refuses the whole embed for it.
    #[test]
    fn blank_field_values_become_a_zero_width_space() {
        let mut a = exec("ls");
        a.risk_kinds = vec![String::new()];
        a.cwd = Some(" ".into());
        let e = embed(&a, PENDING);
        for f in e["fields"].as_array().unwrap() {
            assert!(!f["value"].as_str().unwrap().trim().is_empty(), "{f}");
        }
        let risk = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "risk");
        assert_eq!(risk.unwrap()["value"], ZWSP.to_string());
    }

    #[track_caller]
    fn check(got: &str, expect: &str) {
        assert_eq!(got, expect, "\n--- got ---\n{got}\n");
    }

    #[test]
    fn markdown_and_mentions_are_escaped() {
        check(
            &escape_markdown("<@123> @everyone **b** [x](http://y) `c` # h"),
            r"\<\@123\> \@everyone \*\*b\*\* \[x\]\(http\://y\) \`c\` \# h",
        );
        check(&escape_capped("a*b*c", 4), "a\\*…");
    }

    #[test]
    fn backticks_cannot_close_the_fence() {
        let (block, cut) = code_block("echo ```\n@everyone <@1> **x**\n``` `", 4096);
        assert!(!cut);
        check(
            &block,
            "```\necho `\u{200B}`\u{200B}`\u{200B}\n@everyone <@1> **x**\n`\u{200B}`\u{200B}`\u{200B} `\u{200B}\n```",
        );
        assert_eq!(block.matches("```").count(), 2, "only our own fences");
    }

    #[test]
    fn pending_embed_lists_fields_and_the_fallback() {
        let e = embed(&exec("rm -rf /tmp/x"), PENDING);
        check(
            e["description"].as_str().unwrap(),
            "```\nrm -rf /tmp/x\n```",
        );
        check(e["title"].as_str().unwrap(), "🔐 Exec approval");
        let f: Vec<String> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{}={}",
                    f["name"].as_str().unwrap(),
                    f["value"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            f,
            [
                "cwd=/srv/\\@everyone",
                "agent=main",
                "host=gateway",
                r"warnings=⚠️ deletes \[files\]\(https\://evil\)",
                "expires=<t:1795000120:R> (11:08 UTC)",
                "id=0b8f6c1e\\-8a44\\-4c1e\\-9d6f\\-2f9b1c0d7e11",
            ]
        );
        check(
            e["footer"]["text"].as_str().unwrap(),
            "Or send: /approve 0b8f6c1e-8a44-4c1e-9d6f-2f9b1c0d7e11 allow-once|deny",
        );
        let c = components(&exec("x")).unwrap();
        let styles: Vec<(String, u64)> = c[0]["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["label"].as_str().unwrap().to_owned(),
                    b["style"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            styles,
            [("Allow once".to_owned(), 3), ("Deny".to_owned(), 4)]
        );
    }

    #[test]
    fn a_finished_embed_shows_its_outcome_and_no_time_left() {
        let e = embed(
            &exec("ls"),
            Footer::Finished(&Outcome::Expired {
                at_ms: 1_795_000_120_000,
            }),
        );
        let names: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["cwd", "agent", "host", "warnings", "id", "outcome"]);
        check(
            e["fields"][5]["value"].as_str().unwrap(),
            "⌛ **Expired without a decision** · 2026-11-18 11:08:40 UTC",
        );
    }

    #[test]
    fn huge_requests_fit_the_embed_limits() {
        let mut a = exec(&"`x".repeat(6000));
        a.cwd = Some("*".repeat(5000));
        a.warnings = (0..50)
            .map(|i| format!("{i} {}", "<".repeat(500)))
            .collect();
        let e = embed(&a, Footer::Finished(&Outcome::Gone { at_ms: 0 }));
        let d = e["description"].as_str().unwrap();
        assert!(d.chars().count() <= MAX_DESCRIPTION);
        assert!(d.contains("✂️ Cut: showing"), "{}", &d[d.len() - 80..]);
        let mut total = e["title"].as_str().unwrap().chars().count()
            + d.chars().count()
            + e["footer"]["text"].as_str().unwrap().chars().count();
        for f in e["fields"].as_array().unwrap() {
            let v = f["value"].as_str().unwrap().chars().count();
            assert!(v <= MAX_FIELD_VALUE, "{v}");
            total += v + f["name"].as_str().unwrap().chars().count();
        }
        assert!(total <= MAX_EMBED_TOTAL, "{total}");
        assert_eq!(d.matches("```").count(), 2);
    }
}
