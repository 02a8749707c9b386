//! Hostile input: every bad request is a 4xx problem document, never a 500, and the
//! gateway and the services answer normally afterwards.

use std::time::Duration;

use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{problem, Gw};

#[tokio::test]
async fn bad_requests_get_problem_documents_and_harm_nothing() {
    let gw = Gw::start_with(Options::default(), |g| {
        g.max_body_bytes = 4096;
        g.request_timeout = Duration::from_millis(1500);
    })
    .await;
    let admin = gw.key(ApiRole::Admin).to_owned();
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        gw.http
            .post(gw.url(path))
            .bearer_auth(&admin)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        (
            "malformed JSON",
            post("/pipelines", "application/json", b"{\"name\":".to_vec())
                .await
                .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "not an object",
            post("/pipelines", "application/json", b"[1,2]".to_vec()).await.unwrap(),
            400,
            "validation_failed",
        ),
        (
            "wrong content type",
            post("/pipelines", "text/plain", b"{}".to_vec()).await.unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            "missing fields",
            post("/pipelines", "application/json", b"{}".to_vec()).await.unwrap(),
            422,
            "validation_failed",
        ),
        (
            "oversized body",
            post("/pipelines", "application/json", vec![b' '; 10_000])
                .await
                .unwrap(),
            413,
            "payload_too_large",
        ),
        (
            "the path's id in the body",
            post(
                &format!("/pipelines/{}/pause", uuid::Uuid::new_v4()),
                "application/json",
                br#"{"pipeline_id":"x"}"#.to_vec(),
            )
            .await
            .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "unknown command",
            post(
                "/commands",
                "application/json",
                br#"{"command":"run.explode","body":{}}"#.to_vec(),
            )
            .await
            .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "traversal in an id",
            gw.http
                .get(gw.url("/pipelines/..%2F..%2Fetc%2Fpasswd"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        ),
        (
            "unknown path",
            gw.http
                .get(format!("{}/api/v1/flexcore/../../etc/passwd", gw.base))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        ),
        (
            "unknown action",
            post(
                &format!("/pipelines/{}/explode", uuid::Uuid::new_v4()),
                "application/json",
                b"{}".to_vec(),
            )
            .await
            .unwrap(),
            404,
            "not_found",
        ),
        (
            "bad If-Match",
            gw.http
                .post(gw.url(&format!("/pipelines/{}/pause", uuid::Uuid::new_v4())))
                .bearer_auth(&admin)
                .header("If-Match", "v1")
                .send()
                .await
                .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "bad Consistency-Position",
            gw.http
                .get(gw.url("/runs"))
                .bearer_auth(&admin)
                .header("Consistency-Position", "-1")
                .send()
                .await
                .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "unknown list filter",
            gw.http
                .get(gw.url("/runs?color=red"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "limit over 1000",
            gw.http
                .get(gw.url("/runs?limit=5000"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            422,
            "validation_failed",
        ),
        (
            "a service command through the generic endpoint",
            post(
                "/commands",
                "application/json",
                br#"{"command":"run.succeed","body":{}}"#.to_vec(),
            )
            .await
            .unwrap(),
            403,
            "forbidden",
        ),
        (
            "a made-up position",
            gw.http
                .get(gw.url("/pipelines?min_position=9007199254740000"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        ),
        (
            "an event-stream filter that contradicts itself",
            gw.http
                .get(gw.url("/events/stream?event_type=pipeline.created&aggregate_type=run"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap(),
            400,
            "validation_failed",
        ),
        (
            "bad Last-Event-ID",
            gw.http
                .get(gw.url("/events/stream"))
                .bearer_auth(&admin)
                .header("Last-Event-ID", "x")
                .send()
                .await
                .unwrap(),
            400,
            "validation_failed",
        ),
    ];
    for (what, response, status, code) in cases {
        let (got, body) = problem(response).await;
        assert_eq!((got, body["code"].as_str().unwrap()), (status, code), "{what}: {body}");
    }

    // A method the resource does not take: 405 with the methods it does take.
    let response = gw.http.patch(gw.url("/runs")).bearer_auth(&admin).send().await.unwrap();
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = problem(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    assert_eq!(allow.as_deref(), Some("GET,HEAD"));

    // A correlation id with what a header may not carry is replaced, not reflected.
    let response = gw
        .http
        .get(gw.url("/runs"))
        .bearer_auth(&admin)
        .header("Flexcore-Correlation-Id", "a b\tc")
        .send()
        .await
        .unwrap();
    let echoed = response.headers()["flexcore-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");

    // A slow-loris body: headers promise 100 bytes, 10 come, then nothing: 408 at the
    // request timeout, the connection closed.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/flexcore/pipelines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":\"s"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes a stalled request")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Everything still works.
    assert_eq!(gw.get(ApiRole::Viewer, "/runs").await.0, 200);
    let health: serde_json::Value = gw
        .http
        .get(format!("{}/health", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}

/// What a web page elsewhere, a rebinding DNS name, a slow client and a greedy caller can
/// do: nothing.
#[tokio::test]
async fn other_origins_rebinding_hosts_slow_headers_and_greedy_streams_get_nothing() {
    let gw = Gw::start_with(Options::default(), |g| {
        g.anonymous_role = "admin".to_owned();
        g.max_streams_per_caller = 2;
    })
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let raw = |request: String| {
        let addr = addr.clone();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer))
                .await
                .expect("answered and closed")
                .unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let post = |host: &str, origin: Option<&str>| {
        format!(
            "POST /api/v1/flexcore/pipelines HTTP/1.1\r\nHost: {host}\r\n{}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default()
        )
    };
    // A page on another origin posting to the API (CSRF): refused before anything runs.
    let csrf = raw(post(&addr, Some("https://evil.example"))).await;
    assert!(csrf.starts_with("HTTP/1.1 403"), "{csrf}");
    assert!(csrf.contains("cross-origin"), "{csrf}");
    // A public name resolving here (DNS rebinding): no anonymous access.
    let rebound = raw(post("rebind.attacker.example:8080", None)).await;
    assert!(rebound.starts_with("HTTP/1.1 401"), "{rebound}");
    // The gateway's own origin, and loopback without Origin, are served (400: an empty
    // pipeline body, decided by the command service).
    let own = raw(post(&addr, Some(&format!("http://{addr}")))).await;
    assert!(
        !own.starts_with("HTTP/1.1 403") && !own.starts_with("HTTP/1.1 401"),
        "{own}"
    );

    // Headers sent slower than the header timeout: the connection is closed.
    let started = std::time::Instant::now();
    let slow = raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1".to_owned()).await;
    assert!(!slow.contains("200 OK"), "{slow}");
    assert!(started.elapsed() < Duration::from_secs(14));

    // One caller's share of live streams: a third is 429, another caller still gets one.
    let open = |role: ApiRole| gw.as_role(role, reqwest::Method::GET, "/events/stream").send();
    let first = open(ApiRole::Viewer).await.unwrap();
    let second = open(ApiRole::Viewer).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let (status, body) = problem(open(ApiRole::Viewer).await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(open(ApiRole::Admin).await.unwrap().status(), 200);
    drop(first);
    // Its place is given back when a stream closes.
    flexcore_testkit::wait_until(Duration::from_secs(40), "a place back", || async {
        open(ApiRole::Viewer).await.unwrap().status() == 200
    })
    .await
    .unwrap();
}
