//! A TCP port for a server a test starts itself, picked before the server binds it.
//!
//! `bind(0)` hands out ports from the kernel's ephemeral range, the same range outgoing
//! connections take their local ports from. So a port probed free that way can be taken
//! by any connection the machine opens before the server binds it (a CI failure seen
//! here). [`unused_port`] picks a random free port *below* the ephemeral range instead:
//! outgoing connections and `bind(0)` never take those, and another test picking the
//! same one at the same moment is unlikely among several thousand.

use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;

use anyhow::Context as _;

/// Where the kernel's ephemeral ports start, if this system says.
const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Lowest port picked: above the well-known and most registered service ports.
const LOWEST: u16 = 20_000;
/// Random ports tried before falling back to one from the ephemeral range.
const TRIES: usize = 64;

/// A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral
/// range when the system leaves room below it (else any free port).
pub fn unused_port() -> anyhow::Result<u16> {
    if let Some(spare) = below_ephemeral() {
        for _ in 0..TRIES {
            let port = spare.start + random_below(spare.end - spare.start);
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free TCP port")?;
    Ok(listener.local_addr()?.port())
}

/// The ports picked from: [`LOWEST`] up to the ephemeral range, if the system says where
/// that starts and leaves at least a thousand ports below it.
fn below_ephemeral() -> Option<Range<u16>> {
    let range = std::fs::read_to_string(EPHEMERAL_RANGE).ok()?;
    let start: u16 = range.split_whitespace().next()?.parse().ok()?;
    (start > LOWEST + 1_000).then_some(LOWEST..start)
}

/// A random number in `0..n` (`n > 0`), from a v4 UUID's random bits.
fn random_below(n: u16) -> u16 {
    let bits = uuid::Uuid::new_v4().as_u128();
    (bits % u128::from(n)) as u16
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_port_is_free_and_below_the_ephemeral_range() {
        let port = unused_port().unwrap();
        // Free: a server can bind it.
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        if let Some(spare) = below_ephemeral() {
            assert!(spare.contains(&port), "{port} not in {spare:?}");
        }
    }

    #[test]
    fn random_numbers_stay_in_range() {
        assert!((0..1_000).all(|_| random_below(7) < 7));
        assert_eq!(random_below(1), 0);
    }
}
