//! Exact GELU (Hendrycks & Gimpel 2016), `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, written as
//! tensor ops so autodiff differentiates it exactly.
//!
//! Why not `burn::tensor::activation::gelu`: in burn 0.21 its backward is the derivative of the
//! *tanh approximation* (`gelu_backward` in burn-backend), not of the erf form its forward
//! computes, so gradients disagree with PyTorch's `gelu` by up to ~1e-3 — and on NdArray that
//! backward (`powf`, `tanh` per element) cost ~12% of a BERT training step. Here the backward
//! is `d/dx = Phi(x) + x phi(x)`, from `erf`'s derivative `2/sqrt(pi) exp(-z^2)`.
//!
//! On burn-flex (`f32`, with or without autodiff) it runs as one fused, multi-threaded and
//! vectorised pass each way (`crate::host`), with PyTorch's CPU approximation of `erf`
//! (absolute error <= 1.5e-7): within that of [`gelu_reference`], not bit for bit.

use burn::prelude::*;

/// Exact GELU: the fused flex path where it applies, else [`gelu_reference`].
///
/// # Shapes
/// - any -> same
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::host::try_gelu(x).unwrap_or_else(gelu_reference)
}

/// Exact GELU as tensor ops, on any backend (the reference the fused path is tested against).
///
/// # Shapes
/// - any -> same
pub fn gelu_reference<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let phi = (x.clone() * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0; // 2 Phi(x)
    x * phi * 0.5
}
