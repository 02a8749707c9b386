//! Who may do what: 401 without or with bad credentials, 403 for a role too small (checked
//! by the gateway and again by the command service), JWTs, revocation, rate limits.

use std::time::Duration;

use flexcore_gateway::auth::KeysFile;
use flexcore_security::ApiRole;
use flexcore_system_tests::Options;
use serde_json::json;

use crate::{problem, Gw, JWT_SECRET};

fn jwt(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn callers_are_authenticated_and_held_to_their_role() {
    let gw = Gw::start(Options::default()).await;
    let list = gw.url("/pipelines");

    // No credentials, a malformed header, an unknown key: 401 with a challenge.
    let none = gw.http.get(&list).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let (status, body) = problem(none).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));
    let basic = gw
        .http
        .get(&list)
        .header("Authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(basic).await.0, 401);
    let forged = format!("fck_{}", "A".repeat(43));
    let unknown = gw.http.get(&list).bearer_auth(&forged).send().await.unwrap();
    let (status, body) = problem(unknown).await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains(&forged), "the key is never echoed: {body}");

    // Every role reads; only operators run, only admins create.
    for role in [ApiRole::Viewer, ApiRole::Operator, ApiRole::Admin] {
        assert_eq!(gw.get(role, "/pipelines").await.0, 200);
    }
    let id = uuid::Uuid::new_v4();
    let (status, body) = problem(
        gw.post(ApiRole::Viewer, &format!("/pipelines/{id}/execute"), json!({}))
            .await,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = problem(
        gw.post(
            ApiRole::Operator,
            "/pipelines",
            json!({"name": "n", "owner": "o", "steps": []}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    // An operator may execute: this pipeline does not exist, which only the service knows.
    let (status, body) = problem(
        gw.post(ApiRole::Operator, &format!("/pipelines/{id}/execute"), json!({}))
            .await,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");

    // JWTs: signature, expiry, audience, role.
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub": "alice", "exp": now + 60, "aud": "flexcore", "role": "viewer"});
    let token = jwt(good.clone(), JWT_SECRET);
    let ok = gw.http.get(&list).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let mut expired = good.clone();
    expired["exp"] = (now - 3600).into();
    let mut audience = good.clone();
    audience["aud"] = "someone-else".into();
    for token in [
        jwt(expired, JWT_SECRET),
        jwt(audience, JWT_SECRET),
        jwt(good.clone(), "another-secret-of-at-least-32-bytes!"),
        "not.a.jwt".to_owned(),
    ] {
        let refused = gw.http.get(&list).bearer_auth(&token).send().await.unwrap();
        assert_eq!(problem(refused).await.0, 401);
    }
    // A viewer's JWT cannot pause; its principal is named in the refusal.
    let pause = gw
        .http
        .post(gw.url(&format!("/pipelines/{id}/pause")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(pause).await;
    assert_eq!(status, 403);
    assert!(body["detail"].as_str().unwrap().contains("jwt:alice"), "{body}");
}

#[tokio::test]
async fn a_revoked_key_stops_working_without_a_restart() {
    let gw = Gw::start(Options::default()).await;
    assert_eq!(gw.get(ApiRole::Operator, "/runs").await.0, 200);
    // The gateway's keys file, rewritten as `flexctl api-key revoke` does (after a second,
    // so its modification time differs on any file system).
    let path = gw.keys_file();
    let mut file = KeysFile::read(&path).unwrap();
    assert!(file.revoke("ops"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    file.write(&path).unwrap();
    flexcore_testkit::wait_until(Duration::from_secs(10), "the revoked key refused", || async {
        gw.get(ApiRole::Operator, "/runs").await.0 == 401
    })
    .await
    .unwrap();
    assert_eq!(gw.get(ApiRole::Viewer, "/runs").await.0, 200, "the others still work");
}

#[tokio::test]
async fn callers_over_their_rate_get_429_with_retry_after() {
    let gw = Gw::start_with(Options::default(), |g| {
        g.rate_limit_per_second = 1;
        g.rate_limit_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let response = gw
            .as_role(ApiRole::Viewer, reqwest::Method::GET, "/runs")
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            retry_after = Some(response.headers()["retry-after"].to_str().unwrap().to_owned());
            assert_eq!(problem(response).await.1["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses[..2], [200, 200]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Per caller: another key is not held back.
    assert_eq!(gw.get(ApiRole::Admin, "/runs").await.0, 200);
}
