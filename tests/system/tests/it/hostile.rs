//! What a raw NATS client can put on the wire besides a body: a subject with invalid
//! UTF-8, header blocks that are not `NATS/1.0` headers (a line without a colon, a value
//! with a carriage return, invalid UTF-8, a bad version or status line). The server
//! forwards them verbatim; each request still gets its answer, and the services keep
//! serving everyone else. (Before `vendor/async-nats`'s patch, a `\r` in a header value
//! stopped the command service and the other cases dropped its NATS connection.)

use std::time::Duration;

use flexcore_system_tests::{Options, Stack};
use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A raw protocol connection to the stack's NATS server.
struct Raw(tokio::net::TcpStream);

impl Raw {
    async fn connect(s: &Stack) -> Self {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.nats.port()))
            .await
            .unwrap();
        let mut info = vec![0u8; 4096];
        let n = stream.read(&mut info).await.unwrap();
        // Log in as the harness: sign the server's nonce with its NKey.
        let info: Value = serde_json::from_slice(
            String::from_utf8_lossy(&info[..n])
                .trim()
                .strip_prefix("INFO ")
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let nonce = info["nonce"].as_str().unwrap();
        let key = nkeys::KeyPair::from_seed(s.harness().seed()).unwrap();
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            key.sign(nonce.as_bytes()).unwrap(),
        );
        let connect = json!({"headers": true, "verbose": false, "pedantic": false,
                             "nkey": key.public_key(), "sig": sig});
        stream
            .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
            .await
            .unwrap();
        // Logged in once the server answers the PING (an error would come first).
        let mut answer = Vec::new();
        while !answer.ends_with(b"PONG\r\n") {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the server closed the raw connection: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
            assert!(!answer.starts_with(b"-ERR"), "{}", String::from_utf8_lossy(&answer));
        }
        Self(stream)
    }

    /// Publishes `body` with the raw `header` block to `subject`, replies to `reply`.
    async fn hpub(&mut self, subject: &[u8], reply: &str, header: &[u8], body: &[u8]) {
        let mut frame = b"HPUB ".to_vec();
        frame.extend_from_slice(subject);
        frame.extend_from_slice(format!(" {reply} {} {}\r\n", header.len(), header.len() + body.len()).as_bytes());
        frame.extend_from_slice(header);
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        self.0.write_all(&frame).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_subjects_and_header_blocks_are_answered_and_harm_no_one() {
    let s = Stack::start(Options::default()).await;
    let mut raw = Raw::connect(&s).await;
    // Replies in the harness's inbox: the projection answers only into the inboxes of
    // identities that may query (docs/security.md).
    let mut replies = s.client.subscribe("_INBOX.harness.hostile.*").await.unwrap();
    s.client.flush().await.unwrap();
    let cases: Vec<(&str, &[u8], &[u8])> = vec![
        (
            "a header value with a carriage return",
            b"flexcore.cmd.pipeline.resume",
            b"NATS/1.0\r\nFlexcore-Actor: a\rb\r\n\r\n",
        ),
        (
            "a header line without a colon",
            b"flexcore.cmd.pipeline.resume",
            b"NATS/1.0\r\nFlexcore-Actor\r\n\r\n",
        ),
        (
            "a header block of invalid UTF-8",
            b"flexcore.cmd.pipeline.resume",
            b"NATS/1.0\r\nFlexcore-Actor: \xff\xfe\r\n\r\n",
        ),
        (
            "no version line",
            b"flexcore.cmd.pipeline.resume",
            b"HTTP/1.1\r\nFlexcore-Actor: a\r\n\r\n",
        ),
        (
            "a status that is no number",
            b"flexcore.cmd.pipeline.resume",
            b"NATS/1.0 abc nonsense\r\n\r\n",
        ),
        (
            "an invalid header name",
            b"flexcore.cmd.pipeline.resume",
            b"NATS/1.0\r\nFlex core: a\r\n\r\n",
        ),
        (
            "a subject of invalid UTF-8",
            b"flexcore.cmd.pipeline.\xff",
            b"NATS/1.0\r\n\r\n",
        ),
        (
            "a query with a carriage return in a header",
            b"flexcore.qry.stats.get",
            b"NATS/1.0\r\ntraceparent: 00-\r1\r\n\r\n",
        ),
        (
            "a query subject of invalid UTF-8",
            b"flexcore.qry.stats.\xff",
            b"NATS/1.0\r\n\r\n",
        ),
    ];
    for (n, (what, subject, header)) in cases.iter().enumerate() {
        let reply = format!("_INBOX.harness.hostile.{n}");
        raw.hpub(subject, &reply, header, b"{}").await;
        // A bound for a loaded CI machine, not a latency expectation.
        let answer = tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"))
            .unwrap();
        assert_eq!(answer.subject.as_str(), reply, "{what}");
        let body: Value = serde_json::from_slice(&answer.payload).unwrap();
        assert_ne!(body["error"]["code"], "internal", "{what}: {body}");
        // Everyone else is still served.
        let normal = s.command("plugin.enable", json!({})).await;
        assert_eq!(
            normal["error"]["details"]["reason"], "missing_field",
            "{what}: {normal}"
        );
        let stats = s.query("stats.get", json!({})).await;
        assert_eq!(stats["ok"], json!(true), "{what}: {stats}");
    }
    s.stop().await;
}
