//! matrix-sdk errors as `ChannelError`s, so the engine knows whether a retry helps: rate
//! limits, 5xx answers and network faults are transient, everything else is permanent.

use bridge::channel::ChannelError;
use matrix_sdk::HttpError;
use matrix_sdk::ruma::api::error::{ErrorKind, RetryAfter};

pub(super) fn classify(e: impl Into<matrix_sdk::Error>) -> ChannelError {
    match e.into() {
        matrix_sdk::Error::Http(h) => classify_http(*h),
        e => ChannelError::Permanent(e.to_string()),
    }
}

/// Rate limits (with the server's `retry_after_ms`), 5xx and network faults are transient.
pub(super) fn classify_http(e: HttpError) -> ChannelError {
    if let Some(api) = e.as_client_api_error() {
        return match api.error_kind() {
            Some(ErrorKind::LimitExceeded(d)) => ChannelError::Transient {
                message: e.to_string(),
                retry_after: match &d.retry_after {
                    Some(RetryAfter::Delay(d)) => Some(*d),
                    _ => None,
                },
            },
            _ if api.status_code.is_server_error() => ChannelError::Transient {
                message: e.to_string(),
                retry_after: None,
            },
            _ => ChannelError::Permanent(e.to_string()),
        };
    }
    match e {
        HttpError::Reqwest(_) => ChannelError::Transient {
            message: e.to_string(),
            retry_after: None,
        },
        HttpError::Api(_) => ChannelError::Transient {
            message: e.to_string(),
            retry_after: None,
        },
        e => ChannelError::Permanent(e.to_string()),
    }
}
