//! Shared by the integration tests and (by path) the benchmarks.
#![allow(dead_code)]
// Test and benchmark fixtures: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod generate;
pub mod rego;
