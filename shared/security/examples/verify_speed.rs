//! How long signing and verifying one event-sized message takes here, verifying it again
//! through a [`VerifiedCache`], and verifying 64 different ones together
//! ([`flexcore_security::Trust::verify_all`], one batch equation).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use std::time::Instant;

use flexcore_security::kit::Kit;
use flexcore_security::{Identity, Role, Signed, VerifiedCache};

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
    let cached = started.elapsed() / n;
    let batch: Vec<(String, async_nats::HeaderMap)> = (0..64)
        .map(|i| {
            let subject = format!("flexcore.evt.run.{i}.requested");
            let headers = identity.signed_headers(&subject, &body);
            (subject, headers)
        })
        .collect();
    let signed: Vec<Signed<'_>> = batch
        .iter()
        .map(|(subject, headers)| Signed {
            subject,
            headers: Some(headers),
            body: &body,
        })
        .collect();
    let rounds = n / 64;
    let started = Instant::now();
    for _ in 0..rounds {
        let verdicts = trust.verify_all(&signed, &[Role::Command], None, None);
        assert!(verdicts.iter().all(Result::is_ok));
    }
    let together = started.elapsed() / (rounds * 64);
    println!(
        "sign {sign:?}/message, verify {verify:?}/message, verify again (cached) {cached:?}/message, \
         verify 64 together {together:?}/message"
    );
}
