//! Waiting for the JetStream streams: the `setup` identity creates them (`flexcore-command
//! setup`), no service may, so a service started first waits.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use tokio_util::sync::CancellationToken;

/// How often a missing stream is looked up again.
const RETRY: Duration = Duration::from_secs(1);
/// How many look-ups pass between two warnings.
const WARN_EVERY: u32 = 15;

/// The stream `name`, waiting (with a warning now and then) until setup has created it;
/// `None` if `shutdown` comes first.
pub async fn wait_for(js: &jetstream::Context, name: &str, shutdown: &CancellationToken) -> Option<Stream> {
    let mut attempt = 0u32;
    loop {
        match js.get_stream(name).await {
            Ok(stream) => return Some(stream),
            Err(error) => {
                if attempt.is_multiple_of(WARN_EVERY) {
                    tracing::warn!(stream = name, %error, "stream not there yet: waiting for setup (`flexcore-command setup`, run as the setup identity)");
                }
                attempt = attempt.wrapping_add(1);
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}
