//! How long signing and verifying one event-sized message takes here, and verifying it
//! again through a [`VerifiedCache`] (what the projection's second to fifth views pay).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use std::time::Instant;

use flexcore_security::kit::Kit;
use flexcore_security::{Identity, Role, VerifiedCache};

fn main() {
    let kit = Kit::generate(&[("command", Role::Command)]);
    let trust = kit.trust().unwrap();
    let identity = Identity::from_seed(kit.seed("command").unwrap(), &trust).unwrap();
    let body = vec![b'x'; 600];
    let n = 20_000;
    let started = Instant::now();
    let mut headers = async_nats::HeaderMap::new();
    for _ in 0..n {
        headers = async_nats::HeaderMap::new();
        identity.sign("flexcore.evt.run.x.requested", &mut headers, &body);
    }
    let sign = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        trust
            .verify(
                "flexcore.evt.run.x.requested",
                Some(&headers),
                &body,
                &[Role::Command],
                None,
            )
            .unwrap();
    }
    let verify = started.elapsed() / n;
    let cache = VerifiedCache::new(1024);
    let message = async_nats::Message {
        subject: "flexcore.evt.run.x.requested".into(),
        reply: None,
        payload: body.clone().into(),
        headers: Some(headers),
        status: None,
        description: None,
        length: body.len(),
    };
    trust.verify_message_cached(&message, &[Role::Command], &cache).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        trust.verify_message_cached(&message, &[Role::Command], &cache).unwrap();
    }
    println!(
        "sign {sign:?}/message, verify {verify:?}/message, verify again (cached) {:?}/message",
        started.elapsed() / n
    );
}
