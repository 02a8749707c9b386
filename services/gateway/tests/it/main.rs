//! The gateway on the real stack: the services in-process over a private nats-server and
//! Postgres (flexcore-system-tests), the gateway on a free port as identity `gateway`,
//! requests over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api;
mod auth;
mod browser;
mod console;
mod hostile;
mod openapi;
mod python;
mod upload;

use std::net::SocketAddr;

use flexcore_config::{GatewaySettings, Settings};
use flexcore_gateway::auth::KeysFile;
use flexcore_security::ApiRole;
use flexcore_system_tests::{Options, Stack};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The HS256 secret of the tests' JWTs.
pub const JWT_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// A gateway in front of a stack, with one API key per role.
pub struct Gw {
    pub stack: Stack,
    pub base: String,
    pub http: reqwest::Client,
    /// API keys by role: viewer, operator, admin.
    pub keys: [String; 3],
    pub stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Gw {
    pub async fn start(options: Options) -> Self {
        Self::start_with(options, |_| {}).await
    }

    pub async fn start_with(options: Options, tune: impl FnOnce(&mut GatewaySettings)) -> Self {
        let stack = Stack::start(options).await;
        let dir = tempfile::tempdir().unwrap();
        let mut file = KeysFile::default();
        let keys = [
            file.create("watcher", ApiRole::Viewer).unwrap(),
            file.create("ops", ApiRole::Operator).unwrap(),
            file.create("boss", ApiRole::Admin).unwrap(),
        ];
        let keys_path = dir.path().join("api-keys.json");
        file.write(&keys_path).unwrap();
        let secret_path = dir.path().join("jwt.secret");
        std::fs::write(&secret_path, JWT_SECRET).unwrap();
        let mut settings = Settings::default();
        stack.nats.settings_for("gateway", &mut settings);
        settings.gateway.api_keys_file = keys_path.display().to_string();
        settings.gateway.jwt_hs256_secret_file = secret_path.display().to_string();
        settings.gateway.jwt_audience = "flexcore".to_owned();
        tune(&mut settings.gateway);
        let credentials = stack.nats.credentials("gateway").unwrap();
        let nats = flexcore_service::connect::nats("gateway", &settings.nats, Some(&credentials.identity))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let gateway = flexcore_gateway::Gateway::new(
            &settings.gateway,
            credentials,
            nats,
            std::time::Duration::from_secs(5),
            stop.clone(),
        )
        .unwrap();
        let listener = flexcore_gateway::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(flexcore_gateway::serve_on(listener, gateway, stop.clone()));
        Self {
            stack,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            keys,
            stop,
            _dir: dir,
        }
    }

    /// `path` under the API's base.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/flexcore{path}", self.base)
    }

    /// The gateway's API keys file.
    pub fn keys_file(&self) -> std::path::PathBuf {
        self._dir.path().join("api-keys.json")
    }

    pub fn key(&self, role: ApiRole) -> &str {
        &self.keys[role as usize]
    }

    /// A request as `role`.
    pub fn as_role(&self, role: ApiRole, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(self.key(role))
    }

    /// POSTs `body` as `role`; the response.
    pub async fn post(&self, role: ApiRole, path: &str, body: Value) -> reqwest::Response {
        self.as_role(role, reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// GETs as `role`; (status, body).
    pub async fn get(&self, role: ApiRole, path: &str) -> (u16, Value) {
        let response = self.as_role(role, reqwest::Method::GET, path).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The example generator → discard pipeline, created through the API as admin; its id.
    pub async fn pipeline(&self, name: &str) -> String {
        let generator = self
            .stack
            .register(
                "flexcore-plugin-generator",
                &format!("{name}-gen"),
                "extractor",
                json!({}),
            )
            .await;
        let discard = self
            .stack
            .register(
                "flexcore-plugin-discard",
                &format!("{name}-discard"),
                "loader",
                json!({}),
            )
            .await;
        let response = self
            .post(
                ApiRole::Admin,
                "/pipelines",
                json!({"name": name, "owner": "o", "steps": [
                    {"plugin": generator, "config": {"records": 20}}, {"plugin": discard}]}),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["aggregate_id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A problem document's essentials: (status, content type, body).
pub async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail", "code"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
    (status, body)
}
