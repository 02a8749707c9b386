//! Who is calling: API keys (hashed at rest, in a file `flexctl api-key` maintains) and
//! JWT bearer tokens (HS256 with a shared secret, RS256/ES256 with a JWKS file or URL), each
//! mapped to one of the API roles `viewer`, `operator`, `admin`; anonymous callers only
//! where an operator turned that on (`gateway.anonymous_role`, for local development).
//!
//! A principal's name (`key:<name>`, `jwt:<sub>`, `anonymous`) is what the command service
//! records as the actor of its commands: the gateway signs each command with its own NKey
//! and names the principal in the signed `Flexcore-On-Behalf-Of` header; a header a client
//! sends is never used.
//!
//! API keys are `fck_` and 43 base64url characters (256 random bits); the file holds only
//! their SHA-256 (a key is as strong as a random 256-bit secret, so a fast hash leaves
//! nothing to brute-force). The file is re-read when it changes, so `flexctl api-key
//! revoke` takes effect within [`RELOAD_EVERY`] without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use flexcore_security::ApiRole;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How often the API keys file is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// The prefix of every API key.
pub const KEY_PREFIX: &str = "fck_";
/// Longest principal name (`key:<name>`, `jwt:<sub>`): what a command may name as its caller.
pub const MAX_PRINCIPAL: usize = 200;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<name>`, `jwt:<sub>` or `anonymous`: the actor of its commands.
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
}

impl Principal {
    /// Whether it may do what needs `role`.
    pub fn may(&self, role: ApiRole) -> bool {
        self.role >= role
    }
}

/// Why a request is not authenticated (always a 401; the message never holds the
/// credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header and anonymous access is off.
    #[error("authentication required: send `Authorization: Bearer <API key or JWT>`")]
    Missing,
    /// Anonymous access is on, but the request names a host that is not a loopback one.
    #[error("authentication required: anonymous access serves only localhost, 127.0.0.1 and [::1]; send `Authorization: Bearer <API key or JWT>`")]
    AnonymousNotLoopback,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <API key or JWT>`")]
    Malformed,
    /// No such key (never issued, or revoked).
    #[error("unknown or revoked API key")]
    UnknownKey,
    /// A JWT that does not validate.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// JWTs are not accepted here.
    #[error("bearer tokens (JWT) are not accepted by this gateway; use an API key")]
    JwtOff,
}

/// One API key in the keys file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Its name (unique): the principal is `key:<name>`.
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// The API keys file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Every key.
    pub keys: Vec<KeyEntry>,
}

impl KeysFile {
    /// Reads `path` (a missing file is an empty one).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("API keys file {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("reading API keys file {}: {e}", path.display())),
        }
    }

    /// Writes it to `path` (0600, through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Adds a key called `name` with `role`; returns the key (shown once, never stored).
    pub fn create(&mut self, name: &str, role: ApiRole) -> anyhow::Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            anyhow::bail!("an API key's name is 1 to 64 of A-Z a-z 0-9 - _ . (got {name:?})");
        }
        if self.keys.iter().any(|k| k.name == name) {
            anyhow::bail!("an API key called {name:?} exists; revoke it first or choose another name");
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let key = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        self.keys.push(KeyEntry {
            name: name.to_owned(),
            role,
            hash: hash_key(&key),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        Ok(key)
    }

    /// Removes the key called `name`; false if there was none.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| k.name != name);
        self.keys.len() != before
    }
}

/// `sha256:<hex>` of an API key.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// What tells one version of the keys file from another.
type FileStamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The API keys, by hash, re-read when their file changes.
#[derive(Debug)]
struct Keys {
    path: PathBuf,
    state: Mutex<KeysState>,
}

#[derive(Debug)]
struct KeysState {
    by_hash: HashMap<String, Principal>,
    /// The file's modification time, size and inode when read: any change re-reads it
    /// (a rewrite that keeps the time, as `cp -p` does, changes the size or the inode).
    modified: Option<FileStamp>,
    checked: Instant,
}

impl Keys {
    fn load(path: PathBuf) -> anyhow::Result<Self> {
        let (by_hash, modified) = Self::read(&path)?;
        Ok(Self {
            path,
            state: Mutex::new(KeysState {
                by_hash,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    fn read(path: &Path) -> anyhow::Result<(HashMap<String, Principal>, Option<FileStamp>)> {
        let modified = stamp(path);
        let file = KeysFile::read(path)?;
        let by_hash = file
            .keys
            .into_iter()
            .map(|k| {
                (
                    k.hash,
                    Principal {
                        name: format!("key:{}", k.name),
                        role: k.role,
                    },
                )
            })
            .collect();
        Ok((by_hash, modified))
    }

    fn find(&self, key: &str) -> Option<Principal> {
        let mut state = self.state.lock();
        if state.checked.elapsed() >= RELOAD_EVERY {
            state.checked = Instant::now();
            let modified = stamp(&self.path);
            if modified != state.modified {
                match Self::read(&self.path) {
                    Ok((by_hash, modified)) => {
                        tracing::info!(path = %self.path.display(), keys = by_hash.len(), "API keys reloaded");
                        state.by_hash = by_hash;
                        state.modified = modified;
                    }
                    // Keep the keys known: a half-written file must not lock everyone out.
                    Err(error) => tracing::error!(%error, "API keys file unreadable; keeping the keys loaded before"),
                }
            }
        }
        state.by_hash.get(&hash_key(key)).cloned()
    }
}

/// Why a token was refused, in a few words (the library's own text names its internals).
fn jwt_refusal(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is meant for another audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks claim `{claim}`"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "the token's algorithm is not accepted".into(),
        _ => "the token is malformed".into(),
    }
}

/// A public key of the identity provider: its `kid`, algorithm and key.
pub type JwkKey = (Option<String>, Algorithm, DecodingKey);

/// How JWTs are checked.
struct Jwt {
    /// HS256 with the shared secret.
    hs256: Option<DecodingKey>,
    /// RS256/ES256 keys by `kid` (and those without one): from the JWKS file, or the
    /// latest fetch of the JWKS URL.
    jwks: parking_lot::RwLock<Arc<Vec<JwkKey>>>,
    /// The JWKS URL, when the keys come from one.
    remote: Option<Remote>,
    issuer: Option<String>,
    audience: Option<String>,
}

/// Where a JWKS URL's keys come from and when to fetch them again.
struct Remote {
    url: reqwest::Url,
    every: Duration,
    /// Whether a fetch has succeeded (the gateway is ready only then).
    loaded: std::sync::atomic::AtomicBool,
    /// Woken by a token naming a key not in the set (a rotation), at most once a minute.
    unknown_kid: tokio::sync::Notify,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks.read().len())
            .field("jwks_url", &self.remote.as_ref().map(|r| r.url.as_str()))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The RS256/ES256 keys of a JWKS document (`source` names it in errors).
pub fn parse_jwks(bytes: &[u8], source: &str) -> anyhow::Result<Vec<JwkKey>> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Signing keys only, of the algorithms taken: RSA for RS256, P-256 for ES256 (a
        // key whose `alg` names another algorithm is skipped).
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let algorithm = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let named = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        if named.is_some_and(|a| a != format!("{algorithm:?}")) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    if keys.is_empty() {
        anyhow::bail!("{source}: no RSA or EC key in it");
    }
    Ok(keys)
}

/// Whether a host name (without port; an IPv6 address with or without brackets) is a
/// loopback one: `localhost`, `127.0.0.0/8`, `::1`.
pub fn loopback_name(host: &str) -> bool {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A JWKS URL: `https://`, or `http://` to a loopback address (a sidecar, a test).
pub fn jwks_url(text: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(text).map_err(|e| anyhow::anyhow!("gateway.jwt_jwks_url {text:?}: {e}"))?;
    let loopback = url.host_str().is_some_and(loopback_name);
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => anyhow::bail!(
            "gateway.jwt_jwks_url {text:?}: the identity provider's keys must come over https:// (http:// only from a loopback address)"
        ),
    }
}

/// Largest JWKS document fetched.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Shortest time between two fetches prompted by unknown key ids.
const UNKNOWN_KID_EVERY: Duration = Duration::from_secs(60);

impl Remote {
    /// Fetches the JWKS once.
    async fn fetch(&self, http: &reqwest::Client) -> anyhow::Result<Vec<JwkKey>> {
        let mut response = http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("fetching {}: {e}", self.url))?;
        if !response.status().is_success() {
            anyhow::bail!("fetching {}: HTTP {}", self.url, response.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.url))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                anyhow::bail!("{} is larger than {MAX_JWKS_BYTES} bytes", self.url);
            }
        }
        parse_jwks(&body, self.url.as_str())
    }
}

/// Keeps the keys of a JWKS URL fresh until `shutdown`: fetched at once (again within
/// seconds while that fails), then every `gateway.jwt_jwks_refresh_seconds`, and early
/// (at most once a minute) when a token names a key id the set lacks. A failed refresh
/// keeps the keys it had.
async fn refresh_jwks(jwt: Arc<Jwt>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(remote) = &jwt.remote else { return };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client for gateway.jwt_jwks_url");
            return;
        }
    };
    let mut retry = Duration::from_secs(1);
    loop {
        let last = Instant::now();
        let wait = match remote.fetch(&http).await {
            Ok(keys) => {
                tracing::info!(url = %remote.url, keys = keys.len(), "JWKS loaded");
                *jwt.jwks.write() = Arc::new(keys);
                remote.loaded.store(true, std::sync::atomic::Ordering::Release);
                retry = Duration::from_secs(1);
                remote.every
            }
            Err(error) => {
                let wait = if remote.loaded.load(std::sync::atomic::Ordering::Acquire) {
                    remote.every.min(Duration::from_secs(60))
                } else {
                    retry
                };
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_s = wait.as_secs(),
                    "JWKS not fetched; keeping the keys held"
                );
                retry = (retry * 2).min(Duration::from_secs(30));
                wait
            }
        };
        let early = async {
            remote.unknown_kid.notified().await;
            tokio::time::sleep_until((last + UNKNOWN_KID_EVERY.min(remote.every)).into()).await;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = early => {}
        }
    }
}

/// The claims the gateway reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

impl Jwt {
    fn check(&self, token: &str) -> Result<Principal, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(jwt_refusal(&e));
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let (algorithm, key) = match header.alg {
            Algorithm::HS256 => (
                Algorithm::HS256,
                self.hs256
                    .as_ref()
                    .ok_or_else(|| AuthError::InvalidToken("HS256 tokens are not accepted here".into()))?,
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let keys = self.jwks.read().clone();
                let mut candidates = keys
                    .iter()
                    .filter(|(kid, alg, _)| *alg == header.alg && (header.kid.is_none() || *kid == header.kid))
                    .peekable();
                if candidates.peek().is_none() {
                    if let Some(remote) = &self.remote {
                        remote.unknown_kid.notify_one();
                    }
                    return Err(AuthError::InvalidToken(
                        "no key in the JWKS matches the token's kid and alg".into(),
                    ));
                }
                // With a kid, its key; without one, every key of the algorithm in turn.
                let mut last = None;
                for (_, alg, key) in candidates {
                    match self.decode(token, *alg, key) {
                        Ok(principal) => return Ok(principal),
                        Err(error) => last = Some(error),
                    }
                }
                return Err(last.unwrap_or(AuthError::InvalidToken("no key verifies the token".into())));
            }
            other => return Err(AuthError::InvalidToken(format!("algorithm {other:?} is not accepted"))),
        };
        self.decode(token, algorithm, key)
    }

    fn decode(&self, token: &str, algorithm: Algorithm, key: &DecodingKey) -> Result<Principal, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(jwt_refusal(&e));
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = 30;
        // A configured issuer or audience must be present, not only right when present.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(invalid)?;
        let claims = data.claims;
        let role = claims
            .role
            .iter()
            .chain(claims.roles.iter())
            .filter_map(|r| r.parse::<ApiRole>().ok())
            .max()
            .ok_or_else(|| {
                AuthError::InvalidToken(
                    "the token names no role (claim `role` or `roles`: viewer, operator, admin)".into(),
                )
            })?;
        // The principal `jwt:<sub>` is named in every command (at most 200 characters).
        let max = MAX_PRINCIPAL - "jwt:".len();
        if !printable_name(&claims.sub, max) {
            return Err(AuthError::InvalidToken(format!(
                "claim `sub` must be 1 to {max} printable characters, without surrounding spaces or invisible ones"
            )));
        }
        Ok(Principal {
            name: format!("jwt:{}", claims.sub),
            role,
        })
    }
}

/// Whether `name` is 1 to `max` characters, none a control or an invisible formatting
/// character (bidirectional overrides, zero-width spaces), without surrounding whitespace:
/// what the actor of a command may be, as shown to people.
fn printable_name(name: &str, max: usize) -> bool {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
    };
    !name.is_empty() && name.chars().count() <= max && name.trim() == name && !name.chars().any(invisible)
}

/// Everything the gateway authenticates with.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: Option<Arc<Keys>>,
    jwt: Option<Arc<Jwt>>,
    anonymous: Option<ApiRole>,
}

/// Where the authenticator's material comes from (the `gateway` settings).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The API keys file.
    pub api_keys_file: Option<PathBuf>,
    /// The HS256 secret's file.
    pub hs256_secret_file: Option<PathBuf>,
    /// A JWKS file (RS256/ES256 public keys).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (fetched by [`Authenticator::start`]).
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again.
    pub jwks_refresh: Duration,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// The role of unauthenticated callers (local development only).
    pub anonymous: Option<ApiRole>,
}

impl Authenticator {
    /// Loads the keys file and JWT keys `config` names.
    pub fn load(config: &AuthConfig) -> anyhow::Result<Self> {
        let keys = config.api_keys_file.clone().map(Keys::load).transpose()?.map(Arc::new);
        let hs256 = match &config.hs256_secret_file {
            Some(path) => {
                let secret = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("reading gateway.jwt_hs256_secret_file {}: {e}", path.display()))?;
                let secret = secret.trim_ascii();
                if secret.len() < 32 {
                    anyhow::bail!(
                        "gateway.jwt_hs256_secret_file {}: an HS256 secret needs at least 32 bytes",
                        path.display()
                    );
                }
                Some(
                    DecodingKey::from_secret(secret)
                        .map_err(|e| anyhow::anyhow!("gateway.jwt_hs256_secret_file {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        if config.jwks_file.is_some() && config.jwks_url.is_some() {
            anyhow::bail!("set gateway.jwt_jwks_file or gateway.jwt_jwks_url, not both");
        }
        let jwks = match &config.jwks_file {
            Some(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("reading gateway.jwt_jwks_file {}: {e}", path.display()))?;
                parse_jwks(&text, &format!("gateway.jwt_jwks_file {}", path.display()))?
            }
            None => Vec::new(),
        };
        let remote = config
            .jwks_url
            .as_deref()
            .map(|url| {
                Ok::<_, anyhow::Error>(Remote {
                    url: jwks_url(url)?,
                    every: config.jwks_refresh.max(Duration::from_secs(1)),
                    loaded: std::sync::atomic::AtomicBool::new(false),
                    unknown_kid: tokio::sync::Notify::new(),
                })
            })
            .transpose()?;
        if (hs256.is_some() || !jwks.is_empty() || remote.is_some()) && config.audience.is_none() {
            anyhow::bail!(
                "gateway.jwt_audience must be set when JWTs are accepted: a token the identity provider issued \
                 for another application (another audience) must not be taken here"
            );
        }
        let jwt = (hs256.is_some() || !jwks.is_empty() || remote.is_some()).then(|| {
            Arc::new(Jwt {
                hs256,
                jwks: parking_lot::RwLock::new(Arc::new(jwks)),
                remote,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
            })
        });
        if keys.is_none() && jwt.is_none() && config.anonymous.is_none() {
            anyhow::bail!(
                "the gateway would let nobody in: set gateway.api_keys_file, a JWT key \
                 (gateway.jwt_hs256_secret_file, gateway.jwt_jwks_file or gateway.jwt_jwks_url), or, for local development only, \
                 gateway.anonymous_role"
            );
        }
        Ok(Self {
            keys,
            jwt,
            anonymous: config.anonymous,
        })
    }

    /// Starts fetching the JWKS URL, if one is configured (until `shutdown`).
    pub fn start(&self, shutdown: tokio_util::sync::CancellationToken) {
        if let Some(jwt) = self.jwt.as_ref().filter(|j| j.remote.is_some()) {
            tokio::spawn(refresh_jwks(jwt.clone(), shutdown));
        }
    }

    /// `None` without a JWKS URL; else whether its keys have been fetched.
    pub fn jwks_loaded(&self) -> Option<bool> {
        let remote = self.jwt.as_ref()?.remote.as_ref()?;
        Some(remote.loaded.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The caller of a request with this `Authorization` header value (if any).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(value) = authorization else {
            return self
                .anonymous
                .map(|role| Principal {
                    name: "anonymous".to_owned(),
                    role,
                })
                .ok_or(AuthError::Missing);
        };
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        if token.starts_with(KEY_PREFIX) {
            return self
                .keys
                .as_ref()
                .and_then(|keys| keys.find(token))
                .ok_or(AuthError::UnknownKey);
        }
        match &self.jwt {
            Some(jwt) => jwt.check(token),
            None => Err(AuthError::JwtOff),
        }
    }
}

/// Per-principal rate limits: a token bucket each.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` requests a second on average, `burst` at once; 0 turns it off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who`; when there is none, how long until there is one.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget full buckets (idle callers); a full bucket is what a new one is.
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys_config(dir: &Path, file: &KeysFile) -> AuthConfig {
        let path = dir.join("keys.json");
        file.write(&path).unwrap();
        AuthConfig {
            api_keys_file: Some(path),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn api_keys_are_found_by_hash_and_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = KeysFile::default();
        let key = file.create("ci", ApiRole::Operator).unwrap();
        assert!(
            key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43,
            "{key}"
        );
        assert!(!serde_json::to_string(&file).unwrap().contains(&key[4..]));
        assert!(file.create("ci", ApiRole::Admin).is_err(), "names are unique");
        assert!(file.create("bad name", ApiRole::Admin).is_err());
        let auth = Authenticator::load(&keys_config(dir.path(), &file)).unwrap();
        let principal = auth.authenticate(Some(&format!("Bearer {key}"))).unwrap();
        assert_eq!(principal.name, "key:ci");
        assert_eq!(principal.role, ApiRole::Operator);
        let mut other = key.clone();
        other.pop();
        other.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {other}"))),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some(&key)), Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(Some("Bearer a.b.c")), Err(AuthError::JwtOff));
    }

    #[test]
    fn hs256_tokens_are_checked_for_signature_expiry_audience_and_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s".repeat(40);
        std::fs::write(dir.path().join("secret"), &secret).unwrap();
        let auth = Authenticator::load(&AuthConfig {
            hs256_secret_file: Some(dir.path().join("secret")),
            issuer: Some("https://idp.example".into()),
            audience: Some("flexcore".into()),
            ..AuthConfig::default()
        })
        .unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = |claims: serde_json::Value, secret: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let good = serde_json::json!({"sub":"alice","exp":now+60,"iss":"https://idp.example","aud":"flexcore","roles":["viewer","operator"]});
        let principal = auth
            .authenticate(Some(&format!("Bearer {}", token(good.clone(), &secret))))
            .unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("jwt:alice", ApiRole::Operator)
        );
        let refused = |claims: serde_json::Value, secret: &str| {
            matches!(
                auth.authenticate(Some(&format!("Bearer {}", token(claims, secret)))),
                Err(AuthError::InvalidToken(_))
            )
        };
        assert!(refused(good.clone(), &"t".repeat(40)), "wrong secret");
        let mut expired = good.clone();
        expired["exp"] = (now - 120).into();
        assert!(refused(expired, &secret));
        let mut early = good.clone();
        early["nbf"] = (now + 600).into();
        assert!(refused(early, &secret));
        let mut audience = good.clone();
        audience["aud"] = "other".into();
        assert!(refused(audience, &secret));
        let mut issuer = good.clone();
        issuer["iss"] = "https://evil.example".into();
        assert!(refused(issuer, &secret));
        // A configured audience or issuer that the token leaves out.
        for claim in ["aud", "iss"] {
            let mut without = good.clone();
            without.as_object_mut().unwrap().remove(claim);
            assert!(refused(without, &secret), "a token without {claim}");
        }
        let mut long = good.clone();
        long["sub"] = "s".repeat(MAX_PRINCIPAL - 3).into();
        assert!(
            refused(long, &secret),
            "jwt:<sub> would be over {MAX_PRINCIPAL} characters"
        );
        let mut roleless = good;
        roleless["roles"] = serde_json::json!(["root"]);
        assert!(refused(roleless, &secret));
    }

    #[test]
    fn nobody_gets_in_without_a_credential_source() {
        assert!(Authenticator::load(&AuthConfig::default()).is_err());
        let open = Authenticator::load(&AuthConfig {
            anonymous: Some(ApiRole::Viewer),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(open.authenticate(None).unwrap().role, ApiRole::Viewer);
    }

    fn test_key(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys").join(name)
    }

    fn signed(key: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let der = std::fs::read(test_key(&format!("{key}.der"))).unwrap();
        let (algorithm, encoding) = if key.starts_with("ec") {
            (Algorithm::ES256, jsonwebtoken::EncodingKey::from_ec_der(&der))
        } else {
            (Algorithm::RS256, jsonwebtoken::EncodingKey::from_rsa_der(&der))
        };
        let mut header = jsonwebtoken::Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &encoding).unwrap()
    }

    #[test]
    fn es256_and_rs256_tokens_are_checked_against_a_jwks_file() {
        let dir = tempfile::tempdir().unwrap();
        let jwk = |name: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(test_key(&format!("{name}.jwk.json"))).unwrap()).unwrap()
        };
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::json!({"keys": [jwk("ec1"), jwk("rsa")]}).to_string()).unwrap();
        let auth = Authenticator::load(&AuthConfig {
            jwks_file: Some(path),
            audience: Some("flexcore".into()),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(auth.jwks_loaded(), None, "no URL to wait for");
        let now = chrono::Utc::now().timestamp();
        let claims =
            serde_json::json!({"sub": "dave", "exp": now + 60, "aud": "flexcore", "roles": ["viewer", "admin"]});
        let check = |token: String| auth.authenticate(Some(&format!("Bearer {token}")));
        let principal = check(signed("ec1", Some("ec1"), &claims)).unwrap();
        assert_eq!((principal.name.as_str(), principal.role), ("jwt:dave", ApiRole::Admin));
        assert!(check(signed("rsa", Some("rsa"), &claims)).is_ok());
        assert!(
            check(signed("ec1", None, &claims)).is_ok(),
            "no kid: any key of its algorithm"
        );
        // A key not in the set, a key under another's kid, an expired token.
        assert!(check(signed("ec2", Some("ec2"), &claims)).is_err());
        assert!(check(signed("ec2", Some("ec1"), &claims)).is_err());
        let mut expired = claims.clone();
        expired["exp"] = (now - 3600).into();
        assert!(check(signed("ec1", Some("ec1"), &expired)).is_err());
        // A subject that would show as someone else: invisible or surrounding characters.
        for sub in ["mallory\u{202e}gnp.exe", "alice\u{200b}", "alice ", " alice", ""] {
            let mut odd = claims.clone();
            odd["sub"] = sub.into();
            assert!(check(signed("ec1", Some("ec1"), &odd)).is_err(), "{sub:?}");
        }
        // HS256 is not accepted without a secret, even for a kid in the set.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"ec1").unwrap(),
        )
        .unwrap();
        assert!(check(hs).is_err());
    }

    #[test]
    fn a_jwks_url_is_https_or_loopback_and_not_with_a_file() {
        assert!(jwks_url("https://idp.example/.well-known/jwks.json").is_ok());
        assert!(jwks_url("http://127.0.0.1:9000/jwks").is_ok());
        assert!(jwks_url("http://[::1]:9000/jwks").is_ok());
        assert!(jwks_url("http://localhost/jwks").is_ok());
        assert!(jwks_url("http://idp.example/jwks").is_err());
        assert!(jwks_url("file:///etc/jwks.json").is_err());
        assert!(jwks_url("not a url").is_err());
        let both = Authenticator::load(&AuthConfig {
            jwks_file: Some(test_key("ec1.jwk.json")),
            jwks_url: Some("https://idp.example/jwks".into()),
            ..AuthConfig::default()
        });
        assert!(both.is_err());
        let without_audience = Authenticator::load(&AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            ..AuthConfig::default()
        });
        assert!(without_audience.is_err(), "a token for another application would pass");
        let url = Authenticator::load(&AuthConfig {
            jwks_url: Some("https://idp.example/jwks".into()),
            jwks_refresh: Duration::from_secs(300),
            audience: Some("flexcore".into()),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(url.jwks_loaded(), Some(false), "not ready before the first fetch");
    }

    #[test]
    fn the_rate_limit_refills() {
        let limiter = RateLimiter::new(10, 2);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        let wait = limiter.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.take("b").is_ok(), "per principal");
    }
}
