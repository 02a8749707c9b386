//! `connect::nats` over TLS with certificates generated here (openssl): a server that
//! requires client certificates lets in a client with the CA and its certificate, and
//! refuses one without its certificate or without the CA; `nats.tls_required` refuses a
//! server that does not speak TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flexcore_config::NatsSettings;
use flexcore_service::connect;
use futures::StreamExt as _;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate signed by it for `name` (CN and subjectAltName `san`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=flexcore-test-ca",
        ],
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=flexcore-test-{name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server on a free port with `extra` configuration; waits until it listens.
async fn server(dir: &Path, extra: &str) -> Server {
    let port = flexcore_testkit::unused_port().unwrap();
    let config = dir.join(format!("server-{port}.conf"));
    std::fs::write(&config, format!("listen: \"127.0.0.1:{port}\"\n{extra}\n")).unwrap();
    let binary = std::env::var_os(flexcore_testkit::nats::BINARY_VAR)
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/usr/sbin/nats-server").is_file() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        });
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(10), "nats-server listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await
    .unwrap();
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

fn settings(url: &str, dir: &Path, ca: bool, client: bool) -> NatsSettings {
    let file = |name: &str| dir.join(name).display().to_string();
    NatsSettings {
        url: url.to_owned(),
        tls_ca_file: if ca { file("ca.crt") } else { String::new() },
        tls_cert_file: if client { file("client.crt") } else { String::new() },
        tls_key_file: if client { file("client.key") } else { String::new() },
        connect_timeout: Duration::from_millis(3000),
        ..NatsSettings::default()
    }
}

async fn try_connect(settings: &NatsSettings) -> Result<async_nats::Client, String> {
    match tokio::time::timeout(
        Duration::from_secs(15),
        connect::nats("flexcore-tls-test", settings, None),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

#[tokio::test]
async fn mutual_tls_lets_in_only_clients_with_the_ca_and_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 3\n}}",
        dir.path().join("server.crt").display().to_string(),
        dir.path().join("server.key").display().to_string(),
        dir.path().join("ca.crt").display().to_string(),
    );
    let server = server(dir.path(), &tls).await;

    let client = try_connect(&settings(&server.url, dir.path(), true, true))
        .await
        .unwrap();
    let mut sub = client.subscribe("flexcore.test.tls").await.unwrap();
    client.publish("flexcore.test.tls", "over tls".into()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"over tls");

    let without_certificate = try_connect(&settings(&server.url, dir.path(), true, false)).await;
    assert!(without_certificate.is_err(), "a client without its certificate got in");
    let without_ca = try_connect(&settings(&server.url, dir.path(), false, true)).await;
    assert!(without_ca.is_err(), "a client that does not trust the CA connected");
}

#[tokio::test]
async fn tls_required_refuses_a_plain_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "").await;
    let mut required = settings(&server.url, dir.path(), false, false);
    required.tls_required = true;
    let refused = try_connect(&required).await;
    assert!(refused.is_err(), "connected to a server without TLS");
    // Without the requirement the same server is used.
    assert!(try_connect(&settings(&server.url, dir.path(), false, false))
        .await
        .is_ok());
}
