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
        let parts = crate::url_text::split_credentials(url);
        let user = if user.is_empty() { parts.user } else { user.to_owned() };
        let password = if password.expose().is_empty() {
            Secret::new(parts.password)
        } else {
            password.clone()
        };
        Self {
            url: parts.url,
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
