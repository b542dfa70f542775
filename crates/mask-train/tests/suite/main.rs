//! The learner's integration suite, one binary (burn's generic training code is compiled once):
//! resume exactness and determinism of every task, the learner's guarantees, adaptive masking.

mod adaptive;
mod common;
mod learner;
mod multitask;
mod parallel;
mod resume;
