//! CPU fast paths on burn-flex for element-wise layers that burn would run as a chain of
//! tensor ops.
//!
//! Why: a flex training step runs every element-wise op on the calling thread, one pass and
//! one fresh buffer per op (docs/benchmarks.md, "Why the train step is far from HF"). Exact GELU
//! as tensor ops is 5 passes forward and ~12 under autodiff, over the largest activation of
//! the block (`[B, T, F]`, F = 4d). Here it is one pass forward and one backward, split over
//! rayon's threads, as one autodiff node whose state is the input alone.
//!
//! How, without a trait bound on every model: the model stays generic over `B: Backend`; a
//! function here takes the generic tensor and, when `B` *is* `Flex` or `Autodiff<Flex>` (a
//! `TypeId` test, resolved at compile time per instantiation), moves it into the concrete type
//! through [`std::any::Any`] (safe code, no transmute). Every other backend, and flex tensors of
//! another element type, take the reference path unchanged.
//!
//! Kernels:
//! - GELU: exact GELU (the erf form, not the tanh approximation) with a vectorised `erf` of
//!   PyTorch's CPU precision (absolute error <= 1.5e-7, [`one_plus_erf`]) and one shared
//!   `e^(-u^2)` per element, forward and backward, compiled for AVX-512 or AVX2+FMA where the
//!   CPU has them. Not bit-equal to the tensor-op reference (libm's scalar `erff`, which was
//!   7% of a flex training step): within the bound derived in the tests.
//! - LayerNorm over the last axis (with bias): under autodiff burn decomposes it into ~11 ops
//!   forward (two reductions, broadcast subtract, divide, scale, shift) and twice that
//!   backward. Here one pass per row forward (mean and variance accumulated in `f64`) and one
//!   backward with the closed-form gradient `dx = rstd (g' - mean(g') - xhat mean(g' xhat))`,
//!   `g' = g gamma`; gamma's and beta's gradients are summed per chunk of rows and the chunks
//!   added in order, so the result does not depend on thread timing. Not bit-equal to the
//!   decomposition (summation order): within a few `f32` ulps of it (tested).
//!
//! Both are tested in `tests/suite/host.rs` against the reference.

// The SIMD copies of the GELU loops are `#[target_feature]` functions, called after a CPU
// feature check (as mask-attn's exp loop): one of the exceptions to `unsafe_code = "deny"`
// that the workspace's Cargo.toml lists.
#![allow(unsafe_code)]

use std::f64::consts::FRAC_1_SQRT_2;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use mask_attn::flex::{on_flex, primitive, values};
use mask_attn::kernels::host::exp_nonpositive;
use rayon::prelude::*;

/// Elements per rayon task: below two chunks the kernel runs on the calling thread.
const CHUNK: usize = 1 << 15;

/// `f(a, out)` over parallel chunks of `a` and a fresh output.
fn map1(a: &[f32], f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .for_each(|(o, a)| f(a, o));
    out
}

/// `f(a, b, out)` over parallel chunks of `a`, `b` and a fresh output.
fn map2(a: &[f32], b: &[f32], f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| f(a, b, o));
    out
}

/// A contiguous flex tensor of `values` with `like`'s (logical) shape.
fn flex(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

// ---------------------------------------------------------------------------------------------
// GELU
// ---------------------------------------------------------------------------------------------

/// `(1 + erf(u), e^(-u^2))`, branch-free so that loops over it vectorise (`FMA`: fused
/// multiply-adds, only where the CPU has them). `erfc(|u|) = t P(t) e^(-u^2)`,
/// `t = 1 / (1 + p |u|)`, with Abramowitz & Stegun's formula 7.1.26 (absolute error at most
/// 1.5e-7), the approximation PyTorch's vectorised CPU `erf` uses (ATen's
/// `Vectorized<float>::erf`, behind its exact GELU), and `e^x` from the attention kernel's
/// polynomial. `1 + erf(u)` is returned as `erfc(|u|)` for `u < 0` rather than as `1 - erfc`,
/// so the negative tail keeps its relative precision (`1 + erf` in `f32` cancels there).
#[inline(always)]
fn one_plus_erf<const FMA: bool>(u: f32) -> (f32, f32) {
    let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let t = 1.0 / fma(0.327_591_1, u.abs(), 1.0);
    let p = fma(1.061_405_4, t, -1.453_152);
    let p = fma(p, t, 1.421_413_7);
    let p = fma(p, t, -0.284_496_74);
    let p = fma(p, t, 0.254_829_6);
    let e = exp_nonpositive::<FMA>(-(u * u));
    let erfc = p * t * e;
    (if u < 0.0 { erfc } else { 2.0 - erfc }, e)
}

/// `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`.
#[inline(always)]
fn gelu_f32<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * one_plus_erf::<FMA>(x * FRAC_1_SQRT_2 as f32).0
}

/// `g (Phi(x) + x phi(x))`, `phi(x) = e^(-x^2 / 2) / sqrt(2 pi)`.
#[inline(always)]
fn gelu_grad_f32<const FMA: bool>(x: f32, g: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let (phi2, e) = one_plus_erf::<FMA>(x * FRAC_1_SQRT_2 as f32);
    g * fma(x * INV_SQRT_2PI, e, 0.5 * phi2)
}

/// `out[i] = gelu(x[i])` on one chunk, compiled for the widest SIMD the CPU has.
fn gelu_chunk(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features this copy was compiled for.
            return unsafe { gelu_chunk_avx512(x, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { gelu_chunk_avx2(x, out) };
        }
    }
    gelu_chunk_portable::<false>(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_chunk_avx512(x: &[f32], out: &mut [f32]) {
    gelu_chunk_portable::<true>(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_chunk_avx2(x: &[f32], out: &mut [f32]) {
    gelu_chunk_portable::<true>(x, out)
}

#[inline(always)]
fn gelu_chunk_portable<const FMA: bool>(x: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = gelu_f32::<FMA>(x);
    }
}

/// `out[i] = g[i] gelu'(x[i])` on one chunk, compiled for the widest SIMD the CPU has.
fn gelu_grad_chunk(x: &[f32], g: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features this copy was compiled for.
            return unsafe { gelu_grad_chunk_avx512(x, g, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { gelu_grad_chunk_avx2(x, g, out) };
        }
    }
    gelu_grad_chunk_portable::<false>(x, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_grad_chunk_avx512(x: &[f32], g: &[f32], out: &mut [f32]) {
    gelu_grad_chunk_portable::<true>(x, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_grad_chunk_avx2(x: &[f32], g: &[f32], out: &mut [f32]) {
    gelu_grad_chunk_portable::<true>(x, g, out)
}

#[inline(always)]
fn gelu_grad_chunk_portable<const FMA: bool>(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
        *o = gelu_grad_f32::<FMA>(x, g);
    }
}

fn gelu_flex(x: &FlexTensor) -> FlexTensor {
    flex(map1(&values(x), gelu_chunk), x)
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input (shared, not copied).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            flex(map2(&values(&x), &values(&g), gelu_grad_chunk), &x)
        });
    }
}

/// Exact GELU on a flex `f32` tensor, with or without autodiff; `Err(x)` (unchanged) for
/// every other backend and element type.
pub(crate) fn try_gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> std::result::Result<Tensor<B, D>, Tensor<B, D>> {
    on_flex(
        x,
        |t| match GeluBackward
            .prepare::<NoCheckpointing>([t.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = gelu_flex(&t.primitive);
                prep.finish(t.primitive, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_flex(&t.primitive)),
        },
        |t| gelu_flex(&t),
    )
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last axis
// ---------------------------------------------------------------------------------------------

/// Rows of `d` per rayon task (at least one).
fn rows_per_chunk(d: usize) -> usize {
    (CHUNK / d.max(1)).max(1)
}

/// Per-row statistics kept for the backward pass: mean and `1 / sqrt(var + eps)`.
#[derive(Debug, Clone)]
struct RowStats {
    mean: Arc<Vec<f32>>,
    rstd: Arc<Vec<f32>>,
}

/// `y = (x - mean) rstd gamma + beta` per row of `d`; returns `y` and the row statistics.
fn layer_norm_forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> (Vec<f32>, RowStats) {
    let d = gamma.len();
    let rows = x.len() / d;
    let mut y = vec![0f32; x.len()];
    let mut mean = vec![0f32; rows];
    let mut rstd = vec![0f32; rows];
    let per = rows_per_chunk(d);
    y.par_chunks_mut(per * d)
        .zip(x.par_chunks(per * d))
        .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
        .for_each(|((y, x), (mean, rstd))| {
            for (((y, x), m), r) in y
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(mean.iter_mut())
                .zip(rstd.iter_mut())
            {
                let mu = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / d as f64;
                let rs = 1.0 / (var + eps).sqrt();
                let (mu32, rs32) = (mu as f32, rs as f32);
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *y = (x - mu32) * rs32 * g + b;
                }
                (*m, *r) = (mu32, rs32);
            }
        });
    let stats = RowStats {
        mean: Arc::new(mean),
        rstd: Arc::new(rstd),
    };
    (y, stats)
}

/// Gradients `(dx, dgamma, dbeta)` of `layer_norm_forward` for the upstream gradient `g`.
fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    stats: &RowStats,
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let per = rows_per_chunk(d);
    let mut dx = vec![0f32; x.len()];
    // One (dgamma, dbeta) partial per chunk of rows, added in chunk order below.
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(per * d)
        .zip(x.par_chunks(per * d).zip(g.par_chunks(per * d)))
        .zip(stats.mean.par_chunks(per).zip(stats.rstd.par_chunks(per)))
        .map(|((dx, (x, g)), (mean, rstd))| {
            let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
            let mut xhat = vec![0f32; d];
            for ((((dx, x), g), &mu), &rs) in dx
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(g.chunks_exact(d))
                .zip(mean)
                .zip(rstd)
            {
                let (mut sum_gg, mut sum_gg_xhat) = (0f64, 0f64);
                for j in 0..d {
                    xhat[j] = (x[j] - mu) * rs;
                    let gg = (g[j] * gamma[j]) as f64;
                    sum_gg += gg;
                    sum_gg_xhat += gg * xhat[j] as f64;
                    dgamma[j] += (g[j] * xhat[j]) as f64;
                    dbeta[j] += g[j] as f64;
                }
                let (a, b) = ((sum_gg / d as f64) as f32, (sum_gg_xhat / d as f64) as f32);
                for j in 0..d {
                    dx[j] = rs * (g[j] * gamma[j] - a - xhat[j] * b);
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
    for (pg, pb) in partials {
        dgamma.iter_mut().zip(pg).for_each(|(s, v)| *s += v);
        dbeta.iter_mut().zip(pb).for_each(|(s, v)| *s += v);
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, to32(dgamma), to32(dbeta))
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// Input, gamma, row statistics.
    type State = (FlexTensor, FlexTensor, RowStats);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, stats) = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let (dx, dgamma, dbeta) =
            layer_norm_backward(&values(&x), &values(&gamma), &stats, &values(&g));
        let [node_x, node_gamma, node_beta] = ops.parents;
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, &x));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(dgamma, &gamma));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(dbeta, &gamma));
        }
    }
}

/// The module's epsilon. burn 0.21 keeps the field private and has no getter; its public
/// [`ModuleDisplay`](burn::module::ModuleDisplay) content carries it as `f64` `Display` text,
/// which parses back to the same value (shortest round-trip form). `None` if that ever changes
/// (then the module's own forward runs; tested for the epsilons the presets use).
pub(crate) fn layer_norm_epsilon<B: Backend>(norm: &LayerNorm<B>) -> Option<f64> {
    use burn::module::{Content, DisplaySettings, ModuleDisplay};
    let content = norm.custom_content(Content::new(DisplaySettings::new()))?;
    let attribute = content.attributes.iter().find(|a| a.name == "epsilon")?;
    attribute.value.trim().parse().ok()
}

/// `norm.forward(x)` on a flex `f32` tensor with or without autodiff, fused; `Err(x)`
/// (unchanged) for every other backend, element type, or a norm without bias.
pub(crate) fn try_layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
) -> std::result::Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(beta) = norm.beta.as_ref() else {
        return Err(x);
    };
    if norm.gamma.val().dtype() != DType::F32 {
        return Err(x);
    }
    let Some(eps) = layer_norm_epsilon(norm) else {
        return Err(x);
    };
    on_flex(
        x,
        |t| {
            let gt = primitive::<B, Autodiff<Flex>, 1>(norm.gamma.val());
            let bt = primitive::<B, Autodiff<Flex>, 1>(beta.val());
            let (y, stats) = layer_norm_forward(
                &values(&t.primitive),
                &values(&gt.primitive),
                &values(&bt.primitive),
                eps,
            );
            let y = flex(y, &t.primitive);
            match LayerNormBackward
                .prepare::<NoCheckpointing>([t.node.clone(), gt.node.clone(), bt.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((t.primitive, gt.primitive, stats), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        },
        |t| {
            let gamma = primitive::<B, Flex, 1>(norm.gamma.val());
            let beta = primitive::<B, Flex, 1>(beta.val());
            let (y, _) = layer_norm_forward(&values(&t), &values(&gamma), &values(&beta), eps);
            flex(y, &t)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_epsilon_is_read_back_exactly() {
        let device = Default::default();
        for eps in [1e-12, 1e-6, 1e-5, 0.1, 3.25e-7] {
            let norm = burn::nn::LayerNormConfig::new(8)
                .with_epsilon(eps)
                .init::<Flex>(&device);
            assert_eq!(layer_norm_epsilon(&norm), Some(eps));
        }
    }

    #[test]
    fn layer_norm_by_hand() {
        // One row [1, 2, 3, 4]: mean 2.5, var 1.25, rstd 1/sqrt(1.25 + 0) = 0.894427191.
        let (y, stats) = layer_norm_forward(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], &[0.0; 4], 0.0);
        let want = [-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        assert_eq!(stats.mean[0], 2.5);
        // d/dx of sum(y * g) with g = (1, 0, 0, 0), gamma 1: rstd (e0 - 1/4 - xhat xhat_0 / 4).
        let (dx, dgamma, dbeta) = layer_norm_backward(
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0; 4],
            &stats,
            &[1.0, 0.0, 0.0, 0.0],
        );
        let rs = 0.894_427_2f32;
        let xhat = want;
        for j in 0..4 {
            let e = if j == 0 { 1.0 } else { 0.0 };
            let want = rs * (e - 0.25 - xhat[j] * xhat[0] / 4.0);
            assert!((dx[j] - want).abs() < 1e-6, "dx {dx:?}");
        }
        assert_eq!(dbeta, vec![1.0, 0.0, 0.0, 0.0]);
        assert!((dgamma[0] - xhat[0]).abs() < 1e-6 && dgamma[1..] == [0.0; 3]);
        // eps inside the root, with gamma and beta: var 1.25 + eps 0.75 = 2, rstd 1/sqrt(2);
        // y = 2 (x - 2.5) / sqrt(2) + 1 = 1 + (-1.5, -0.5, 0.5, 1.5) sqrt(2).
        let (y, stats) = layer_norm_forward(&[1.0, 2.0, 3.0, 4.0], &[2.0; 4], &[1.0; 4], 0.75);
        let want = [-1.121_320_3, 0.292_893_2, 1.707_106_8, 3.121_320_3];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        assert!((stats.rstd[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
    }

    #[test]
    fn gelu_scalar_values_by_hand() {
        // GELU(0) = 0; GELU(1) = Phi(1) = 0.841344746; GELU(-1) = -0.158655254;
        // GELU'(0) = 0.5; GELU'(1) = Phi(1) + phi(1) = 0.841344746 + 0.241970725.
        type Pair = (fn(f32) -> f32, fn(f32, f32) -> f32);
        let variants: [Pair; 2] = [
            (gelu_f32::<false>, gelu_grad_f32::<false>),
            (gelu_f32::<true>, gelu_grad_f32::<true>),
        ];
        for (gelu, grad) in variants {
            assert_eq!(gelu(0.0), 0.0);
            assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
            assert!((gelu(-1.0) + 0.158_655_25).abs() < 1e-6);
            assert!((grad(0.0, 1.0) - 0.5).abs() < 1e-7);
            assert!((grad(1.0, 1.0) - 1.083_315_5).abs() < 1e-6);
            assert!((grad(1.0, 2.0) - 2.0 * 1.083_315_5).abs() < 2e-6);
            assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
            assert!(gelu(f32::NAN).is_nan() && grad(f32::NAN, 1.0).is_nan());
        }
    }

    /// Against GELU and its derivative in `f64` (libm's `erf`) on a dense grid over [-12, 12].
    ///
    /// Error analysis, with `u = x / sqrt 2`, `E = erfc(|u|) <= 1`: Abramowitz & Stegun bound
    /// `1 + erf` by 1.5e-7 absolute; evaluating `t P(t) e^(-u^2)` in `f32` adds a relative
    /// error of at most ~8 ulp of `E` (division, four FMAs, `exp` within 4e-7, two products:
    /// 1e-6 E), and `2 - E` one rounding of 2 (1.2e-7). GELU = `0.5 x (1 + erf)`, so its
    /// error is at most `0.5 |x| (2.7e-7 + 1e-6 E)` plus two roundings of the result
    /// (2.4e-7 |y|). The derivative `0.5 (1 + erf) + x e^(-u^2) / sqrt(2 pi)` adds to half
    /// that bound the error of `e^(-u^2)`: `exp`'s 4e-7 and the rounding of `u^2` (`u^2`
    /// ulp, relative, in the exponent), times `|x| e^(-u^2) / sqrt(2 pi)`.
    #[test]
    fn gelu_is_within_its_error_bound_of_the_f64_function() {
        let mut worst = [0.0f64; 4];
        for i in -240_000..=240_000 {
            let x = i as f32 * 5e-5; // [-12, 12], step 5e-5
            let (xd, u) = (x as f64, x as f64 * FRAC_1_SQRT_2);
            let erfc = libm::erfc(u.abs());
            let y = 0.5 * xd * (1.0 + libm::erf(u));
            let e = (-u * u).exp();
            let dy = 0.5 * (1.0 + libm::erf(u)) + xd * e / (2.0 * std::f64::consts::PI).sqrt();
            let y_bound = 0.5 * xd.abs() * (2.7e-7 + 1e-6 * erfc) + 2.4e-7 * y.abs() + 1e-37;
            let e_rel = 4e-7 + u * u * f32::EPSILON as f64;
            let dy_bound = 0.5 * (2.7e-7 + 1e-6 * erfc)
                + xd.abs() * e / (2.0 * std::f64::consts::PI).sqrt() * e_rel
                + 2.4e-7 * dy.abs();
            for (k, fma) in [false, true].into_iter().enumerate() {
                let (gy, gdy) = if fma {
                    (gelu_f32::<true>(x), gelu_grad_f32::<true>(x, 1.0))
                } else {
                    (gelu_f32::<false>(x), gelu_grad_f32::<false>(x, 1.0))
                };
                let (ey, edy) = ((gy as f64 - y).abs(), (gdy as f64 - dy).abs());
                assert!(
                    ey <= y_bound,
                    "gelu({x}) = {gy}, want {y} (bound {y_bound:e})"
                );
                assert!(
                    edy <= dy_bound,
                    "gelu'({x}) = {gdy}, want {dy} (bound {dy_bound:e})"
                );
                worst[2 * k] = worst[2 * k].max(ey / y_bound);
                worst[2 * k + 1] = worst[2 * k + 1].max(edy / dy_bound);
            }
        }
        // The bounds are not loose by orders of magnitude: some point uses a tenth of each.
        assert!(
            worst.iter().all(|&w| w > 0.1),
            "worst error / bound: {worst:?}"
        );
    }

    #[test]
    fn the_simd_chunks_equal_the_scalar_loop() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.023).collect();
        let g: Vec<f32> = (0..1000).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let (mut y, mut dy) = (vec![0f32; 1000], vec![0f32; 1000]);
        gelu_chunk(&x, &mut y);
        gelu_grad_chunk(&x, &g, &mut dy);
        // The dispatched copy uses FMAs wherever the CPU has them, like `::<true>`, or none.
        #[cfg(target_arch = "x86_64")]
        let fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        for i in 0..1000 {
            let (want_y, want_dy) = if fma {
                (gelu_f32::<true>(x[i]), gelu_grad_f32::<true>(x[i], g[i]))
            } else {
                (gelu_f32::<false>(x[i]), gelu_grad_f32::<false>(x[i], g[i]))
            };
            assert_eq!(y[i].to_bits(), want_y.to_bits(), "gelu at {}", x[i]);
            assert_eq!(dy[i].to_bits(), want_dy.to_bits(), "gelu' at {}", x[i]);
        }
    }
}
