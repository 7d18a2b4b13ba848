//! Protocol-4 JSON text frames: `req`, `res` and `event`, and the error shape a failed
//! `res` carries. Parsing never panics; an unreadable frame is an `Err` the caller logs
//! and skips.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::GatewayError;

/// One frame received from the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Inbound {
    Res(Response),
    Event(EventFrame),
    /// Gateways do not send requests to operator clients today; kept so one is skipped,
    /// not mistaken for garbage.
    Req {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        method: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Response {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub error: Option<ErrorShape>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventFrame {
    pub event: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub seq: Option<u64>,
}

/// `res.error`: `{code, message, details?, retryable?, retryAfterMs?}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Option<Value>,
    #[serde(default)]
    pub retryable: Option<bool>,
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    fn detail(&self, key: &str) -> Option<&str> {
        self.details.as_ref()?.get(key)?.as_str()
    }

    /// `details.reason`, e.g. `APPROVAL_NOT_FOUND`, `startup-sidecars`.
    pub fn reason(&self) -> Option<&str> {
        self.detail("reason")
    }

    /// `details.code`, e.g. `PAIRING_REQUIRED`, `AUTH_TOKEN_MISMATCH`.
    pub fn detail_code(&self) -> Option<&str> {
        self.detail("code")
    }

    /// True when the device has to be approved by the owner first.
    pub fn is_pairing_required(&self) -> bool {
        self.detail_code() == Some("PAIRING_REQUIRED")
            || self.code == "PAIRING_REQUIRED"
            || self.code == "NOT_PAIRED"
            || self
                .reason()
                .is_some_and(|r| r.eq_ignore_ascii_case("pairing-required"))
    }

    /// The pairing request id, wherever the gateway put it.
    pub fn pairing_request_id(&self) -> Option<String> {
        let d = self.details.as_ref()?;
        ["requestId", "pairingRequestId"]
            .iter()
            .find_map(|k| d.get(*k).and_then(Value::as_str))
            .or_else(|| d.get("pairing")?.get("requestId")?.as_str())
            .map(str::to_owned)
    }

    /// `details.recommendedNextStep`, e.g. `wait_then_retry`.
    pub fn recommended_next_step(&self) -> Option<&str> {
        self.detail("recommendedNextStep")
    }

    /// UNAVAILABLE and marked retryable (e.g. sidecars still starting).
    pub fn is_retryable_unavailable(&self) -> bool {
        self.code == "UNAVAILABLE"
            && (self.retryable == Some(true) || self.reason() == Some("startup-sidecars"))
    }

    /// The engine-facing classification of a failed call.
    pub fn classify(&self) -> GatewayError {
        if self.reason() == Some("APPROVAL_NOT_FOUND") {
            return GatewayError::NotFound;
        }
        if self.reason() == Some("APPROVAL_ALREADY_RESOLVED")
            || self.code == "APPROVAL_ALREADY_RESOLVED"
        {
            return GatewayError::AlreadyResolved;
        }
        if self.code == "UNAVAILABLE" {
            return GatewayError::Unavailable(self.message.clone());
        }
        GatewayError::Rejected {
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }
}

/// A request frame as sent.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    pub method: &'a str,
    pub params: &'a Value,
}

impl<'a> Request<'a> {
    pub fn new(id: &'a str, method: &'a str, params: &'a Value) -> Self {
        Request {
            kind: "req",
            id,
            method,
            params,
        }
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Inbound, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_three_frame_types() {
        let ev =
            parse(r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":5}}"#)
                .unwrap();
        assert_eq!(
            ev,
            Inbound::Event(EventFrame {
                event: "connect.challenge".into(),
                payload: json!({"nonce": "n", "ts": 5}),
                seq: None
            })
        );
        let ok = parse(r#"{"type":"res","id":"1","ok":true,"payload":{"a":1}}"#).unwrap();
        assert!(matches!(ok, Inbound::Res(Response { ok: true, .. })));
        let err = parse(
            r#"{"type":"res","id":"2","ok":false,"error":{"code":"INVALID_REQUEST","message":"approval expired or not found","details":{"reason":"APPROVAL_NOT_FOUND"}}}"#,
        )
        .unwrap();
        let Inbound::Res(r) = err else {
            panic!("not a res")
        };
        assert_eq!(r.error.unwrap().classify(), GatewayError::NotFound);
        assert!(matches!(
            parse(r#"{"type":"req","id":"x","method":"m"}"#).unwrap(),
            Inbound::Req { .. }
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "null",
            "[]",
            "{",
            r#"{"type":"res"}"#,
            r#"{"type":"nope"}"#,
            r#"{"event":"x"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn errors_are_classified_by_what_helps() {
        let e = |v: Value| serde_json::from_value::<ErrorShape>(v).unwrap();
        assert_eq!(
            e(json!({"code": "UNAVAILABLE", "message": "starting", "retryable": true, "details": {"reason": "startup-sidecars"}})).classify(),
            GatewayError::Unavailable("starting".into())
        );
        assert_eq!(
            e(json!({"code": "INVALID_REQUEST", "message": "approval already resolved", "details": {"reason": "APPROVAL_ALREADY_RESOLVED"}})).classify(),
            GatewayError::AlreadyResolved
        );
        let pairing = e(json!({"code": "NOT_PAIRED", "message": "pairing required",
            "details": {"code": "PAIRING_REQUIRED", "requestId": "r-1", "recommendedNextStep": "wait_then_retry"}}));
        assert!(pairing.is_pairing_required());
        assert_eq!(pairing.pairing_request_id().as_deref(), Some("r-1"));
        assert_eq!(pairing.recommended_next_step(), Some("wait_then_retry"));
        assert!(
            e(json!({"code": "UNAVAILABLE", "message": "x", "retryable": true}))
                .is_retryable_unavailable()
        );
        assert!(!e(json!({"code": "UNAVAILABLE", "message": "x"})).is_retryable_unavailable());
    }

    #[test]
    fn request_serializes_as_req() {
        let p = json!({"id": "a"});
        let s = serde_json::to_value(Request::new("7", "exec.approval.get", &p)).unwrap();
        assert_eq!(
            s,
            json!({"type": "req", "id": "7", "method": "exec.approval.get", "params": {"id": "a"}})
        );
    }
}
