//! An OTLP/gRPC trace sink that counts what it receives: the far end of a benchmark run
//! with span export on, where no collector is installed.
//!
//! ```text
//! cargo run --release -p flexcore-telemetry --features collector --example otlp_sink -- 127.0.0.1:4317
//! ```
//!
//! Point the services at it with `FLEXCORE__TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:4317`.
//! Every second it prints the spans and export requests received in that second and in
//! all; Ctrl-C prints the totals and exits.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use flexcore_telemetry::collector::Collector;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:4317")
        .parse()
        .context("the argument must be a socket address such as 127.0.0.1:4317")?;
    let sink = Collector::listen(addr, false)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("otlp_sink: receiving OTLP/gRPC traces at {}", sink.endpoint);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = sink.span_count();
                if now != last {
                    println!("spans/s {:>8}  spans {now:>10}  requests {:>8}", now - last, sink.request_count());
                    last = now;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "otlp_sink: {} spans in {} requests",
        sink.span_count(),
        sink.request_count()
    );
    Ok(())
}
