//! Seeded requests for the contract's differential tests, shared by
//! `shared/contracts/tests/differential.rs` (the decoders against a standard JSON Schema
//! validator, no I/O) and `tests/system/tests/it/fuzz.rs` (the live services), which
//! includes this module by path.
//!
//! - [`corpus`]: the aggregates a body may refer to ([`corpus::World`]) and a seeded
//!   generator of valid bodies for every command and query, from [`values`] (valid
//!   values of every field).
//! - [`mutate`]: mutations of a valid body: value-level ones that keep it JSON (dropped and
//!   added fields, wrong types, boundary numbers and lengths, hostile strings, nested
//!   garbage) and byte-level ones that may not (truncation, invalid UTF-8, repeated keys,
//!   deep nesting, other spellings of numbers).
//! - [`standard`]: what a client validating against `schemas/` sees: the schema files
//!   compiled by the `jsonschema` crate (draft as declared), and which bodies are JSON at all.
//!
//! A run is reproducible from its seed: `FLEXCORE_FUZZ_SEED` (decimal or `0x…`) replaces
//! the default, and tests print the seed with every failure.
#![allow(dead_code)]

pub mod corpus;
pub mod hostile;
pub mod mutate;
pub mod standard;
pub mod tree;
pub mod values;

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The seed every run uses unless `FLEXCORE_FUZZ_SEED` gives another.
pub const DEFAULT_SEED: u64 = 0x0f1e_c0de_2026_0014;

/// The run's seed: `FLEXCORE_FUZZ_SEED` (decimal or `0x` hex), else [`DEFAULT_SEED`].
pub fn seed() -> u64 {
    match std::env::var("FLEXCORE_FUZZ_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("FLEXCORE_FUZZ_SEED={text:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// The number in environment variable `var`, else `default`.
pub fn env_count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// A generator seeded with `seed`.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// How a failing run is reproduced.
pub fn reproduce(seed: u64) -> String {
    format!("reproduce with FLEXCORE_FUZZ_SEED={seed:#x}")
}

/// `text` cut to `max` characters for a failure message.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}… ({} bytes)", text.len())
}
