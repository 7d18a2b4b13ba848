//! Time-boxed grants: an owner's "allow for 1 h" on one request, which lets the bridge
//! allow exactly that request again (same gateway, agent, command byte for byte, cwd,
//! host and node) until the window closes on the gateway's clock. Pure data and the one
//! rule of when a grant covers an approval; the engine holds them, the store keeps them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::approval::{Approval, ApprovalId, Decision, Kind, Responder, Window};

/// A grant's id: `g-` and 8 hex digits, short enough to type (`/revoke g-1a2b3c4d`) and
/// to carry in any button.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantId(pub String);

impl GrantId {
    /// The id for a random `n`.
    pub fn from_random(n: u32) -> GrantId {
        GrantId(format!("g-{n:08x}"))
    }

    /// Reads a typed or pressed id; anything but `g-` and 8 hex digits is no grant id.
    pub fn parse(s: &str) -> Option<GrantId> {
        let hex = s.strip_prefix("g-")?;
        (hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| GrantId(format!("g-{}", hex.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Exactly what a grant covers: every field that says what runs, where, for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The gateway the bridge is linked to (its URL).
    pub gateway: String,
    pub kind: Kind,
    pub agent_id: Option<String>,
    /// The command text, byte for byte.
    pub command: String,
    pub cwd: Option<String>,
    pub host: Option<String>,
    pub node_id: Option<String>,
}

impl Scope {
    /// The scope of `a` as raised at `gateway`.
    pub fn of(gateway: &str, a: &Approval) -> Scope {
        Scope {
            gateway: gateway.to_owned(),
            kind: a.kind,
            agent_id: a.agent_id.clone(),
            command: a.command.clone(),
            cwd: a.cwd.clone(),
            host: a.host.clone(),
            node_id: a.node_id.clone(),
        }
    }
}

/// Who ended a grant before its time, and when (the bridge's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at_ms: i64,
    /// The stable id of who revoked it, `<channel>:<user id>`.
    pub by: String,
}

/// One time-boxed grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub scope: Scope,
    /// The owner who pressed "Allow for …": the bridge allows on their behalf.
    pub by: Responder,
    pub window: Window,
    /// The approval whose prompt made it.
    pub minted_by: ApprovalId,
    /// The window, on the gateway's clock: from the minting request's `createdAtMs` for
    /// `window`. A request counts when the gateway created it inside.
    pub from_ms: i64,
    pub until_ms: i64,
    /// Approvals it allowed.
    pub uses: u32,
    pub revoked: Option<Revocation>,
}

/// Why a grant cannot be made for an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("only exec approvals can be allowed for a time: others are described by free text")]
    NotExec,
    #[error("the gateway gave the request no creation time, so no window can be measured")]
    NoGatewayTime,
}

impl Grant {
    /// The grant `owner` makes by allowing `a` for `window` through `gateway`.
    pub fn mint(
        id: GrantId,
        gateway: &str,
        a: &Approval,
        owner: Responder,
        window: Window,
    ) -> Result<Grant, GrantError> {
        if a.kind != Kind::Exec {
            return Err(GrantError::NotExec);
        }
        if a.created_at_ms <= 0 {
            return Err(GrantError::NoGatewayTime);
        }
        Ok(Grant {
            id,
            scope: Scope::of(gateway, a),
            by: owner,
            window,
            minted_by: a.id.clone(),
            from_ms: a.created_at_ms,
            until_ms: a.created_at_ms + window.ms(),
            uses: 0,
            revoked: None,
        })
    }

    /// Whether the bridge may allow `a` (raised at `gateway`) once under this grant: not
    /// revoked, the gateway created `a` inside the window, `a` offers allow-once, and its
    /// scope is this grant's, byte for byte. `required` is how many people the rules
    /// want: a grant is one person, so more is never covered.
    pub fn covers(&self, gateway: &str, a: &Approval, required: usize) -> bool {
        self.revoked.is_none()
            && required <= 1
            && a.kind == Kind::Exec
            && a.offers(Decision::AllowOnce)
            && a.created_at_ms > 0
            && (self.from_ms..self.until_ms).contains(&a.created_at_ms)
            && self.scope == Scope::of(gateway, a)
    }

    /// The grant as it was minted: no use counted, not revoked (what the store keeps as its
    /// body; uses and revocation are kept beside it).
    pub fn as_minted(&self) -> Grant {
        Grant {
            uses: 0,
            revoked: None,
            ..self.clone()
        }
    }

    /// Open at `now_ms` (any clock): not revoked and the window not over.
    pub fn open_at(&self, now_ms: i64) -> bool {
        self.revoked.is_none() && now_ms < self.until_ms
    }

    /// One line for `/grants` and the audit: what it covers, whose, how often used, until when.
    pub fn line(&self) -> String {
        let s = &self.scope;
        let mut where_ = Vec::new();
        if let Some(a) = &s.agent_id {
            where_.push(format!("agent {a}"));
        }
        if let Some(c) = &s.cwd {
            where_.push(format!("in {c}"));
        }
        match (&s.host, &s.node_id) {
            (_, Some(n)) => where_.push(format!("on node {n}")),
            (Some(h), None) => where_.push(format!("on {h}")),
            (None, None) => {}
        }
        let command: String = s.command.chars().take(120).collect();
        let cut = if command.len() < s.command.len() {
            "…"
        } else {
            ""
        };
        format!(
            "{} `{command}{cut}`{}{} — by {} via {}, used {}×, until {}",
            self.id,
            if where_.is_empty() { "" } else { " " },
            where_.join(", "),
            self.by,
            self.by.channel,
            self.uses,
            crate::time::utc(self.until_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn exec(id: &str, command: &str, created: i64) -> Approval {
        Approval::from_gateway(
            Kind::Exec,
            &json!({"id": id, "request": {"command": command, "cwd": "/srv", "host": "gateway",
                "agentId": "main", "allowedDecisions": ["allow-once", "allow-always", "deny"]},
                "createdAtMs": created}),
        )
        .unwrap()
    }

    fn owner() -> Responder {
        Responder {
            channel: "telegram".into(),
            user_id: "111".into(),
            display: Some("Ann".into()),
        }
    }

    fn hour() -> Window {
        Window::parse("1h").unwrap()
    }

    fn grant() -> Grant {
        Grant::mint(
            GrantId::from_random(0xab),
            "ws://gw",
            &exec("a", "ls -la", 1_000_000),
            owner(),
            hour(),
        )
        .unwrap()
    }

    #[test]
    fn a_grant_covers_the_same_request_inside_its_window_only() {
        let g = grant();
        assert_eq!(g.id.as_str(), "g-000000ab");
        assert_eq!(g.until_ms, 1_000_000 + 3_600_000);
        assert!(g.covers("ws://gw", &exec("b", "ls -la", 1_000_000), 1));
        assert!(g.covers("ws://gw", &exec("b", "ls -la", g.until_ms - 1), 1));
        assert!(!g.covers("ws://gw", &exec("b", "ls -la", g.until_ms), 1));
        assert!(!g.covers("ws://gw", &exec("b", "ls -la", 999_999), 1));
        // No gateway time: never covered, whatever the window.
        assert!(!g.covers("ws://gw", &exec("b", "ls -la", 0), 1));
        // More than one person required: a grant is one.
        assert!(!g.covers("ws://gw", &exec("b", "ls -la", 1_000_001), 2));
    }

    #[test]
    fn one_byte_of_difference_anywhere_in_the_scope_is_not_covered() {
        let g = grant();
        let base = exec("b", "ls -la", 1_000_001);
        assert!(g.covers("ws://gw", &base, 1));
        let changes: Vec<fn(&mut Approval)> = vec![
            |a| a.command.push(' '),
            |a| a.command = "ls -lA".into(),
            |a| a.cwd = Some("/srv/".into()),
            |a| a.cwd = None,
            |a| a.agent_id = Some("ops".into()),
            |a| a.host = Some("node".into()),
            |a| a.node_id = Some("mac".into()),
            |a| a.kind = Kind::System,
            |a| a.allowed_decisions = vec![Decision::Deny],
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut a = base.clone();
            change(&mut a);
            assert!(!g.covers("ws://gw", &a, 1), "change {i}");
        }
        assert!(!g.covers("ws://other", &base, 1));
        let mut revoked = g.clone();
        revoked.revoked = Some(Revocation {
            at_ms: 5,
            by: "telegram:111".into(),
        });
        assert!(!revoked.covers("ws://gw", &base, 1));
    }

    #[test]
    fn only_exec_requests_with_a_gateway_time_can_mint() {
        let mut plugin = exec("p", "Send email", 5);
        plugin.kind = Kind::Plugin;
        let mint = |a: &Approval| Grant::mint(GrantId::from_random(1), "g", a, owner(), hour());
        assert_eq!(mint(&plugin), Err(GrantError::NotExec));
        assert_eq!(mint(&exec("x", "ls", 0)), Err(GrantError::NoGatewayTime));
    }

    #[test]
    fn ids_read_back_only_in_their_own_form() {
        assert_eq!(
            GrantId::parse("g-1A2b3c4d"),
            Some(GrantId("g-1a2b3c4d".into()))
        );
        for bad in [
            "g-1a2b3c4",
            "g-1a2b3c4d5",
            "1a2b3c4d",
            "g-1a2b3c4z",
            "",
            "g-",
        ] {
            assert_eq!(GrantId::parse(bad), None, "{bad}");
        }
    }
}
