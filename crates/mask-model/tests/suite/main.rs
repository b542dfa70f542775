//! mask-model test suite (one binary: burn's kernels are monomorphised once).

mod common;
mod config_serde;
mod flex;
mod gradients;
mod hf_conformance;
mod hf_reference;
mod host;
mod invariance;
mod persistence;
mod shapes;
#[cfg(feature = "wgpu-tests")]
mod wgpu;
