//! `connect::nats` logs in to a NATS server that requires a user and password: with the
//! `nats.user` / `nats.password` keys, with credentials in the URL, and never shows the
//! password in the error when the login is refused. Against a real, private nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::ConnectErrorKind;
use flexcore_config::{NatsSettings, Secret};
use flexcore_service::connect::{self, ConnectError};
use futures::StreamExt as _;

const USER: &str = "flexcore-test";
/// Characters that must be percent-encoded in a URL.
const PASSWORD: &str = "p@ss/w:rd";
const PASSWORD_IN_URL: &str = "p%40ss%2Fw%3Ard";
const WRONG_PASSWORD: &str = "not-the-password-4711";

/// A nats-server on `127.0.0.1` that accepts only [`USER`] with [`PASSWORD`]. Killed
/// when dropped.
struct AuthNats {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl AuthNats {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flexcore-nats-auth-")
            .tempdir()
            .unwrap();
        let port = flexcore_testkit::unused_port().unwrap();
        let config = dir.path().join("nats-server.conf");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             authorization {{\n  users: [\n    {{ user: {USER:?}, password: {PASSWORD:?} }}\n  ]\n}}\n"
        );
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("nats-server.log")).unwrap();
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Self { port, child, dir };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Until the port greets with the server's `INFO` line (10 s at most).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nats-server exited ({status}):\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut greeting = [0; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "nats-server not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AuthNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nats-server` on `PATH`, else `/usr/sbin/nats-server`.
fn nats_server() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| candidate.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| Path::new(p).is_file()))
        .expect("nats-server is not installed (PATH or /usr/sbin/nats-server)")
}

fn settings(url: &str, user: &str, password: &str) -> NatsSettings {
    NatsSettings {
        url: url.to_owned(),
        user: user.to_owned(),
        password: Secret::new(password),
        connect_timeout: Duration::from_millis(3000),
        ..NatsSettings::default()
    }
}

async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, ConnectError> {
    tokio::time::timeout(
        Duration::from_secs(15),
        connect::nats("flexcore-auth-test", settings, None),
    )
    .await
    .expect("connecting must not hang")
}

/// The connection is logged in for real: a message goes round through the server.
async fn round_trip(what: &str, client: &async_nats::Client) {
    let subject = format!("flexcore.test.auth.{}", what.replace(' ', "_"));
    let mut subscriber = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    client.publish(subject, what.to_owned().into()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no message back"))
        .unwrap();
    assert_eq!(message.payload, what.as_bytes(), "{what}");
}

/// The refusal as every way it could be printed (Display, Debug, the source chain),
/// after checking it is the server refusing the login.
fn refusal(what: &str, result: Result<async_nats::Client, ConnectError>) -> String {
    let error = match result {
        Ok(_) => panic!("{what}: the server must refuse the login"),
        Err(error) => error,
    };
    let ConnectError::Nats { cause, .. } = &error else {
        panic!("{what}: not a NATS error: {error}")
    };
    assert_eq!(
        cause.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{what}: {error}"
    );
    let mut text = format!("{error}\n{error:?}");
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(&format!("\n{inner}\n{inner:?}"));
        cause = inner.source();
    }
    text
}

fn assert_hidden(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what}: the error shows {secret:?}:\n{text}");
    }
}

#[tokio::test]
async fn logs_in_with_user_and_password_and_never_shows_the_password() {
    let mut server = AuthNats::start();
    let url = server.url();
    let host = url.trim_start_matches("nats://");

    let keys = connect(&settings(&url, USER, PASSWORD)).await.unwrap();
    round_trip("keys", &keys).await;

    let in_url = format!("nats://{USER}:{PASSWORD_IN_URL}@{host}");
    let from_url = connect(&settings(&in_url, "", "")).await.unwrap();
    round_trip("url credentials", &from_url).await;

    // The keys win over the URL's credentials.
    let wrong_in_url = format!("nats://someone:{WRONG_PASSWORD}@{host}");
    let keys_win = connect(&settings(&wrong_in_url, USER, PASSWORD)).await.unwrap();
    round_trip("keys win", &keys_win).await;

    let text = refusal(
        "wrong password key",
        connect(&settings(&url, USER, WRONG_PASSWORD)).await,
    );
    assert_hidden("wrong password key", &text, &[WRONG_PASSWORD]);
    assert!(
        text.contains(&url) && text.contains(USER),
        "says where and as whom: {text}"
    );

    let wrong_url = format!("nats://{USER}:{WRONG_PASSWORD}@{host}");
    let error = connect(&settings(&wrong_url, "", "")).await;
    if let Err(ConnectError::Nats { url: shown, .. }) = &error {
        assert_eq!(shown, &url, "the URL is shown without its credentials");
    }
    let text = refusal("wrong password in the URL", error);
    assert_hidden("wrong password in the URL", &text, &[WRONG_PASSWORD, &wrong_url]);

    refusal("no credentials", connect(&settings(&url, "", "")).await);
    refusal("a user without password", connect(&settings(&url, USER, "")).await);

    for client in [keys, from_url, keys_win] {
        client.drain().await.unwrap();
    }
    server.stop();
}
