//! The identities file ([`Trust`]) and this process's own key ([`Identity`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use flexcore_contracts::envelope::{HEADER_SIGNATURE, HEADER_SIGNED_AT, HEADER_SIGNER};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use crate::batch::{self, Check};
use crate::sign::{check_fresh, now_ms, signed_bytes};
use crate::{Role, VerifyError};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A security setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The identities file cannot be read.
    #[error("cannot read the identities file {path} (security.identities_file): {message}")]
    File {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// An entry of the identities file is invalid.
    #[error("identities file: {0}")]
    Invalid(String),
    /// The NKey seed is not one.
    #[error("the NKey seed (nats.nkey_seed / nats.nkey_seed_file) is not a user seed (SU…): {0}")]
    Seed(String),
    /// The seed's public key is not in the identities file.
    #[error("this process's key {0} is not in the identities file: add it there (flexctl security add-identity) or use another seed")]
    NotTrusted(String),
    /// The identity has another role than the process needs.
    #[error("identity {name} has role {role}, but this process needs role {expected}")]
    WrongRole {
        /// The identity's name.
        name: String,
        /// Its role.
        role: Role,
        /// The role needed.
        expected: Role,
    },
}

/// One identity as written in the identities file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIdentity {
    /// Unique name, recorded as the actor of what it causes: `[a-z0-9][a-z0-9-]{0,62}`.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its NKey public key (`U…`, 56 characters).
    pub public_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    identities: Vec<TrustedIdentity>,
}

struct Trusted {
    identity: TrustedIdentity,
    /// Its public key, ready for signature checks.
    verifying: ed25519_dalek::VerifyingKey,
}

/// The identities file: who exists, with which role and key. Every service loads it;
/// receivers verify signatures against it.
#[derive(Clone)]
pub struct Trust {
    by_key: Arc<HashMap<String, Trusted>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.identities()).finish()
    }
}

/// The name no identity may have: the actor recorded for unsigned commands.
pub const RESERVED_NAME: &str = "unsigned";
/// Also reserved: the actor of the HTTP gateway's anonymous callers.
pub const ANONYMOUS_NAME: &str = "anonymous";

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Trust {
    /// Trust in `identities`: names and keys unique, names `[a-z0-9][a-z0-9-]{0,62}`,
    /// keys NKey user public keys.
    pub fn new(identities: Vec<TrustedIdentity>) -> Result<Self, SecurityError> {
        let mut by_key = HashMap::with_capacity(identities.len());
        let mut names = std::collections::HashSet::new();
        for identity in identities {
            if identity.name == RESERVED_NAME || identity.name == ANONYMOUS_NAME {
                return Err(SecurityError::Invalid(format!(
                    "name {:?} is reserved (the actor of unsigned commands and of the HTTP API's anonymous callers)",
                    identity.name
                )));
            }
            if !valid_name(&identity.name) {
                return Err(SecurityError::Invalid(format!(
                    "name {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
                    identity.name
                )));
            }
            if !names.insert(identity.name.clone()) {
                return Err(SecurityError::Invalid(format!(
                    "name {:?} appears twice",
                    identity.name
                )));
            }
            let verifying = KeyPair::from_public_key(&identity.public_key)
                .ok()
                .filter(|key| identity.public_key.starts_with('U') && key.public_key() == identity.public_key)
                .and_then(|_| nkeys::from_public_key(&identity.public_key).ok())
                .and_then(|(_, raw)| ed25519_dalek::VerifyingKey::from_bytes(&raw).ok())
                .ok_or_else(|| {
                    SecurityError::Invalid(format!(
                        "{}: public_key {:?} is not an NKey user public key (U…)",
                        identity.name, identity.public_key
                    ))
                })?;
            if by_key.contains_key(&identity.public_key) {
                return Err(SecurityError::Invalid(format!(
                    "{}: public key {} appears twice",
                    identity.name, identity.public_key
                )));
            }
            by_key.insert(identity.public_key.clone(), Trusted { identity, verifying });
        }
        Ok(Self {
            by_key: Arc::new(by_key),
        })
    }

    /// Reads the identities file (JSON: `{"identities": [{"name", "role", "public_key"}]}`).
    pub fn load(path: &Path) -> Result<Self, SecurityError> {
        let file_error = |message: String| SecurityError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let file: TrustFile = serde_json::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        Self::new(file.identities)
    }

    /// The identities file's text for `identities`.
    pub fn file_text(identities: &[TrustedIdentity]) -> String {
        let file = TrustFile {
            identities: identities.to_vec(),
        };
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// Every identity, in no particular order.
    pub fn identities(&self) -> impl Iterator<Item = &TrustedIdentity> {
        self.by_key.values().map(|t| &t.identity)
    }

    /// The identity of `public_key`.
    pub fn find(&self, public_key: &str) -> Option<&TrustedIdentity> {
        self.by_key.get(public_key).map(|t| &t.identity)
    }

    /// [`Self::verify`] of a received core NATS message (also a JetStream one, through
    /// `Deref`): its subject, headers and payload.
    pub fn verify_message(
        &self,
        message: &async_nats::Message,
        roles: &[Role],
        freshness: Option<Duration>,
    ) -> Result<&TrustedIdentity, VerifyError> {
        self.check_message(message, roles, freshness, None)
    }

    /// Checks that `body` on `subject` with `headers` was signed by a known identity whose
    /// role is one of `roles`, within `freshness` of now if given; returns who signed.
    pub fn verify(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
        roles: &[Role],
        freshness: Option<Duration>,
    ) -> Result<&TrustedIdentity, VerifyError> {
        self.check(subject, headers, body, roles, freshness, None)
    }

    /// [`Self::verify_message`] without freshness, remembering what verified in `cache`:
    /// the same message seen again (by another consumer in this process) costs a hash, not
    /// an Ed25519 check.
    pub fn verify_message_cached(
        &self,
        message: &async_nats::Message,
        roles: &[Role],
        cache: &VerifiedCache,
    ) -> Result<&TrustedIdentity, VerifyError> {
        self.check_message(message, roles, None, Some(cache))
    }

    fn check_message(
        &self,
        message: &async_nats::Message,
        roles: &[Role],
        freshness: Option<Duration>,
        cache: Option<&VerifiedCache>,
    ) -> Result<&TrustedIdentity, VerifyError> {
        let headers = message.headers.as_ref();
        self.check(
            message.subject.as_str(),
            headers,
            &message.payload,
            roles,
            freshness,
            cache,
        )
    }

    /// Checks each of `messages` as [`Self::verify`] does (with `cache` as
    /// [`Self::verify_message_cached`] when given), checking their signatures together in
    /// one batch equation: about half the CPU of checking them one by one.
    pub fn verify_all<'m>(
        &self,
        messages: &[Signed<'m>],
        roles: &[Role],
        freshness: Option<Duration>,
        cache: Option<&VerifiedCache>,
    ) -> Vec<Result<&TrustedIdentity, VerifyError>> {
        let claims: Vec<Result<Claim<'_>, VerifyError>> = messages.iter().map(|m| self.claim(m, cache)).collect();
        let checks: Vec<&Check> = claims
            .iter()
            .filter_map(|claim| claim.as_ref().ok()?.check.as_ref())
            .collect();
        let mut verdicts = batch::verify_all(&checks).into_iter();
        claims
            .into_iter()
            .zip(messages)
            .map(|(claim, message)| {
                let claim = claim?;
                let holds = claim.check.is_none() || verdicts.next().unwrap_or(false);
                claim.settle(holds, message.headers, roles, freshness, cache)
            })
            .collect()
    }

    fn check(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
        roles: &[Role],
        freshness: Option<Duration>,
        cache: Option<&VerifiedCache>,
    ) -> Result<&TrustedIdentity, VerifyError> {
        let message = Signed { subject, headers, body };
        let claim = self.claim(&message, cache)?;
        let holds = claim.check.as_ref().is_none_or(Check::holds);
        claim.settle(holds, headers, roles, freshness, cache)
    }

    /// Who `message` claims to be signed by, and the signature check that would prove it
    /// (none when `cache` knows it verified).
    fn claim(&self, message: &Signed<'_>, cache: Option<&VerifiedCache>) -> Result<Claim<'_>, VerifyError> {
        let headers = message.headers.ok_or(VerifyError::Unsigned)?;
        let signature = headers.get(HEADER_SIGNATURE).ok_or(VerifyError::Unsigned)?;
        let signer = headers
            .get(HEADER_SIGNER)
            .ok_or(VerifyError::Malformed(HEADER_SIGNER))?
            .as_str();
        let trusted = self
            .by_key
            .get(signer)
            .ok_or_else(|| VerifyError::UnknownSigner(signer.to_owned()))?;
        let signed = signed_bytes(message.subject, headers, message.body);
        // Everything the signature covers (the signer included) and the signature.
        let cache_key = cache.map(|_| VerifiedCache::key(&signed, signature.as_str()));
        if matches!((cache, &cache_key), (Some(cache), Some(key)) if cache.contains(key)) {
            return Ok(Claim {
                trusted,
                check: None,
                cache_key: None,
            });
        }
        let signature = BASE64
            .decode(signature.as_str())
            .ok()
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .ok_or(VerifyError::Malformed(HEADER_SIGNATURE))?;
        Ok(Claim {
            trusted,
            check: Some(Check {
                signed,
                signature,
                key: trusted.verifying,
            }),
            cache_key,
        })
    }
}

/// A received message to check: its subject, headers and body.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The subject it came on.
    pub subject: &'a str,
    /// Its headers (a signed message has them).
    pub headers: Option<&'a HeaderMap>,
    /// Its body.
    pub body: &'a [u8],
}

impl<'a> From<&'a async_nats::Message> for Signed<'a> {
    fn from(message: &'a async_nats::Message) -> Self {
        Self {
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            body: &message.payload,
        }
    }
}

/// A message's claimed signer and the check of its signature (none when a cache
/// remembers it verified).
struct Claim<'t> {
    trusted: &'t Trusted,
    check: Option<Check>,
    cache_key: Option<[u8; 32]>,
}

impl<'t> Claim<'t> {
    /// The signer, once the signature `holds`, if its role is one of `roles` and it
    /// signed within `freshness`.
    fn settle(
        self,
        holds: bool,
        headers: Option<&HeaderMap>,
        roles: &[Role],
        freshness: Option<Duration>,
        cache: Option<&VerifiedCache>,
    ) -> Result<&'t TrustedIdentity, VerifyError> {
        let trusted = self.trusted;
        if !holds {
            return Err(VerifyError::BadSignature {
                signer: trusted.identity.name.clone(),
            });
        }
        if let (Some(cache), Some(key)) = (cache, self.cache_key) {
            cache.insert(key);
        }
        if !roles.contains(&trusted.identity.role) {
            return Err(VerifyError::WrongRole {
                name: trusted.identity.name.clone(),
                role: trusted.identity.role,
                expected: roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or "),
            });
        }
        if let (Some(limit), Some(headers)) = (freshness, headers) {
            check_fresh(headers, limit)?;
        }
        Ok(&trusted.identity)
    }
}

/// Signatures that verified, remembered by a SHA-256 of everything they cover and the
/// signature itself (so a changed byte anywhere misses), at most `capacity` of them (the
/// oldest are forgotten). Shared by the consumers of one process that each receive the
/// same messages, e.g. the projection service's views.
#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    seen: std::sync::Mutex<Seen>,
}

/// The remembered keys, and their order of arrival (oldest first).
type Seen = (
    std::collections::HashSet<[u8; 32]>,
    std::collections::VecDeque<[u8; 32]>,
);

impl VerifiedCache {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: std::sync::Mutex::default(),
        }
    }

    fn key(signed: &[u8], signature: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update((signed.len() as u64).to_be_bytes());
        hash.update(signed);
        hash.update(signature.as_bytes());
        hash.finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .contains(key)
    }

    fn insert(&self, key: [u8; 32]) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *seen;
        if set.insert(key) {
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

/// This process's identity: its NKey (for logging in to NATS and signing) and its entry
/// in the identities file.
#[derive(Clone)]
pub struct Identity {
    entry: TrustedIdentity,
    key: Arc<KeyPair>,
    seed: Arc<str>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.entry.name)
            .field("role", &self.entry.role)
            .field("public_key", &self.entry.public_key)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity of `seed` (an NKey user seed, `SU…`), which must be in `trust`.
    pub fn from_seed(seed: &str, trust: &Trust) -> Result<Self, SecurityError> {
        let seed = seed.trim();
        if !seed.starts_with("SU") {
            return Err(SecurityError::Seed("it does not start with SU".to_owned()));
        }
        let key = KeyPair::from_seed(seed).map_err(|e| SecurityError::Seed(e.to_string()))?;
        let public_key = key.public_key();
        let entry = trust
            .find(&public_key)
            .cloned()
            .ok_or(SecurityError::NotTrusted(public_key))?;
        Ok(Self {
            entry,
            key: Arc::new(key),
            seed: seed.into(),
        })
    }

    /// This identity, provided it has `role`.
    pub fn require(self, role: Role) -> Result<Self, SecurityError> {
        if self.entry.role == role {
            Ok(self)
        } else {
            Err(SecurityError::WrongRole {
                name: self.entry.name,
                role: self.entry.role,
                expected: role,
            })
        }
    }

    /// The name (recorded as the actor).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.entry.role
    }

    /// The NKey public key.
    pub fn public_key(&self) -> &str {
        &self.entry.public_key
    }

    /// The NKey seed, to log in to NATS with. Never log it.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The inbox prefix of this identity's connections (`_INBOX.<name>`): its NATS
    /// permissions let it receive replies only there, so no other identity reads them.
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(&self.entry.name)
    }

    /// Signs `body` on `subject`: sets `Flexcore-Signer`, `Flexcore-Signed-At` (now) and
    /// `Flexcore-Signature` in `headers`.
    pub fn sign(&self, subject: &str, headers: &mut HeaderMap, body: &[u8]) {
        headers.insert(HEADER_SIGNER, self.entry.public_key.as_str());
        headers.insert(HEADER_SIGNED_AT, now_ms().to_string().as_str());
        // Signing with a parsed seed cannot fail (only a public-only key pair cannot sign).
        let signature = self.key.sign(&signed_bytes(subject, headers, body)).unwrap_or_default();
        headers.insert(HEADER_SIGNATURE, BASE64.encode(signature).as_str());
    }

    /// Headers holding only the signature of `body` on `subject` (for a core NATS publish).
    pub fn signed_headers(&self, subject: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.sign(subject, &mut headers, body);
        headers
    }

    /// The bytes the headers [`Self::sign`] adds take on the wire, at most.
    pub const SIGNATURE_WIRE_BYTES: usize =
        (HEADER_SIGNER.len() + 4 + 56) + (HEADER_SIGNED_AT.len() + 4 + 20) + (HEADER_SIGNATURE.len() + 4 + 86);
}

/// The inbox prefix of the identity called `name`.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::COMMAND_FRESHNESS;

    fn trust_of(roles: &[(&str, Role)]) -> (Trust, Vec<KeyPair>) {
        let keys: Vec<KeyPair> = roles.iter().map(|_| KeyPair::new_user()).collect();
        let trust = Trust::new(
            roles
                .iter()
                .zip(&keys)
                .map(|((name, role), key)| TrustedIdentity {
                    name: (*name).to_owned(),
                    role: *role,
                    public_key: key.public_key(),
                })
                .collect(),
        )
        .unwrap();
        (trust, keys)
    }

    fn seed(key: &KeyPair) -> String {
        key.seed().unwrap()
    }

    #[test]
    fn the_caller_a_gateway_signs_for_cannot_be_added_removed_or_changed() {
        use flexcore_contracts::envelope::HEADER_ON_BEHALF_OF;
        let (trust, keys) = trust_of(&[("gateway", Role::Gateway)]);
        let gateway = Identity::from_seed(&seed(&keys[0]), &trust).unwrap();
        let (subject, body) = ("flexcore.cmd.run.request", b"{}".as_slice());
        let verify = |h: &HeaderMap| trust.verify(subject, Some(h), body, &[Role::Gateway], None).map(|_| ());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ON_BEHALF_OF, "operator:key:ci");
        gateway.sign(subject, &mut headers, body);
        assert!(verify(&headers).is_ok());
        let mut changed = headers.clone();
        changed.insert(HEADER_ON_BEHALF_OF, "admin:key:ci");
        assert!(matches!(verify(&changed), Err(VerifyError::BadSignature { .. })));
        let mut removed = HeaderMap::new();
        for (name, values) in headers.iter() {
            if AsRef::<str>::as_ref(name) != HEADER_ON_BEHALF_OF {
                for value in values {
                    removed.append(name.clone(), value.clone());
                }
            }
        }
        assert!(matches!(verify(&removed), Err(VerifyError::BadSignature { .. })));
        // Signed without a caller, one added later does not verify.
        let mut plain = HeaderMap::new();
        gateway.sign(subject, &mut plain, body);
        assert!(verify(&plain).is_ok());
        plain.insert(HEADER_ON_BEHALF_OF, "admin:anonymous");
        assert!(matches!(verify(&plain), Err(VerifyError::BadSignature { .. })));
    }

    #[test]
    fn the_cache_remembers_only_exactly_what_verified() {
        let (trust, keys) = trust_of(&[("command", Role::Command), ("app", Role::Client)]);
        let command = Identity::from_seed(&seed(&keys[0]), &trust).unwrap();
        let cache = VerifiedCache::new(2);
        let message = |subject: &str, body: &'static [u8], headers: HeaderMap| async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::from_static(body),
            headers: Some(headers),
            status: None,
            description: None,
            length: body.len(),
        };
        let mut headers = HeaderMap::new();
        command.sign("flexcore.evt.run.x.requested", &mut headers, b"{\"a\":1}");
        let good = message("flexcore.evt.run.x.requested", b"{\"a\":1}", headers.clone());
        for _ in 0..2 {
            let who = trust.verify_message_cached(&good, &[Role::Command], &cache).unwrap();
            assert_eq!(who.name, "command");
        }
        // The cached signature on another body, subject or role does not pass.
        let forged = message("flexcore.evt.run.x.requested", b"{\"a\":2}", headers.clone());
        assert!(matches!(
            trust.verify_message_cached(&forged, &[Role::Command], &cache),
            Err(VerifyError::BadSignature { .. })
        ));
        let moved = message("flexcore.evt.run.y.requested", b"{\"a\":1}", headers);
        assert!(trust.verify_message_cached(&moved, &[Role::Command], &cache).is_err());
        assert!(matches!(
            trust.verify_message_cached(&good, &[Role::Client], &cache),
            Err(VerifyError::WrongRole { .. })
        ));
        // Bounded: the oldest entries are forgotten, and verify again.
        for n in 0..3 {
            let mut headers = HeaderMap::new();
            let subject = format!("flexcore.evt.run.{n}.requested");
            command.sign(&subject, &mut headers, b"{}");
            trust
                .verify_message_cached(&message(&subject, b"{}", headers), &[Role::Command], &cache)
                .unwrap();
        }
        assert_eq!(cache.seen.lock().unwrap().1.len(), 2);
        assert!(trust.verify_message_cached(&good, &[Role::Command], &cache).is_ok());
    }

    #[test]
    fn a_signed_message_verifies_and_names_its_signer() {
        let (trust, keys) = trust_of(&[("runner-1", Role::Runner), ("app", Role::Client)]);
        let runner = Identity::from_seed(&seed(&keys[0]), &trust).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "m1");
        runner.sign("flexcore.cmd.run.claim", &mut headers, b"{}");
        let who = trust
            .verify(
                "flexcore.cmd.run.claim",
                Some(&headers),
                b"{}",
                &[Role::Runner],
                Some(COMMAND_FRESHNESS),
            )
            .unwrap();
        assert_eq!(who.name, "runner-1");
    }

    #[test]
    fn altered_messages_and_wrong_roles_are_refused() {
        let (trust, keys) = trust_of(&[("runner-1", Role::Runner), ("app", Role::Client)]);
        let app = Identity::from_seed(&seed(&keys[1]), &trust).unwrap();
        let mut headers = HeaderMap::new();
        app.sign("flexcore.cmd.run.claim", &mut headers, b"{\"a\":1}");
        let verify = |subject: &str, headers: &HeaderMap, body: &[u8], roles: &[Role]| {
            trust
                .verify(subject, Some(headers), body, roles, None)
                .map(|i| i.name.clone())
        };
        assert!(matches!(
            verify("flexcore.cmd.run.claim", &headers, b"{\"a\":2}", &[Role::Client]),
            Err(VerifyError::BadSignature { .. })
        ));
        assert!(matches!(
            verify("flexcore.cmd.run.succeed", &headers, b"{\"a\":1}", &[Role::Client]),
            Err(VerifyError::BadSignature { .. })
        ));
        assert!(matches!(
            verify("flexcore.cmd.run.claim", &headers, b"{\"a\":1}", &[Role::Runner]),
            Err(VerifyError::WrongRole { .. })
        ));
        // The signer header swapped for another trusted key: the signature no longer fits.
        let mut swapped = headers.clone();
        swapped.insert(HEADER_SIGNER, keys[0].public_key().as_str());
        assert!(matches!(
            verify("flexcore.cmd.run.claim", &swapped, b"{\"a\":1}", &[Role::Runner]),
            Err(VerifyError::BadSignature { .. })
        ));
        // A key not in the file, and no signature at all.
        let stranger = KeyPair::new_user();
        let mut forged = headers.clone();
        forged.insert(HEADER_SIGNER, stranger.public_key().as_str());
        assert!(matches!(
            verify("flexcore.cmd.run.claim", &forged, b"{\"a\":1}", &[Role::Client]),
            Err(VerifyError::UnknownSigner(_))
        ));
        assert_eq!(
            trust
                .verify("s", Some(&HeaderMap::new()), b"", &[Role::Client], None)
                .err(),
            Some(VerifyError::Unsigned)
        );
        assert_eq!(
            trust.verify("s", None, b"", &[Role::Client], None).err(),
            Some(VerifyError::Unsigned)
        );
    }

    #[test]
    fn old_signatures_are_stale() {
        let (trust, keys) = trust_of(&[("app", Role::Client)]);
        let app = Identity::from_seed(&seed(&keys[0]), &trust).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_SIGNER, app.public_key());
        headers.insert(HEADER_SIGNED_AT, (now_ms() - 600_000).to_string().as_str());
        let signature = keys[0].sign(&signed_bytes("s", &headers, b"x")).unwrap();
        headers.insert(HEADER_SIGNATURE, BASE64.encode(signature).as_str());
        assert!(trust.verify("s", Some(&headers), b"x", &[Role::Client], None).is_ok());
        assert!(matches!(
            trust.verify("s", Some(&headers), b"x", &[Role::Client], Some(COMMAND_FRESHNESS)),
            Err(VerifyError::Stale { .. })
        ));
    }

    #[test]
    fn the_file_is_checked() {
        let key = KeyPair::new_user().public_key();
        let entry = |name: &str, public_key: &str| TrustedIdentity {
            name: name.to_owned(),
            role: Role::Client,
            public_key: public_key.to_owned(),
        };
        assert!(Trust::new(vec![entry("Bad Name", &key)]).is_err());
        assert!(Trust::new(vec![entry("a", &key), entry("a", &KeyPair::new_user().public_key())]).is_err());
        assert!(Trust::new(vec![entry("a", &key), entry("b", &key)]).is_err());
        assert!(Trust::new(vec![entry("a", &KeyPair::new_account().public_key())]).is_err());
        assert!(Trust::new(vec![entry("a", "UNOTAKEY")]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identities.json");
        std::fs::write(&path, Trust::file_text(&[entry("a", &key)])).unwrap();
        assert_eq!(Trust::load(&path).unwrap().find(&key).unwrap().name, "a");
    }

    #[test]
    fn a_seed_must_be_trusted_and_have_the_role() {
        let (trust, keys) = trust_of(&[("sched", Role::Scheduler)]);
        assert!(matches!(
            Identity::from_seed(&seed(&KeyPair::new_user()), &trust),
            Err(SecurityError::NotTrusted(_))
        ));
        assert!(matches!(
            Identity::from_seed("nonsense", &trust),
            Err(SecurityError::Seed(_))
        ));
        let identity = Identity::from_seed(&seed(&keys[0]), &trust).unwrap();
        assert!(identity.clone().require(Role::Scheduler).is_ok());
        assert!(matches!(
            identity.require(Role::Runner),
            Err(SecurityError::WrongRole { .. })
        ));
    }

    /// Every way a message can fail, among good ones.
    fn mixed_batch(trust: &Trust, keys: &[KeyPair]) -> Vec<(String, HeaderMap, Vec<u8>)> {
        let command = Identity::from_seed(&seed(&keys[0]), trust).unwrap();
        let app = Identity::from_seed(&seed(&keys[1]), trust).unwrap();
        let stranger_key = KeyPair::new_user();
        let stranger = Identity {
            entry: TrustedIdentity {
                name: "stranger".into(),
                role: Role::Command,
                public_key: stranger_key.public_key(),
            },
            seed: Arc::from(seed(&stranger_key)),
            key: Arc::new(stranger_key),
        };
        let mut out = Vec::new();
        for i in 0..12 {
            let subject = format!("flexcore.evt.run.{i}.requested");
            let body = format!("{{\"n\":{i}}}").into_bytes();
            let mut headers = HeaderMap::new();
            match i {
                3 => app.sign(&subject, &mut headers, &body),
                5 => stranger.sign(&subject, &mut headers, &body),
                7 => {
                    command.sign(&subject, &mut headers, &body);
                    headers.insert(HEADER_SIGNATURE, "not base64!");
                }
                _ => command.sign(&subject, &mut headers, &body),
            }
            let body = if i == 9 { b"{\"n\":-9}".to_vec() } else { body };
            out.push((subject, headers, body));
        }
        out.push(("flexcore.evt.unsigned".into(), HeaderMap::new(), b"{}".to_vec()));
        out
    }

    fn verdict(result: Result<&TrustedIdentity, VerifyError>) -> String {
        match result {
            Ok(identity) => format!("ok {}", identity.name),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_batch_gives_each_message_the_verdict_of_a_single_check() {
        let (trust, keys) = trust_of(&[("command", Role::Command), ("app", Role::Client)]);
        let batch = mixed_batch(&trust, &keys);
        let signed: Vec<Signed<'_>> = batch
            .iter()
            .map(|(subject, headers, body)| Signed {
                subject,
                headers: Some(headers),
                body,
            })
            .collect();
        let alone: Vec<String> = signed
            .iter()
            .map(|m| verdict(trust.verify(m.subject, m.headers, m.body, &[Role::Command], None)))
            .collect();
        assert_eq!(alone.iter().filter(|v| v.starts_with("ok")).count(), 8, "{alone:#?}");
        for (i, expected) in [
            (3, "role client"),
            (5, "not in the identities file"),
            (7, "malformed"),
            (9, "forged"),
        ] {
            assert!(alone[i].contains(expected), "#{i}: {}", alone[i]);
        }
        assert!(alone[12].contains("not signed"), "{}", alone[12]);
        let together: Vec<String> = trust
            .verify_all(&signed, &[Role::Command], None, None)
            .into_iter()
            .map(verdict)
            .collect();
        assert_eq!(together, alone);
        // Through a cache: twice, the second time from memory, with the same verdicts.
        let cache = VerifiedCache::new(64);
        for _ in 0..2 {
            let cached: Vec<String> = trust
                .verify_all(&signed, &[Role::Command], None, Some(&cache))
                .into_iter()
                .map(verdict)
                .collect();
            assert_eq!(cached, alone);
        }
        assert_eq!(
            cache.seen.lock().unwrap().1.len(),
            9,
            "what verified, the client's message too"
        );
    }
}
