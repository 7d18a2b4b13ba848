//! Property tests of every channel's escaping of untrusted request text: no markup or mention
//! survives, escaping reverses exactly, and rendered prompts keep within the platform limits.

use bridge::approval::{Approval, Decider, Decision, Kind, Outcome, Responder};
use proptest::option::of;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Untrusted text: markup-heavy, mention-shaped, arbitrary Unicode, or long enough to be cut.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[<>&\"'`@!#*_~|\\\\.:()\\[\\]a-z \n-]{0,40}",
        2 => any::<String>(),
        1 => "(@everyone|@here|@room|<!channel>|<!here>|<@U1>|<#C1>|<a href=\"x\">|&amp;|```| ){1,9}",
        1 => "[a`&<\"]{2000,7000}",
        1 => "[\\x01\"😀]{2000,7000}",
    ]
}

/// Approvals as the gateway's payloads make them (so only shapes `from_gateway` accepts).
fn approval() -> impl Strategy<Value = Approval> {
    let kind = prop_oneof![Just(Kind::Exec), Just(Kind::Plugin), Just(Kind::System)];
    let head = (kind, text(), text(), of(text()), of(text()), of(text()));
    let rest = (of(text()), proptest::collection::vec(text(), 0..12));
    let tail = (
        proptest::collection::vec(text(), 0..4),
        any::<bool>(),
        of(any::<i64>()),
    );
    (head, rest, tail).prop_filter_map("not an approval", |(h, r, t)| {
        let (kind, id, command, cwd, host, severity) = h;
        let p = json!({"id": id, "expiresAtMs": t.2, "request": {
            "command": command, "title": command, "cwd": cwd, "host": host, "agentId": host,
            "severity": severity, "description": r.0, "warningText": r.1.join("\n"),
            "commandAnalysis": {"riskKinds": t.0, "warningLines": r.1},
            "cronExecutionSource": if t.1 { json!({}) } else { Value::Null }}});
        Approval::from_gateway(kind, &p).ok()
    })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let decision = proptest::sample::select(Decision::ALL.to_vec());
    let by = prop_oneof![
        (text(), of(text())).prop_map(|(user_id, display)| Decider::Responder(Responder {
            channel: "chat".into(),
            user_id,
            display
        })),
        of(text()).prop_map(|resolved_by| Decider::Elsewhere { resolved_by }),
    ];
    prop_oneof![
        (decision, by, any::<i64>()).prop_map(|(decision, by, at_ms)| Outcome::Decided {
            decision,
            by,
            at_ms
        }),
        any::<i64>().prop_map(|at_ms| Outcome::Expired { at_ms }),
    ]
}

/// Every `&` starts one of `names`' entities.
fn entities_only(s: &str, names: &[&str]) -> bool {
    s.match_indices('&').all(|(i, _)| {
        names
            .iter()
            .any(|n| s[i + 1..].starts_with(&format!("{n};")))
    })
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The tags are all in `allowed` and nest properly (`br` is void).
fn markup_ok(html: &str, allowed: &[&str]) -> bool {
    let mut open = Vec::new();
    for t in html.split('<').skip(1) {
        let Some((tag, _)) = t.split_once('>') else {
            return false;
        };
        let name = tag.trim_start_matches('/');
        if !allowed.contains(&name) {
            return false;
        }
        if tag.starts_with('/') {
            if open.pop() != Some(name) {
                return false;
            }
        } else if name != "br" {
            open.push(name);
        }
    }
    open.is_empty()
}

#[cfg(feature = "telegram")]
mod telegram {
    use super::*;
    use channels::telegram::render::{Footer, MAX_MESSAGE_UTF16, escape, render, utf16_len};

    proptest! {
        #[test]
        fn escape_is_inert_and_reverses(s in text()) {
            let e = escape(&s);
            prop_assert!(!e.contains(['<', '>']) && entities_only(&e, &["amp", "lt", "gt"]));
            prop_assert_eq!(html_unescape(&e), s);
        }

        #[test]
        fn prompt_fits_and_has_only_our_markup(a in approval(), o in of(outcome()), now_ms in any::<i64>()) {
            let html = render(&a, o.as_ref().map_or(Footer::Pending { now_ms }, Footer::Finished)).html;
            prop_assert!(utf16_len(&html) <= MAX_MESSAGE_UTF16);
            prop_assert!(markup_ok(&html, &["b", "i", "code", "pre"]), "{}", html);
            prop_assert!(entities_only(&html, &["amp", "lt", "gt"]));
        }
    }
}

#[cfg(feature = "matrix")]
mod matrix {
    use super::*;
    use channels::matrix::render::{Footer, Rendered, escape, render};

    proptest! {
        #[test]
        fn escape_is_inert_and_reverses(s in text()) {
            let e = escape(&s);
            prop_assert!(!e.contains(['<', '>', '"', '\'']));
            prop_assert!(entities_only(&e, &["amp", "lt", "gt", "quot", "#39"]));
            prop_assert_eq!(html_unescape(&e), s);
        }

        #[test]
        fn prompt_html_has_only_our_markup(a in approval(), o in of(outcome()), now_ms in any::<i64>()) {
            let html = render(&a, o.as_ref().map_or(Footer::Pending { now_ms }, Footer::Finished)).html;
            prop_assert!(markup_ok(&html, &["b", "i", "code", "pre", "br"]), "{}", html);
            prop_assert!(entities_only(&html, &["amp", "lt", "gt", "quot", "#39"]));
        }

        /// render.rs: "Matrix caps an event at 65 536 bytes (encryption adds a third)": the
        /// prompt, and the edit that finishes it (a `* ` fallback plus `m.new_content`).
        #[test]
        fn events_fit_65536_bytes_encrypted(a in approval(), o in outcome(), now_ms in any::<i64>()) {
            let json = |r: &Rendered| json!({"msgtype": "m.text", "body": r.body,
                "format": "org.matrix.custom.html", "formatted_body": r.html});
            let size = |v: Value| serde_json::to_string(&v).unwrap().len() * 4 / 3 + 2048;
            let prompt = render(&a, Footer::Pending { now_ms });
            prop_assert!(size(json(&prompt)) <= 65_536, "prompt: {}", size(json(&prompt)));
            let r = render(&a, Footer::Finished(&o));
            let starred = Rendered { body: format!("* {}", r.body), html: format!("* {}", r.html) };
            let mut edit = json(&starred);
            edit["m.new_content"] = json(&r);
            prop_assert!(size(edit.clone()) <= 65_536, "edit: {}", size(edit));
        }
    }

    /// Every text at its cap, in the heaviest characters: the edit still fits.
    #[test]
    fn heaviest_finished_edit_fits() {
        let heavy = |n: usize| format!("{}{n}", "\u{1}".repeat(9000));
        let a = Approval {
            id: bridge::approval::ApprovalId(heavy(0)),
            kind: Kind::Exec,
            command: heavy(1),
            cwd: Some(heavy(2)),
            host: Some(heavy(3)),
            node_id: Some(heavy(4)),
            agent_id: Some(heavy(5)),
            session_key: Some(heavy(6)),
            description: Some(heavy(7)),
            severity: Some(heavy(8)),
            warnings: (10..30).map(heavy).collect(),
            risk_kinds: vec![heavy(9)],
            cron: true,
            allowed_decisions: Decision::ALL.to_vec(),
            windows: Vec::new(),
            created_at_ms: 0,
            expires_at_ms: Some(i64::MIN),
        };
        let by = Decider::Elsewhere {
            resolved_by: Some(heavy(31)),
        };
        let o = Outcome::Decided {
            decision: Decision::Deny,
            by,
            at_ms: i64::MAX,
        };
        let r = render(&a, Footer::Finished(&o));
        let n = serde_json::to_string(&(&r.body, &r.html)).unwrap().len();
        assert!(2 * (n + 200) * 4 / 3 + 2048 <= 65_536, "{n} bytes per copy");
    }
}

#[cfg(feature = "discord")]
mod discord {
    use super::*;
    use channels::discord::render::{self, Footer, escape_capped, escape_markdown};

    /// Reads escaped markdown back; `None` if any markdown character is left unescaped.
    fn unescape(e: &str) -> Option<String> {
        let (mut out, mut chars) = (String::new(), e.chars());
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(
                    chars
                        .next()
                        .filter(|n| escape_markdown(&n.to_string()) != n.to_string())?,
                ),
                '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '-' | '[' | ']' | '(' | ')'
                | '@' | ':' | '.' | '!' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn escape_leaves_no_markdown_or_mention(s in text()) {
            let e = escape_markdown(&s);
            prop_assert_eq!(unescape(&e), Some(s));
            prop_assert!(!e.contains("<@") && !e.contains("<#") && !e.contains("<!"));
        }

        #[test]
        fn capped_escape_is_a_prefix_within_max(s in text(), max in 0usize..300) {
            let e = escape_capped(&s, max);
            prop_assert!(e.chars().count() <= max.max(1));
            let shown = unescape(e.strip_suffix('…').unwrap_or(&e));
            prop_assert!(shown.is_some_and(|p| s.starts_with(&p)));
        }

        #[test]
        fn embed_keeps_discords_limits(a in approval(), o in of(outcome()), now_ms in any::<i64>()) {
            let e = render::embed(&a, o.as_ref().map_or(Footer::Pending { now_ms }, Footer::Finished));
            let len = |v: &Value| v.as_str().unwrap_or_default().chars().count();
            let fields = e["fields"].as_array().unwrap();
            prop_assert!(len(&e["title"]) <= 256 && len(&e["footer"]["text"]) <= 2048);
            prop_assert!(len(&e["description"]) <= render::MAX_DESCRIPTION && fields.len() <= 25);
            for f in fields {
                let v = f["value"].as_str().unwrap_or_default();
                prop_assert!(!v.trim().is_empty() && len(&f["value"]) <= 1024, "field {}", f);
            }
            let total = len(&e["title"]) + len(&e["description"]) + len(&e["footer"]["text"])
                + fields.iter().map(|f| len(&f["name"]) + len(&f["value"])).sum::<usize>();
            prop_assert!(total <= render::MAX_EMBED_TOTAL);
            if a.kind == Kind::Exec {
                prop_assert_eq!(e["description"].as_str().unwrap().matches("```").count(), 2);
            }
        }
    }
}

#[cfg(feature = "slack")]
mod slack {
    use super::*;
    use channels::slack::render::{self, Footer, ZWSP, escape, escape_capped};

    fn text_of(v: &Value) -> String {
        v["text"].as_str().unwrap_or_default().to_owned()
    }

    fn unescape(e: &str) -> String {
        let fenced = format!("{ZWSP}`{ZWSP}");
        html_unescape(&e.replace(&fenced, "`"))
    }

    proptest! {
        #[test]
        fn escape_leaves_no_control_sequence(s in text()) {
            let e = escape(&s);
            prop_assert!(!e.contains(['<', '>']) && entities_only(&e, &["amp", "lt", "gt"]));
            let loose = format!("`{ZWSP}`");
            prop_assert!(!e.contains("``") && !e.contains(&loose));
            prop_assert_eq!(unescape(&e), s);
        }

        #[test]
        fn capped_escape_is_within_max(s in text(), max in 1usize..300) {
            prop_assert!(escape_capped(&s, max).chars().count() <= max);
        }

        #[test]
        fn blocks_keep_slacks_limits(a in approval(), o in of(outcome()), now_ms in any::<i64>()) {
            let r = render::render(&a, o.as_ref().map_or(Footer::Pending { now_ms }, Footer::Finished));
            let mut texts = vec![(r.text.clone(), usize::MAX)];
            for b in r.blocks.as_array().unwrap() {
                match b["type"].as_str() {
                    Some("section") => texts.push((text_of(&b["text"]), render::MAX_SECTION_CHARS)),
                    Some("context") => {
                        let els = b["elements"].as_array().unwrap();
                        prop_assert!(els.len() <= 10);
                        texts.extend(els.iter().map(|e| (text_of(e), render::MAX_CONTEXT_CHARS)));
                    }
                    _ => {}
                }
            }
            for (t, max) in texts {
                prop_assert!(t.chars().count() <= max, "{} chars", t.chars().count());
                prop_assert!(!t.contains(['<', '>']), "{}", t);
                prop_assert!(entities_only(&t, &["amp", "lt", "gt"]), "{}", t);
            }
        }
    }
}
