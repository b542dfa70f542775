//! Test helpers shared by several integration tests.

pub mod brown;
