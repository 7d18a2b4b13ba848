//! The outbound path: a prompt and its seeded reactions, the edit that shows its outcome
//! (`m.replace`) and the redaction of those reactions, notices, and bulletins (plain
//! `m.text`, edited with `m.replace`). Nothing we send mentions anyone.

use bridge::approval::{Approval, Outcome, now_ms};
use bridge::channel::ChannelError;
use matrix_sdk::Room;
use matrix_sdk::room::{IncludeRelations, RelationsOptions};
use matrix_sdk::ruma::OwnedEventId;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::relation::RelationType;
use serde_json::{Value, json};

use super::error::{classify, classify_http};
use super::ids::PROMPT_KEY;
use super::render;

/// Posts the prompt for `approval` in `room`; its event id.
pub(super) async fn prompt(room: &Room, approval: &Approval) -> Result<OwnedEventId, ChannelError> {
    let rendered = render::render(approval, render::Footer::Pending { now_ms: now_ms() });
    let mut content = html_content("m.text", &rendered);
    content[PROMPT_KEY] = json!({"id": approval.id.as_str()});
    // One transaction id per approval and room: a retry of a send whose answer was lost
    // (here or after a restart) gets the event the homeserver already stored, instead
    // of posting a second prompt.
    let txn = format!("prompt.{}.{}", approval.id, room.room_id());
    let sent = room
        .send_raw("m.room.message", content)
        .with_transaction_id(txn.as_str().into())
        .await
        .map_err(classify)?;
    Ok(sent.response.event_id)
}

/// Adds a reaction per offered decision to the prompt, for the owner to tap. A failure is
/// logged only: the `/approve` line still works.
pub(super) async fn seed_reactions(room: &Room, approval: &Approval, prompt: &OwnedEventId) {
    for d in render::seeded(approval) {
        let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": prompt, "key": d.emoji()}});
        let txn = format!("seed.{}.{}.{d}", approval.id, room.room_id());
        let seeded = room
            .send_raw("m.reaction", reaction)
            .with_transaction_id(txn.as_str().into());
        if let Err(e) = seeded.await {
            tracing::warn!(error = %e, decision = %d, "could not seed a reaction; the /approve line still works");
        }
    }
}

/// Edits the prompt to show `outcome`, then redacts the bot's (`bot`) reactions on it, so
/// nothing looks actionable. A deleted or unknown prompt is `MessageGone`.
pub(super) async fn finish(
    room: &Room,
    prompt: &OwnedEventId,
    approval: &Approval,
    outcome: &Outcome,
    bot: &str,
) -> Result<(), ChannelError> {
    still_there(room, prompt).await?;
    let r = render::render(approval, render::Footer::Finished(outcome));
    let starred = render::Rendered {
        body: format!("* {}", r.body),
        html: format!("* {}", r.html),
    };
    let mut content = html_content("m.text", &starred);
    content["m.new_content"] = html_content("m.text", &r);
    content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": prompt});
    room.send_raw("m.room.message", content)
        .await
        .map_err(classify)?;
    // Remove the seeded reactions so nothing looks actionable.
    let opts = RelationsOptions {
        include_relations: IncludeRelations::RelationsOfType(RelationType::Annotation),
        limit: Some(100u32.into()),
        ..Default::default()
    };
    let related = room
        .relations(prompt.clone(), opts)
        .await
        .map_err(classify)?;
    for ev in related.chunk {
        let v: Value = ev.raw().deserialize_as().unwrap_or_default();
        if v["sender"].as_str() != Some(bot) || v.pointer("/unsigned/redacted_because").is_some() {
            continue;
        }
        if let Some(id) = v["event_id"]
            .as_str()
            .and_then(|s| OwnedEventId::try_from(s).ok())
        {
            room.redact(&id, Some("approval finished"), None)
                .await
                .map_err(classify_http)?;
        }
    }
    Ok(())
}

/// `MessageGone` unless `event` is in `room` and not redacted.
async fn still_there(room: &Room, event: &OwnedEventId) -> Result<(), ChannelError> {
    match room.event(event, None).await {
        Ok(ev) => {
            let v: Value = ev.raw().deserialize_as().unwrap_or_default();
            if v.pointer("/unsigned/redacted_because").is_some() {
                return Err(ChannelError::MessageGone(format!("{event} was deleted")));
            }
            Ok(())
        }
        Err(e) if e.client_api_error_kind() == Some(&ErrorKind::NotFound) => {
            Err(ChannelError::MessageGone(format!("{event} not found")))
        }
        Err(e) => Err(classify(e)),
    }
}

/// Posts a bulletin's plain `text` as an `m.text` message, which clients notify for, or
/// when `quiet` as an `m.notice`, which the default push rule `.m.rule.suppress_notices`
/// keeps silent; its event id.
pub(super) async fn bulletin(
    room: &Room,
    text: &str,
    quiet: bool,
) -> Result<OwnedEventId, ChannelError> {
    let mut content = plain_content(text);
    if quiet {
        content["msgtype"] = json!("m.notice");
    }
    let sent = room
        .send_raw("m.room.message", content)
        .await
        .map_err(classify)?;
    Ok(sent.response.event_id)
}

/// Replaces the bulletin `event` with `text` (`m.replace`). A deleted or unknown event is
/// `MessageGone`.
pub(super) async fn edit_bulletin(
    room: &Room,
    event: &OwnedEventId,
    text: &str,
) -> Result<(), ChannelError> {
    still_there(room, event).await?;
    let mut content = plain_content(&format!("* {text}"));
    content["m.new_content"] = plain_content(text);
    content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": event});
    room.send_raw("m.room.message", content)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Plain text, no `formatted_body`: nothing in it is read as markup, and it mentions nobody.
fn plain_content(text: &str) -> Value {
    json!({"msgtype": "m.text", "body": text, "m.mentions": {}})
}

/// Posts `text` as an `m.notice` in reply to `event`.
pub(super) async fn notice(
    room: &Room,
    event: &OwnedEventId,
    text: &str,
) -> Result<(), ChannelError> {
    let content = json!({
        "msgtype": "m.notice",
        "body": text,
        "m.mentions": {},
        "m.relates_to": {"m.in_reply_to": {"event_id": event}},
    });
    room.send_raw("m.room.message", content)
        .await
        .map_err(classify)?;
    Ok(())
}

/// An empty `m.mentions` says the message mentions nobody, which also turns off the legacy
/// push rules that read `@room` or a display name out of the (untrusted) body text.
fn html_content(msgtype: &str, r: &render::Rendered) -> Value {
    json!({"msgtype": msgtype, "body": r.body, "format": "org.matrix.custom.html",
        "formatted_body": r.html, "m.mentions": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_mention_nobody_whatever_the_command_says() {
        let r = render::Rendered {
            body: "@room @owner:example.org".into(),
            html: "@room".into(),
        };
        assert_eq!(html_content("m.text", &r)["m.mentions"], json!({}));
    }
}
