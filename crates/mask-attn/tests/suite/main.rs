//! The mask-attn integration suite, one binary (burn's generic kernels are compiled once).
//! The NdArray and burn-flex tests always run; the wgpu variants run with `--features wgpu-tests`.

mod affine;
mod common;
mod config_serde;
mod conformance;
mod kernels_vs_reference;
mod module;
mod semantics;
mod tiles;
