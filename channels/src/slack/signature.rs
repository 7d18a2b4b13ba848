//! Slack request signatures, for the optional HTTP interactivity endpoint.
//!
//! Slack signs each request: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<ts>:<body>">`
//! keyed with the app's signing secret, `X-Slack-Request-Timestamp: <ts>` in Unix seconds.
//! A request is accepted only when the timestamp is within five minutes of now (replays
//! of old captures fail) and the signature matches, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp is {0} s away from now (more than 5 minutes)")]
    Stale(i64),
    #[error("signature does not match")]
    Mismatch,
}

/// The signature Slack would send for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies one request. `now` is Unix seconds.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let t: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew = (now - t).abs();
    if skew > MAX_SKEW_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let hex_sig = sig.strip_prefix("v0=").ok_or(SignatureError::Mismatch)?;
    let raw = hex::decode(hex_sig).map_err(|_| SignatureError::Mismatch)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&raw).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET, TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verify(
                SECRET,
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                1531420618 + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn everything_else_is_rejected() {
        let now = 1531420618;
        let b = BODY.as_bytes();
        assert_eq!(
            verify(SECRET, None, Some(SIG), b, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(TS), None, b, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some("soon"), Some(SIG), b, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b, now + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b, now - 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify("other-secret", Some(TS), Some(SIG), b, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(SIG), b"token=tampered", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(&SIG.replace("v0=", "v1=")), b, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some("v0=zz"), b, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(TS), Some(&SIG[..20]), b, now),
            Err(SignatureError::Mismatch)
        );
        // A valid signature for another timestamp does not carry over.
        let other = sign(SECRET, "1531420619", b);
        assert_eq!(
            verify(SECRET, Some(TS), Some(&other), b, now),
            Err(SignatureError::Mismatch)
        );
    }
}
