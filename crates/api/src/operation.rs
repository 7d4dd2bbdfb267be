//! Asynchronous operations: the record a mutation that must reach nodes
//! writes beside its change, the callback outbox, and the sans-IO parts of
//! callback delivery (signature, backoff schedule).
//!
//! Life of an operation (see docs/api-semantics.md, "Asynchronous
//! operations"):
//! - the API writes it `pending` in the same transaction as the change, so
//!   its key's `create_revision` is the change's store revision (shown as
//!   `revision`);
//! - flowctl compiles that revision, finds the nodes whose desired state it
//!   changed, and writes it `running` with those nodes in `waiting_on`
//!   (none: `succeeded` at once);
//! - each node's ack of a revision at or after `revision` takes it out of
//!   `waiting_on`; when none is left it is `succeeded`. A nack of a
//!   revision at or after `revision` by a waited-for node makes it
//!   `failed` with the agent's error. A node that is offline keeps it
//!   `running`.
//!
//! Every transition is a compare-and-swap on the record's `mod_revision`
//! (any flowctl replica may make it; a stale one loses and plans again).
//! An operation with a `callback_url` gets an outbox record in the same
//! transaction that ends it; the callback duty delivers it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

/// Store keys of operations and callbacks.
pub mod keys {
    /// `/stacknet/operations/<id>`: under the model's root so that
    /// flowctl's watch carries them (it advances them).
    pub const OPERATIONS: &str = "/stacknet/operations/";
    /// `/stacknet-iam/callbacks/pending/<operation id>`: callbacks to
    /// deliver (the outbox). Outside the model's root: flowctl's compiler
    /// never sees them.
    pub const CALLBACKS_PENDING: &str = "/stacknet-iam/callbacks/pending/";
    /// `/stacknet-iam/callbacks/done/<operation id>`: how a delivery ended,
    /// kept as long as the operation.
    pub const CALLBACKS_DONE: &str = "/stacknet-iam/callbacks/done/";
    /// `/stacknet-iam/callback-secrets/<tenant id>`: the tenant's callback
    /// signing secret, sealed.
    pub const CALLBACK_SECRETS: &str = "/stacknet-iam/callback-secrets/";
    /// `/stacknet-iam/last-op/<resource id>` → the id of the last
    /// operation that changed the resource (a rule's: its group's), for
    /// the resource's own programming status.
    pub const LAST_OP: &str = "/stacknet-iam/last-op/";

    pub fn operation(id: &str) -> String {
        format!("{OPERATIONS}{id}")
    }
    pub fn callback_pending(op_id: &str) -> String {
        format!("{CALLBACKS_PENDING}{op_id}")
    }
    pub fn callback_done(op_id: &str) -> String {
        format!("{CALLBACKS_DONE}{op_id}")
    }
    pub fn callback_secret(tenant_id: &str) -> String {
        format!("{CALLBACK_SECRETS}{tenant_id}")
    }
    pub fn last_op(resource_id: &str) -> String {
        format!("{LAST_OP}{resource_id}")
    }
}

/// Ended operations (and their callback records) are kept at least this
/// long, at most twice this (they are put on a lease of twice this,
/// granted anew once half of it has passed).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Accepted and stored; flowctl has not compiled it yet.
    Pending,
    /// Compiled; waiting for the nodes in `waiting_on` to ack.
    Running,
    /// Every affected node acked a revision >= `revision`.
    Succeeded,
    /// An affected node could not apply it (`error` says why).
    Failed,
}

impl OperationState {
    pub fn is_terminal(self) -> bool {
        matches!(self, OperationState::Succeeded | OperationState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// What an operation is about: the resource's kind, id and URL (known at
/// once, also for a create).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Target {
    /// `nic`, `security_group` or `security_group_rule`.
    pub kind: String,
    pub id: String,
    #[schema(example = "/v1/nics/nic-0123456789abcdef")]
    pub href: String,
}

impl Target {
    pub fn nic(id: &str) -> Target {
        Target {
            kind: "nic".into(),
            id: id.into(),
            href: format!("/v1/nics/{id}"),
        }
    }
    pub fn security_group(id: &str) -> Target {
        Target {
            kind: "security_group".into(),
            id: id.into(),
            href: format!("/v1/security-groups/{id}"),
        }
    }
    pub fn external_network(id: &str) -> Target {
        Target {
            kind: "external_network".into(),
            id: id.into(),
            href: format!("/v1/external-networks/{id}"),
        }
    }
    pub fn node(name: &str) -> Target {
        Target {
            kind: "node".into(),
            id: name.into(),
            href: format!("/v1/nodes/{name}"),
        }
    }
    pub fn subnet(id: &str) -> Target {
        Target {
            kind: "subnet".into(),
            id: id.into(),
            href: format!("/v1/subnets/{id}"),
        }
    }
    pub fn nat_gateway(id: &str) -> Target {
        Target {
            kind: "nat_gateway".into(),
            id: id.into(),
            href: format!("/v1/nat-gateways/{id}"),
        }
    }
    pub fn eip(id: &str) -> Target {
        Target {
            kind: "eip".into(),
            id: id.into(),
            href: format!("/v1/eips/{id}"),
        }
    }
    pub fn security_group_rule(group_id: &str, rule_id: &str) -> Target {
        Target {
            kind: "security_group_rule".into(),
            id: rule_id.into(),
            href: format!("/v1/security-groups/{group_id}/rules/{rule_id}"),
        }
    }

    /// The resource whose status the operation decides: the target, or
    /// for a rule its group (`/v1/security-groups/<group>/rules/<rule>`).
    pub fn status_resource(&self) -> Option<&str> {
        match self.kind.as_str() {
            "security_group_rule" => self.href.split('/').nth(3),
            _ => Some(self.id.as_str()),
        }
    }
}

/// Whether a resource's last change is on its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgrammingStatus {
    /// Its last change reached every node it concerns (or its operation
    /// ended long enough ago to be forgotten).
    Programmed,
    /// Its last change is not on every node yet (see the operation).
    Programming,
    /// A node could not apply its last change (see the operation).
    Failed,
}

impl ProgrammingStatus {
    /// The status an operation in `state` gives its resource.
    pub fn of(state: OperationState) -> ProgrammingStatus {
        match state {
            OperationState::Pending | OperationState::Running => ProgrammingStatus::Programming,
            OperationState::Succeeded => ProgrammingStatus::Programmed,
            OperationState::Failed => ProgrammingStatus::Failed,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OperationError {
    /// Machine-readable: `node_rejected` (an agent nacked the change).
    pub code: String,
    pub message: String,
}

/// How a callback's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Not delivered yet (the operation has not ended, or the receiver has
    /// not answered 2xx yet).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver did not answer 2xx for [`GIVE_UP_AFTER`].
    Abandoned,
}

/// Delivery status of an operation's callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackStatus {
    pub url: String,
    pub state: CallbackState,
    /// POSTs made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix milliseconds of the next attempt (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    /// What the last failed attempt got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix milliseconds when it was delivered or abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Unix milliseconds of the operation's end (when delivery started).
    #[serde(default)]
    pub first_attempt_at_ms: u64,
}

/// An operation as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    pub id: String,
    pub tenant_id: String,
    pub action: Action,
    pub target: Target,
    pub state: OperationState,
    /// The store revision of the change: succeeded means every affected
    /// node acked this revision or a later one. Not stored (the record's
    /// `create_revision`); filled in when answered.
    #[serde(default)]
    pub revision: u64,
    /// The nodes whose desired state the change altered (known once
    /// running).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Of `nodes`, those that have not acked yet. An offline node stays
    /// here, and the operation running, until it comes back and acks.
    #[serde(default)]
    pub waiting_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Delivery of the callback (absent without `callback_url`). Not
    /// stored with the operation; filled in when answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackStatus>,
    pub created_at: String,
    pub updated_at: String,
}

impl Operation {
    /// A new pending operation.
    pub fn new(
        id: &str,
        tenant_id: &str,
        action: Action,
        target: Target,
        callback_url: Option<String>,
        now: &str,
    ) -> Operation {
        Operation {
            id: id.into(),
            tenant_id: tenant_id.into(),
            action,
            target,
            state: OperationState::Pending,
            revision: 0,
            nodes: vec![],
            waiting_on: vec![],
            error: None,
            callback_url,
            callback: None,
            created_at: now.into(),
            updated_at: now.into(),
        }
    }

    /// What is stored: without the fields filled in when answered.
    pub fn stored(&self) -> Operation {
        Operation {
            revision: 0,
            callback: None,
            ..self.clone()
        }
    }
}

/// A callback to deliver (the outbox record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub op_id: String,
    pub tenant_id: String,
    pub status: CallbackStatus,
}

/// Checks a `callback_url`: an absolute `http` or `https` URL with a host,
/// no credentials, at most 2048 characters. The error is for the client.
pub fn check_callback_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an absolute http:// or https:// URL")?;
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not carry credentials (user@host)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        if !port.is_empty() && port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("has a bad port {port:?}"));
        }
    }
    Ok(())
}

/// The header carrying a callback's signature.
pub const SIGNATURE_HEADER: &str = "stacknet-signature";
/// The header naming the operation a callback is about (receivers may
/// deduplicate on it: a delivery whose acknowledgement was lost, or made by
/// a paused former duty holder, may come twice).
pub const DELIVERY_HEADER: &str = "stacknet-delivery";

/// `Stacknet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`: the HMAC
/// keyed with the UTF-8 bytes of the tenant's callback secret over
/// `<t>.<body bytes>`. The receiver recomputes it and compares, and refuses
/// a `t` far from its clock (the same body is signed anew, with a new `t`,
/// on every attempt).
pub fn sign_callback(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(m.finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `secret`, made
/// within `window_secs` of `now` (what a receiver does).
pub fn verify_callback(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> bool {
    let mut t = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, sig) else {
        return false;
    };
    if (now - t).abs() > window_secs {
        return false;
    }
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// The retry schedule of callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

/// A callback not delivered within this time after its operation ended is
/// abandoned (its state says so).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(72 * 3600);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after `failed` failed attempts (1: the first failure):
    /// `base · 2^(failed-1)`, at most `cap`. No jitter: there is one
    /// deliverer, and the receivers are the tenants' own.
    pub fn delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        // Huge attempt counts neither overflow nor pass the cap.
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let d = Backoff::default();
        assert_eq!(d.delay(1), Duration::from_secs(1));
        assert_eq!(d.delay(9), Duration::from_secs(256));
        assert_eq!(d.delay(10), Duration::from_secs(300));
    }

    /// The known-answer vector published in docs/api-semantics.md; computed
    /// independently with
    /// `printf '1700000000.{"id":"op-1"}' | openssl dgst -sha256 -hmac whsec-test`.
    #[test]
    fn callback_signature_known_answer() {
        let body = br#"{"id":"op-1"}"#;
        let h = sign_callback("whsec-test", 1_700_000_000, body);
        assert_eq!(h, KNOWN_ANSWER);
        assert!(verify_callback("whsec-test", &h, body, 1_700_000_100, 300));
        // Another secret, body, time, or a stale timestamp: refused.
        assert!(!verify_callback(
            "whsec-other",
            &h,
            body,
            1_700_000_000,
            300
        ));
        assert!(!verify_callback(
            "whsec-test",
            &h,
            b"{}",
            1_700_000_000,
            300
        ));
        let moved = h.replace("t=1700000000", "t=1700000001");
        assert!(!verify_callback(
            "whsec-test",
            &moved,
            body,
            1_700_000_000,
            300
        ));
        assert!(!verify_callback("whsec-test", &h, body, 1_700_000_301, 300));
        assert!(!verify_callback(
            "whsec-test",
            "v1=00",
            body,
            1_700_000_000,
            300
        ));
    }

    const KNOWN_ANSWER: &str =
        "t=1700000000,v1=10a714276f834f3803fbcffdaf3fd696b0bc2814924058006364970847a9ee35";

    #[test]
    fn callback_urls() {
        for ok in [
            "http://127.0.0.1:8000/hook",
            "https://hooks.example.com/a?b=c",
            "https://[2001:db8::1]:8443/x",
            "http://example.com",
        ] {
            assert!(check_callback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "http://",
            "http:///path",
            "http://user:pw@example.com/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://exa mple.com/",
            "",
        ] {
            assert!(check_callback_url(bad).is_err(), "{bad}");
        }
    }
}
