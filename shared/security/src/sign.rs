//! Message signatures: what is signed, and the checks of a receiver.
//!
//! A signature covers, each on its own line after the tag `flexcore-sig-v1`: the subject,
//! the headers `Nats-Msg-Id`, `Flexcore-Transaction-Id`, `Flexcore-Signed-At` and
//! `Flexcore-Signer` (empty when absent), then the body's bytes. It is an Ed25519
//! signature by the signer's NKey, in `Flexcore-Signature` as unpadded base64url. A message
//! with a `Flexcore-On-Behalf-Of` header (a command the gateway sends for a caller) is
//! signed as `flexcore-sig-v2`: the same lines and that header's on one more, before the
//! body; its presence changes the tag, so the header cannot be added to or taken off a
//! signed message. Other
//! headers (`traceparent`, the correlation id, the event's position and version, which the
//! body repeats) are not covered: nothing is decided on them alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use flexcore_contracts::envelope::{
    HEADER_MSG_ID, HEADER_ON_BEHALF_OF, HEADER_SIGNATURE, HEADER_SIGNED_AT, HEADER_SIGNER, HEADER_TRANSACTION_ID,
};

use crate::Role;

/// How far a command's `Flexcore-Signed-At` may be from the receiver's clock: a
/// recorded command cannot be replayed later than this (its `command_id` makes a replay
/// within it a repeat, answered with the first reply).
pub const COMMAND_FRESHNESS: Duration = Duration::from_secs(300);
/// How far a heartbeat's, presence's or position announcement's signing time may be from
/// the receiver's clock.
pub const PRESENCE_FRESHNESS: Duration = Duration::from_secs(60);

const TAG: &[u8] = b"flexcore-sig-v1\n";
const TAG_ON_BEHALF: &[u8] = b"flexcore-sig-v2\n";

/// Why a message is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature.
    #[error("the message is not signed (no {HEADER_SIGNATURE} header)")]
    Unsigned,
    /// A header is not what it must be.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The signer is not in the identities file.
    #[error("signed by {0}, which is not in the identities file")]
    UnknownSigner(String),
    /// The signature does not match the message (forged or altered).
    #[error("the signature of {signer} does not match the message (forged or altered)")]
    BadSignature {
        /// The claimed signer's name.
        signer: String,
    },
    /// A known identity signed, but its role may not send this.
    #[error("signed by {name} (role {role}), but only {expected} may send it")]
    WrongRole {
        /// The signer's name.
        name: String,
        /// The signer's role.
        role: Role,
        /// The roles that may.
        expected: String,
    },
    /// Signed too long ago, or in the future (a replay, or clocks apart).
    #[error("signed {age_ms} ms from now, beyond the {limit_ms} ms allowed (a replay, or clocks apart)")]
    Stale {
        /// Signing time minus now, in milliseconds.
        age_ms: i64,
        /// The limit.
        limit_ms: u64,
    },
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.as_str()).unwrap_or("")
}

/// The bytes a signature covers.
pub(crate) fn signed_bytes(subject: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let on_behalf = headers.get(HEADER_ON_BEHALF_OF).map(|v| v.as_str());
    let mut bytes = Vec::with_capacity(TAG.len() + subject.len() + 200 + body.len());
    bytes.extend_from_slice(if on_behalf.is_some() { TAG_ON_BEHALF } else { TAG });
    for part in [
        subject,
        header(headers, HEADER_MSG_ID),
        header(headers, HEADER_TRANSACTION_ID),
        header(headers, HEADER_SIGNED_AT),
        header(headers, HEADER_SIGNER),
    ] {
        bytes.extend_from_slice(part.as_bytes());
        bytes.push(b'\n');
    }
    if let Some(caller) = on_behalf {
        bytes.extend_from_slice(caller.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(body);
    bytes
}

/// The signing time of `headers`, checked against now within `limit`.
pub(crate) fn check_fresh(headers: &HeaderMap, limit: Duration) -> Result<(), VerifyError> {
    let signed_at: i64 = headers
        .get(HEADER_SIGNED_AT)
        .ok_or(VerifyError::Malformed(HEADER_SIGNED_AT))?
        .as_str()
        .parse()
        .map_err(|_| VerifyError::Malformed(HEADER_SIGNED_AT))?;
    let age_ms = signed_at.saturating_sub(now_ms());
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    if age_ms.unsigned_abs() > limit_ms {
        return Err(VerifyError::Stale { age_ms, limit_ms });
    }
    Ok(())
}
