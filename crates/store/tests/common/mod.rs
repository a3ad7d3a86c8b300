//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

pub mod pg;
pub mod s3;

/// True when the test runs in CI, where a missing tool fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
