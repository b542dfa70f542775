//! Layer normalisation over the last axis: burn's [`LayerNorm`] module, computed by a fused
//! kernel on burn-flex (`crate::host`: one pass forward and one backward instead of burn's
//! ~11-op decomposition under autodiff), and by the module itself everywhere else.

use burn::nn::LayerNorm;
use burn::prelude::*;

/// `norm.forward(x)`: the fused flex path where it applies, else the module's own forward.
///
/// # Shapes
/// - `x`: `[.., d]` -> same
pub fn normalize<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    crate::host::try_layer_norm(norm, x).unwrap_or_else(|x| norm.forward(x))
}
