//! Parameter initialisation shared by every module: weights `N(0, init_std)` (BERT), biases 0,
//! norms `gamma = 1, beta = 0`.

use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

/// A linear layer `d_in -> d_out` with `N(0, std)` weights and a zero bias (if `bias`).
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    std: f64,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    if bias {
        layer.bias = Some(Initializer::Zeros.init([d_out], device));
    }
    layer
}

/// An embedding table `[n, d]` with `N(0, std)` entries.
pub(crate) fn embedding<B: Backend>(
    n: usize,
    d: usize,
    std: f64,
    device: &B::Device,
) -> Embedding<B> {
    EmbeddingConfig::new(n, d)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// A layer norm over `d` features.
pub(crate) fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// A parameter of `shape` drawn from `N(0, std)`.
pub(crate) fn normal_param<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Normal { mean: 0.0, std }.init(shape, device)
}

/// Forces every lazily initialised parameter to draw its value now.
///
/// burn 0.21 initialises parameters on first use, and a clone of a module made before that draws
/// its own, different values. Every `init` in this crate materialises its module so that clones
/// (checkpoints, optimizer copies, `model.clone()` in a training loop) are the same model.
pub fn materialize<B: Backend, M: burn::module::Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
