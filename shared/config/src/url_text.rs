//! URL credentials, taken apart by the `url` crate: the one place that finds a user and a
//! password in a URL, for connecting ([`split_credentials`]) and for showing a URL or a
//! command line without its password ([`redact`]).

use url::{Position, Url};

/// What a password is shown as.
pub const REDACTED: &str = "[redacted]";

/// A URL with its user information taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The URL without user information (as given when it had none).
    pub url: String,
    /// The user, percent-decoded (empty when none).
    pub user: String,
    /// The password, percent-decoded (empty when none).
    pub password: String,
}

/// Parses `text` as a URL; one without a scheme (`host:4222`, `user:pw@host`, as NATS
/// accepts) is read as a `nats://` URL. Returns the URL and whether the scheme was added.
fn parse(text: &str) -> Option<(Url, bool)> {
    if text.contains("://") {
        return Url::parse(text).ok().map(|url| (url, false));
    }
    Url::parse(&format!("nats://{text}")).ok().map(|url| (url, true))
}

/// Strips the scheme [`parse`] added.
fn unadded(text: &str, added: bool) -> &str {
    match added {
        true => text.strip_prefix("nats://").unwrap_or(text),
        false => text,
    }
}

fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Takes the user and password out of `url`, or out of each URL of a NATS server list
/// (`nats://u:pw@a:4222,nats://b:4222`: the first URL with a user gives them). A URL that
/// does not parse is kept as given, without credentials (connecting to it fails and says so).
pub fn split_credentials(url: &str) -> Credentials {
    let mut parts = url.split(',').map(split_one);
    let Some(mut all) = parts.next() else {
        return split_one(url);
    };
    for part in parts {
        all.url.push(',');
        all.url.push_str(&part.url);
        if all.user.is_empty() && all.password.is_empty() {
            all.user = part.user;
            all.password = part.password;
        }
    }
    all
}

fn split_one(url: &str) -> Credentials {
    match parse(url) {
        Some((parsed, added)) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let mut bare = parsed.clone();
            // A URL that has a host can lose its user information.
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            Credentials {
                url: unadded(bare.as_str(), added).to_owned(),
                user: decoded(parsed.username()),
                password: decoded(parsed.password().unwrap_or_default()),
            }
        }
        _ => Credentials {
            url: url.to_owned(),
            user: String::new(),
            password: String::new(),
        },
    }
}

/// One URL with its password (if any) shown as [`REDACTED`]; the rest as given.
fn redact_one(url: &str) -> String {
    match parse(url) {
        Some((parsed, added)) if parsed.password().is_some() => {
            let shown = format!(
                "{}:{REDACTED}{}",
                &parsed[..Position::BeforePassword].trim_end_matches(':'),
                &parsed[Position::AfterPassword..]
            );
            unadded(&shown, added).to_owned()
        }
        // Unparsable but with user information: show none of it.
        None if url.contains('@') => match url.split_once("://") {
            Some((scheme, rest)) => format!(
                "{scheme}://{REDACTED}@{}",
                rest.rsplit_once('@').map_or(rest, |(_, host)| host)
            ),
            None => format!("{REDACTED}@{}", url.rsplit_once('@').map_or(url, |(_, host)| host)),
        },
        _ => url.to_owned(),
    }
}

/// `text` with the password of every URL in it shown as [`REDACTED`]: a URL, a NATS
/// server list (`nats://a:4222,nats://u:pw@b:4222`) or a command line
/// (`--database-url=postgres://u:pw@h/db`). Only words with `://` or `@` are taken for URLs.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // `--flag=URL`: the URL is what follows the first `=` before any `://`.
        let (flag, value) = match word.find('=') {
            Some(eq) if word.find("://").is_none_or(|s| eq < s) && word.starts_with('-') => word.split_at(eq + 1),
            _ => ("", word),
        };
        out.push_str(flag);
        if !value.contains("://") && !value.contains('@') {
            out.push_str(value);
            continue;
        }
        let urls: Vec<String> = value.split(',').map(redact_one).collect();
        out.push_str(&urls.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_everything_else_kept() {
        for (given, shown) in [
            ("postgres://u:secret@h/db", "postgres://u:[redacted]@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://app:s%40cr%3At@db:5432/flexcore?sslmode=require",
                "postgres://app:[redacted]@db:5432/flexcore?sslmode=require",
            ),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "nats://a:4222,nats://u:pw@b:4222",
                "nats://a:4222,nats://u:[redacted]@b:4222",
            ),
            ("u:pw@host:4222", "u:[redacted]@host:4222"),
            ("host:4222", "host:4222"),
            (
                "--database-url=postgres://app:s3cr3t@db:5432/flexcore",
                "--database-url=postgres://app:[redacted]@db:5432/flexcore",
            ),
            (
                "run --nats nats://u:pw@h:4222 --quiet",
                "run --nats nats://u:[redacted]@h:4222 --quiet",
            ),
            ("-pw=x", "-pw=x"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_shows_no_user_information() {
        let shown = redact("postgres://u:pw@[bad/db");
        assert_eq!(shown, "postgres://[redacted]@[bad/db");
    }

    #[test]
    fn credentials_are_taken_out_decoded() {
        let c = split_credentials("nats://ali%40ce:p%3Ass@h:4222");
        assert_eq!(c.url, "nats://h:4222");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("ali@ce", "p:ss"));
        let c = split_credentials("u:pw@h:4222");
        assert_eq!(
            (c.url.as_str(), c.user.as_str(), c.password.as_str()),
            ("h:4222", "u", "pw")
        );
        let c = split_credentials("nats://h:4222");
        assert_eq!(
            (c.url.as_str(), c.user.as_str(), c.password.as_str()),
            ("nats://h:4222", "", "")
        );
        let c = split_credentials("nats://u@h:4222");
        assert_eq!(
            (c.url.as_str(), c.user.as_str(), c.password.as_str()),
            ("nats://h:4222", "u", "")
        );
    }
}
