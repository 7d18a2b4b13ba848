//! The OpenClaw gateway link: protocol-4 frames, the device identity that signs the
//! handshake, and a client that keeps one authenticated connection alive, replays pending
//! approvals after every (re)connect and turns gateway events into `GatewayEvent`s. The
//! engine reaches the gateway only through the `GatewayPort` trait (resolve, history).

pub mod memory;

use async_trait::async_trait;

pub mod client;
pub mod connection;
pub mod frames;
pub mod identity;

pub use client::{Client, GatewayOptions, ProbeReport, probe};
pub use connection::{ConnectError, ConnectOptions, Connection, Hello};
pub use identity::DeviceIdentity;

use crate::approval::{Approval, ApprovalId, Decision, Kind, Outcome};
use crate::history::{HistoryMark, HistoryRow};

/// Scopes the bridge asks for; without `operator.admin` it is blind to agent approvals.
pub const NEEDED_SCOPES: [&str; 3] = ["operator.read", "operator.approvals", "operator.admin"];
/// Capabilities declared in `connect`; without them no approval event arrives.
pub const CAPS: [&str; 3] = ["exec-approvals", "plugin-approvals", "approvals"];

/// What the gateway link reports to the engine.
// `Requested` carries a whole approval; events are few and moved once, so no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    /// Authenticated. `missing` lists needed scopes the gateway did not grant: non-empty
    /// means the bridge is (partly) blind.
    Connected {
        scopes: Vec<String>,
        missing: Vec<String>,
    },
    /// Every approval pending right after a (re)connect, all kinds. Anything the engine
    /// holds as pending that is absent here ended while we were away.
    Snapshot(Vec<Approval>),
    /// A new approval.
    Requested(Approval),
    /// An approval ended at the gateway (decided by anyone, or expired).
    Ended { id: ApprovalId, outcome: Outcome },
    /// The link dropped; the client reconnects by itself.
    Disconnected { reason: String },
    /// The device must be approved by the owner before the gateway lets us in.
    PairingRequired { request_id: Option<String> },
}

/// A gateway error, classified by what the caller should do.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GatewayError {
    /// The approval is no longer pending there (APPROVAL_NOT_FOUND): terminal, never retry.
    #[error("approval not found at the gateway")]
    NotFound,
    /// Someone decided it a moment ago (APPROVAL_ALREADY_RESOLVED): terminal; the
    /// `*.approval.resolved` event carries the canonical outcome.
    #[error("approval already resolved at the gateway")]
    AlreadyResolved,
    /// Not connected, timed out, or UNAVAILABLE: nothing was decided; may retry later.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the call for another reason.
    #[error("gateway refused: {code}: {message}")]
    Rejected { code: String, message: String },
}

/// What the engine asks of the gateway: decide an approval, read back what ended there.
#[async_trait]
pub trait GatewayPort: Send + Sync + 'static {
    /// Resolves `id` with the owner's `decision`; only the engine calls it, and only after
    /// `policy::authorize` said yes.
    async fn resolve(
        &self,
        id: &ApprovalId,
        kind: Kind,
        decision: Decision,
    ) -> Result<(), GatewayError>;

    /// Raises the probe's exec approval for `command` (a marked no-op nobody runs), living
    /// `timeout_ms`; returns its id once the gateway accepted it.
    async fn raise_probe(&self, command: &str, timeout_ms: u64)
    -> Result<ApprovalId, GatewayError>;

    /// Every terminal approval of every kind the gateway recorded after `mark` (strictly:
    /// [`HistoryMark`]'s order) and resolved at or after `floor_ms`, **oldest first**, so
    /// the last row is the next mark. Empty when nothing ended since. Reads only; decides
    /// nothing. A gateway that is down or refuses the call is an error, and the caller keeps
    /// its mark. See `Client`'s implementation for paging and its cap.
    async fn history_since(
        &self,
        mark: Option<&HistoryMark>,
        floor_ms: i64,
    ) -> Result<Vec<HistoryRow>, GatewayError>;
}
