//! Many Ed25519 signatures checked at once.
//!
//! One batch equation over n signatures costs about half of n single checks (measured in
//! docs/benchmarks.md). The equation holds for all of them or fails; only when it fails is
//! each signature checked alone, to say which ones are bad, so a forged message costs its
//! batch a second pass and is refused exactly as a single check refuses it.
//!
//! The batch equation is ed25519-dalek's: random 128-bit coefficients derived from every
//! input, no cofactor. It accepts what the single check accepts; the only signatures it
//! could accept that the single check refuses differ from a valid one by a point of small
//! order, which only the holder of a key whose public point has a small-order component
//! can make — and the keys are the identities file's, whose holders can sign anyway.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

/// Fewer signatures than this are checked one by one: a batch of two costs more than two
/// single checks, and four about as much.
const BATCH_MIN: usize = 5;
/// Most signatures in one batch equation (the equation's cost per signature stops falling
/// well before this).
const BATCH_MAX: usize = 128;

/// One signature to check: what it covers, the signature, the claimed signer's key.
pub(crate) struct Check {
    pub(crate) signed: Vec<u8>,
    pub(crate) signature: Signature,
    pub(crate) key: VerifyingKey,
}

impl Check {
    pub(crate) fn holds(&self) -> bool {
        self.key.verify(&self.signed, &self.signature).is_ok()
    }
}

/// Whether each of `checks` holds, in order.
pub(crate) fn verify_all(checks: &[&Check]) -> Vec<bool> {
    let mut verdicts = Vec::with_capacity(checks.len());
    for part in checks.chunks(BATCH_MAX) {
        if part.len() < BATCH_MIN || !batch_holds(part) {
            verdicts.extend(part.iter().map(|check| check.holds()));
        } else {
            verdicts.extend(std::iter::repeat_n(true, part.len()));
        }
    }
    verdicts
}

fn batch_holds(checks: &[&Check]) -> bool {
    let messages: Vec<&[u8]> = checks.iter().map(|c| c.signed.as_slice()).collect();
    let signatures: Vec<Signature> = checks.iter().map(|c| c.signature).collect();
    let keys: Vec<VerifyingKey> = checks.iter().map(|c| c.key).collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn checks(n: usize) -> Vec<Check> {
        let keys: Vec<SigningKey> = (1..=3u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        (0..n)
            .map(|i| {
                let key = &keys[i % keys.len()];
                let signed = format!("message {i}").into_bytes();
                Check {
                    signature: key.sign(&signed),
                    signed,
                    key: key.verifying_key(),
                }
            })
            .collect()
    }

    #[test]
    fn every_size_of_batch_finds_exactly_the_bad_signatures() {
        for n in [0, 1, 2, BATCH_MIN - 1, BATCH_MIN, 40, BATCH_MAX, BATCH_MAX + 3, 300] {
            let mut all = checks(n);
            let refs: Vec<&Check> = all.iter().collect();
            assert_eq!(verify_all(&refs), vec![true; n], "{n} good signatures");
            if n == 0 {
                continue;
            }
            // One altered message, one signature by another key, at both ends.
            all[0].signed.push(b'!');
            let last = n - 1;
            all[last].key = SigningKey::from_bytes(&[9; 32]).verifying_key();
            let refs: Vec<&Check> = all.iter().collect();
            let verdicts = verify_all(&refs);
            for (i, holds) in verdicts.iter().enumerate() {
                assert_eq!(*holds, i != 0 && i != last, "{n} signatures, #{i}");
            }
        }
    }
}
