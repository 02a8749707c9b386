//! How a process logs in to NATS: the server URL without credentials, and the user and
//! password from the `nats` section or, failing those, from the URL.
//!
//! The NATS client (async-nats 0.51) ignores `user:password@` in a URL
//! (nats-io/nats.rs#1623), so credentials are taken out of the URL here and passed to the
//! client explicitly; the stripped URL is also the one safe to print.

use crate::{NatsSettings, Secret};

/// The URL to connect to and the credentials to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsLogin {
    /// The server URL without user information: safe to print.
    pub url: String,
    /// User and password; `None` connects without authentication.
    pub credentials: Option<(String, Secret)>,
}

impl NatsLogin {
    /// Resolves `url`, `user` and `password` as the `nats` section's keys: each of `user`
    /// and `password` that is not empty wins over the one in the URL; without a user (from
    /// either place) there is no authentication.
    pub fn resolve(url: &str, user: &str, password: &Secret) -> Self {
        let parts = UrlParts::split(url);
        let url_user = parts.user.map(percent_decode).unwrap_or_default();
        let url_password = parts.password.map(percent_decode).unwrap_or_default();
        let user = if user.is_empty() { url_user } else { user.to_owned() };
        let password = if password.expose().is_empty() {
            Secret::new(url_password)
        } else {
            password.clone()
        };
        Self {
            url: parts.without_credentials(),
            credentials: (!user.is_empty()).then_some((user, password)),
        }
    }

    /// The user, if any.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(user, _)| user.as_str())
    }
}

impl NatsSettings {
    /// The URL and the credentials to connect with: [`Self::user`] and [`Self::password`]
    /// when set, else those in [`Self::url`] (`nats://user:password@host:4222`,
    /// percent-encoded).
    pub fn login(&self) -> NatsLogin {
        NatsLogin::resolve(&self.url, &self.user, &self.password)
    }
}

/// `url` with the password (if any) replaced by `[redacted]`, for `Debug` output.
pub(crate) fn redacted_url(url: &str) -> String {
    let parts = UrlParts::split(url);
    match (&parts.user, &parts.password) {
        (Some(user), Some(_)) => format!("{}{user}:[redacted]@{}", parts.scheme, parts.rest),
        _ => url.to_owned(),
    }
}

/// A URL cut around its user information: `<scheme><user>:<password>@<rest>`.
struct UrlParts<'a> {
    /// Up to and including `://` (empty without a scheme).
    scheme: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    /// The host and whatever follows it.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Self {
        let (scheme, after) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        // The last `@` of the authority: a raw `@` in a password is a malformed URL, but
        // it still must not end up in the host (or in an error message).
        match after[..authority_end].rfind('@') {
            Some(at) => {
                let (user, password) = match after[..at].split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (&after[..at], None),
                };
                Self {
                    scheme,
                    user: Some(user),
                    password,
                    rest: &after[at + 1..],
                }
            }
            None => Self {
                scheme,
                user: None,
                password: None,
                rest: after,
            },
        }
    }

    fn without_credentials(&self) -> String {
        format!("{}{}", self.scheme, self.rest)
    }
}

/// Decodes `%XX` escapes (user information in a URL is percent-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(url: &str, user: &str, password: &str) -> (String, Option<(String, String)>) {
        let login = NatsLogin::resolve(url, user, &Secret::new(password));
        let credentials = login.credentials.map(|(u, p)| (u, p.expose().to_owned()));
        (login.url, credentials)
    }

    fn creds(user: &str, password: &str) -> Option<(String, String)> {
        Some((user.to_owned(), password.to_owned()))
    }

    #[test]
    fn without_credentials_the_url_is_kept() {
        for url in [
            "nats://127.0.0.1:4222",
            "tls://nats:4222/",
            "127.0.0.1:4222",
            "nats://nats",
        ] {
            assert_eq!(login(url, "", ""), (url.to_owned(), None));
        }
    }

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        assert_eq!(
            login("nats://runner:hunter2@nats:4222", "", ""),
            ("nats://nats:4222".to_owned(), creds("runner", "hunter2"))
        );
        assert_eq!(
            login("runner:p%40ss%2Fw%3Ard@10.0.0.1:4222", "", ""),
            ("10.0.0.1:4222".to_owned(), creds("runner", "p@ss/w:rd"))
        );
        assert_eq!(
            login("tls://runner@nats:4222/path?x=a@b", "", ""),
            ("tls://nats:4222/path?x=a@b".to_owned(), creds("runner", ""))
        );
        // A raw `@` in the password: nothing of it is left in the URL.
        assert_eq!(
            login("nats://u:a@b@nats:4222", "", ""),
            ("nats://nats:4222".to_owned(), creds("u", "a@b"))
        );
    }

    #[test]
    fn the_keys_win_over_the_url() {
        assert_eq!(
            login("nats://url-user:url-pw@nats:4222", "key-user", "key-pw"),
            ("nats://nats:4222".to_owned(), creds("key-user", "key-pw"))
        );
        // Each key on its own: the password in a Secret, the user in the URL.
        assert_eq!(
            login("nats://runner@nats:4222", "", "key-pw"),
            ("nats://nats:4222".to_owned(), creds("runner", "key-pw"))
        );
        assert_eq!(
            login("nats://nats:4222", "runner", "key-pw"),
            ("nats://nats:4222".to_owned(), creds("runner", "key-pw"))
        );
        // A password without any user authenticates nobody.
        assert_eq!(
            login("nats://nats:4222", "", "pw"),
            ("nats://nats:4222".to_owned(), None)
        );
    }

    #[test]
    fn debug_never_prints_a_password() {
        let settings = NatsSettings {
            url: "nats://runner:hunter2@nats:4222".to_owned(),
            user: "runner".to_owned(),
            password: Secret::new("s3cr3t"),
            ..NatsSettings::default()
        };
        let debug = format!("{settings:?} {settings:#?} {:?}", settings.login());
        assert!(!debug.contains("hunter2") && !debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("nats://runner:[redacted]@nats:4222"), "{debug}");
    }
}
