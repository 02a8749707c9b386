//! For the services' metrics tests (each includes this file with `#[path]`): a plain
//! HTTP/1.1 `GET` of an admin server, and a small parser of the Prometheus text format.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The status code, the `Content-Type` and the body of `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8(response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no end of headers in {response:?}"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?
            .parse()?;
        let content_type = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, content_type, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await?
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    /// The sum of the samples named `name` that carry every label of `labels`; `None`
    /// when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Self::value`], 0 when absent (a counter not yet created).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether `# TYPE <family> <kind>` is on the page.
    pub fn has_type(&self, family: &str, kind: &str) -> bool {
        self.text.lines().any(|l| l == format!("# TYPE {family} {kind}"))
    }
}

/// Parses the text format (0.0.4): comment lines are skipped, label values unescaped.
pub fn parse(text: &str) -> anyhow::Result<Metrics> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| anyhow::anyhow!("no value: {line:?}"))?;
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let (i, c) = chars
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("unclosed labels: {line:?}"))?;
                match c {
                    '}' => break i,
                    ',' | ' ' => {}
                    '=' => {
                        anyhow::ensure!(chars.next().map(|(_, c)| c) == Some('"'), "unquoted value: {line:?}");
                        let mut value = String::new();
                        loop {
                            let (_, c) = chars
                                .next()
                                .ok_or_else(|| anyhow::anyhow!("unclosed value: {line:?}"))?;
                            match c {
                                '"' => break,
                                '\\' => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(other) => value.push(other),
                                    None => anyhow::bail!("dangling escape: {line:?}"),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no value: {line:?}"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|e| anyhow::anyhow!("bad value in {line:?}: {e}"))?,
        };
        samples.push(Sample { name, labels, value });
    }
    Ok(Metrics {
        samples,
        text: text.to_owned(),
    })
}

/// `GET /metrics`, checked for status and content type, parsed.
pub async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, content_type, body) = get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse(&body).unwrap_or_else(|e| panic!("{e}; page:\n{body}"))
}

/// `GET /health/ready`: the status code and the JSON body.
pub async fn ready(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (status, _, body) = get(addr, "/health/ready").await.expect("GET /health/ready");
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// Whether the check `name` of a `/health/ready` body passed (`None`: not listed).
pub fn check_ok(body: &serde_json::Value, name: &str) -> Option<bool> {
    body["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["ok"].as_bool())
}
