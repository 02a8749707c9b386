//! Who may do what on the bus, and how every receiver checks it.
//!
//! - [`Role`]: the kinds of identity (`command`, `projection`, `scheduler`, `runner`,
//!   `admin`, `client`, `setup`, `gateway`); [`ApiRole`]: what a caller of the HTTP API
//!   may do, on whose behalf the gateway signs.
//! - [`Trust`]: the identities file every service reads — each identity's name, role and
//!   NKey public key. [`Identity`]: this process's own key, found in it.
//! - Signatures ([`Identity::sign`], [`Trust::verify`]): the relay signs every event and
//!   work item, runners sign heartbeats and presence, schedulers presence, projections
//!   their positions, and the typed client every command; receivers act only on what an
//!   identity of the expected role signed.
//! - [`policy::authorize`]: which role may send which command.
//! - [`permissions`]: the NATS server permissions of each role, written into the server
//!   configuration by [`kit`].
//!
//! docs/security.md describes the threat model these implement.

mod batch;
pub mod identity;
pub mod kit;
pub mod permissions;
pub mod policy;
mod role;
mod sign;

pub use identity::{Identity, SecurityError, Signed, Trust, TrustedIdentity, VerifiedCache};

/// Who a process is, and whom it trusts.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Its own identity (NKey and entry in the identities file).
    pub identity: Identity,
    /// The identities file.
    pub trust: Trust,
}
pub use role::{ApiRole, Role};
pub use sign::{VerifyError, COMMAND_FRESHNESS, PRESENCE_FRESHNESS};
