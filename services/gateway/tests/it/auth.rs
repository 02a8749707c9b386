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

/// A token signed with the test key `key` (a file under tests/it/keys) naming key `kid`.
pub fn signed(key: &str, kid: &str, claims: &serde_json::Value) -> String {
    let der = std::fs::read(format!("{}/tests/it/keys/{key}.der", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (algorithm, encoding) = if key.starts_with("ec") {
        (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_der(&der),
        )
    } else {
        (
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::EncodingKey::from_rsa_der(&der),
        )
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// The public half of test key `key`, as a JWK.
pub fn jwk(key: &str) -> serde_json::Value {
    let text = std::fs::read(format!("{}/tests/it/keys/{key}.jwk.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[tokio::test]
async fn tokens_of_an_identity_provider_are_checked_against_its_jwks_url_which_is_fetched_again() {
    use std::sync::{Arc, Mutex};
    // The identity provider's JWKS endpoint: ec1 and rsa now, ec2 after a rotation.
    let served = Arc::new(Mutex::new(json!({"keys": [jwk("ec1"), jwk("rsa")]})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get({
            let served = served.clone();
            move || {
                let body = served.lock().unwrap().clone();
                async move { axum::Json(body) }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = Gw::start_with(Options::default(), |g| {
        g.jwt_jwks_url = url.clone();
        g.jwt_jwks_refresh_seconds = 2;
        g.jwt_issuer = "https://idp.test".to_owned();
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let claims =
        json!({"sub": "carol", "exp": now + 600, "aud": "flexcore", "iss": "https://idp.test", "role": "operator"});
    let status = |token: String| {
        let request = gw.http.get(gw.url("/runs")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Fetched at start: ES256 and RS256 tokens of its keys are taken.
    let token = signed("ec1", "ec1", &claims);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status(token.clone()).await != 200 {
        assert!(std::time::Instant::now() < deadline, "the JWKS was never fetched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(signed("rsa", "rsa", &claims)).await, 200);
    // The operator's role holds: an unknown pipeline's execute is the service's 404.
    let execute = gw
        .http
        .post(gw.url(&format!("/pipelines/{}/execute", uuid::Uuid::new_v4())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(execute).await.0, 404);
    // The configured issuer is required; a key's signature under another kid fails.
    let mut no_issuer = claims.clone();
    no_issuer.as_object_mut().unwrap().remove("iss");
    assert_eq!(status(signed("ec1", "ec1", &no_issuer)).await, 401);
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = "https://evil.test".into();
    assert_eq!(status(signed("ec1", "ec1", &other_issuer)).await, 401);
    assert_eq!(status(signed("ec2", "ec1", &claims)).await, 401);
    // A key not published yet is refused, and taken once the provider publishes it.
    let rotated = signed("ec2", "ec2", &claims);
    assert_eq!(status(rotated.clone()).await, 401);
    served.lock().unwrap()["keys"].as_array_mut().unwrap().push(jwk("ec2"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status(rotated.clone()).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A provider that fails keeps the keys held: tokens still pass.
    *served.lock().unwrap() = json!({"not": "a jwks"});
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status(rotated).await, 200);
}
