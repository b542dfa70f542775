//! Speed levers of the training step measured one at a time (issue 13), each against the code it
//! replaced, on every backend (`ndarray/`, `flex/`, and `wgpu/` when `DYNMASK_BENCH_WGPU` is set).
//! Shapes are `bert-small-peer`'s at batch 32 x 128 (d_model 256, 4 heads of 64).
//!
//! - `dropout`: burn's `Dropout` (backend random generator, one Bernoulli sample per element,
//!   two multiplies) against `mask_attn::Dropout` (counter-based host mask, one multiply), under
//!   autodiff, forward and backward, on a hidden-state tensor `[32, 128, 256]` and on attention
//!   weights `[32, 4, 128, 128]`.
//! - `rotary`: rotating queries after the head transpose (`[B, H, T, D]`, the old layout) against
//!   before it (`[B, T, H, D]`), for queries and keys, then the score product `q k^T` and its
//!   backward, which is what the rotation feeds.
//! - `qkv`: the query, key and value projections as three matmuls of `[4096, 256] x [256, 256]`
//!   (what `MaskedSelfAttention` does) against one of `[4096, 256] x [256, 768]` on the
//!   concatenated weights, split afterwards; forward and backward to the input and weights.
//! - `fused` (flex only: on other backends both sides run the same code): exact GELU as tensor
//!   ops (`gelu_reference`) against the fused host kernel on `[32, 128, 1024]` (the
//!   feed-forward's hidden layer), and burn's `LayerNorm` module against the fused kernel on
//!   `[32, 128, 256]`; forward and backward under autodiff.
//!
//! Run: `cargo bench --bench levers`. `iter_custom` syncs the device before reading the clock.

use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, NdArray, Wgpu};
use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use criterion::{criterion_group, criterion_main, Criterion};
use mask_attn::{dropout_scope, Dropout};
use mask_model::position::Rope;

const B: usize = 32;
const T: usize = 128;
const H: usize = 4;
const D: usize = 64;

fn timed<F: FnMut()>(iters: u64, sync: impl Fn(), mut f: F) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    sync();
    start.elapsed()
}

fn dropout_bench<AB: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let mut group = c.benchmark_group(format!("{backend}/dropout"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let burn_dropout = DropoutConfig::new(0.1).init();
    let ours = Dropout::new(0.1).unwrap();
    let hidden = Tensor::<AB, 3>::random([B, T, 256], Distribution::Default, &device);
    let weights = Tensor::<AB, 4>::random([B, H, T, T], Distribution::Default, &device);
    let sync = || AB::sync(&device).unwrap();
    macro_rules! case {
        ($name:expr, $x:expr, $apply:expr) => {
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    timed(iters, sync, || {
                        let x = $x.clone().require_grad();
                        let y = $apply(x.clone());
                        let grads = y.sum().backward();
                        std::hint::black_box(x.grad(&grads));
                    })
                })
            });
        };
    }
    let _scope = dropout_scope(1);
    case!("hidden_32x128x256/burn", hidden, |x| burn_dropout
        .forward(x));
    case!("hidden_32x128x256/counter", hidden, |x| ours.forward(x));
    case!("attn_32x4x128x128/burn", weights, |x| burn_dropout
        .forward(x));
    case!("attn_32x4x128x128/counter", weights, |x| ours.forward(x));
    group.finish();
}

/// `rotate_half` as a flip of the two halves times a sign, on a `[.., 2, D / 2]` view (one copy
/// instead of `Rope::apply`'s two slices, negation and concatenation).
fn rotate_half_flip<Bk: Backend>(x: Tensor<Bk, 4>) -> Tensor<Bk, 4> {
    let [a, b, c, d] = x.dims();
    let sign = Tensor::<Bk, 1>::from_floats([-1.0, 1.0], &x.device()).reshape([1, 1, 1, 2, 1]);
    (x.reshape([a, b, c, 2, d / 2]).flip([3]) * sign).reshape([a, b, c, d])
}

/// `rotate_half` as a product with the fixed signed permutation `R` (`[D, D]`), on the rows of
/// `[B T H, D]`.
fn rotate_half_matmul<Bk: Backend>(x: Tensor<Bk, 4>, r: &Tensor<Bk, 2>) -> Tensor<Bk, 4> {
    let [a, b, c, d] = x.dims();
    x.reshape([a * b * c, d])
        .matmul(r.clone())
        .reshape([a, b, c, d])
}

/// `x * cos + rotated * sin` with `rope`'s tables: `Rope::apply` with another `rotate_half`.
fn rotate_with<Bk: Backend>(
    rope: &Rope<Bk>,
    x: Tensor<Bk, 4>,
    rotated: Tensor<Bk, 4>,
) -> Tensor<Bk, 4> {
    x * rope.cos.clone() + rotated * rope.sin.clone()
}

fn rotary_bench<AB: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let mut group = c.benchmark_group(format!("{backend}/rotary"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let q = Tensor::<AB, 3>::random([B, T, H * D], Distribution::Default, &device);
    let k = Tensor::<AB, 3>::random([B, T, H * D], Distribution::Default, &device);
    let table = Tensor::<AB, 2>::random([T, D], Distribution::Default, &device);
    // The library's rotation (`Rope::apply`, slices on the last dim) with tables laid out for
    // queries after the head transpose ([B, H, T, D]) and before it ([B, T, H, D]).
    let rope_bhtd = Rope {
        cos: table.clone().reshape([1, 1, T, D]),
        sin: table.clone().sin().reshape([1, 1, T, D]),
    };
    let rope_bthd = Rope {
        cos: table.clone().reshape([1, T, 1, D]),
        sin: table.sin().reshape([1, T, 1, D]),
    };
    // rotate_half(x) = x R: R[j + D/2, j] = -1 and R[j, j + D/2] = 1 for j < D/2.
    let mut r = vec![0f32; D * D];
    for j in 0..D / 2 {
        r[(j + D / 2) * D + j] = -1.0;
        r[j * D + j + D / 2] = 1.0;
    }
    let r = Tensor::<AB, 2>::from_data(burn::tensor::TensorData::new(r, [D, D]), &device);
    let sync = || AB::sync(&device).unwrap();
    for name in ["after_transpose", "before_transpose", "flip", "matmul"] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, sync, || {
                    let (qx, kx) = (q.clone().require_grad(), k.clone().require_grad());
                    let heads = |t: Tensor<AB, 3>| t.reshape([B, T, H, D]);
                    let rot = |t: Tensor<AB, 3>| match name {
                        "after_transpose" => rope_bhtd.apply(heads(t).swap_dims(1, 2)),
                        "before_transpose" => rope_bthd.apply(heads(t)).swap_dims(1, 2),
                        "flip" => {
                            let x = heads(t);
                            rotate_with(&rope_bthd, x.clone(), rotate_half_flip(x)).swap_dims(1, 2)
                        }
                        _ => {
                            let x = heads(t);
                            rotate_with(&rope_bthd, x.clone(), rotate_half_matmul(x, &r))
                                .swap_dims(1, 2)
                        }
                    };
                    let (qh, kh) = (rot(qx.clone()), rot(kx.clone()));
                    let scores = qh.matmul(kh.swap_dims(2, 3)); // [B, H, T, T]
                    let grads = scores.sum().backward();
                    std::hint::black_box((qx.grad(&grads), kx.grad(&grads)));
                })
            })
        });
    }
    group.finish();
}

fn qkv_bench<AB: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let mut group = c.benchmark_group(format!("{backend}/qkv"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let d = H * D;
    let x = Tensor::<AB, 2>::random([B * T, d], Distribution::Default, &device);
    let w: Vec<Tensor<AB, 2>> = (0..3)
        .map(|_| Tensor::random([d, d], Distribution::Default, &device))
        .collect();
    let bias: Vec<Tensor<AB, 1>> = (0..3)
        .map(|_| Tensor::random([d], Distribution::Default, &device))
        .collect();
    let sync = || AB::sync(&device).unwrap();
    for (name, fused) in [("three_matmuls", false), ("one_matmul", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, sync, || {
                    let x = x.clone().require_grad();
                    let w: Vec<_> = w.iter().map(|t| t.clone().require_grad()).collect();
                    let bias: Vec<_> = bias.iter().map(|t| t.clone().require_grad()).collect();
                    let (q, k, v) = if fused {
                        let wc = Tensor::cat(w.clone(), 1); // [d, 3d]
                        let bc = Tensor::cat(bias.clone(), 0).unsqueeze::<2>(); // [1, 3d]
                        let y = x.clone().matmul(wc) + bc; // [BT, 3d]
                        let mut parts = y.chunk(3, 1);
                        let v = parts.pop().unwrap();
                        let k = parts.pop().unwrap();
                        (parts.pop().unwrap(), k, v)
                    } else {
                        let p = |i: usize| {
                            x.clone().matmul(w[i].clone()) + bias[i].clone().unsqueeze::<2>()
                        };
                        (p(0), p(1), p(2))
                    };
                    // A cheap use of each that keeps them distinct in the graph.
                    let loss = q.sum() + k.mul_scalar(2.0).sum() + v.mul_scalar(3.0).sum();
                    let grads = loss.backward();
                    std::hint::black_box((x.grad(&grads), w[0].grad(&grads)));
                })
            })
        });
    }
    group.finish();
}

fn fused_bench(c: &mut Criterion) {
    type AB = Autodiff<Flex>;
    let device = Default::default();
    let mut group = c.benchmark_group("flex/fused");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    let hidden = Tensor::<AB, 3>::random([B, T, 4 * H * D], Distribution::Default, &device);
    let x = Tensor::<AB, 3>::random([B, T, H * D], Distribution::Default, &device);
    let norm = burn::nn::LayerNormConfig::new(H * D).init::<AB>(&device);
    let sync = || AB::sync(&device).unwrap();
    let gelu_ref = |x| mask_model::activation::gelu_reference(x);
    let gelu_fused = |x| mask_model::activation::gelu(x);
    let norm_ref = |x| norm.forward(x);
    let norm_fused = |x| mask_model::norm::normalize(&norm, x);
    type Apply<'a> = &'a dyn Fn(Tensor<AB, 3>) -> Tensor<AB, 3>;
    let cases: [(&str, &Tensor<AB, 3>, Apply); 4] = [
        ("gelu_32x128x1024/tensor_ops", &hidden, &gelu_ref),
        ("gelu_32x128x1024/fused", &hidden, &gelu_fused),
        ("layer_norm_32x128x256/module", &x, &norm_ref),
        ("layer_norm_32x128x256/fused", &x, &norm_fused),
    ];
    for (name, input, apply) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, sync, || {
                    let x = input.clone().require_grad();
                    let grads = apply(x.clone()).sum().backward();
                    std::hint::black_box(x.grad(&grads));
                })
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    fused_bench(c);
    dropout_bench::<Autodiff<NdArray<f32>>>(c, "ndarray");
    dropout_bench::<Autodiff<Flex>>(c, "flex");
    rotary_bench::<Autodiff<NdArray<f32>>>(c, "ndarray");
    rotary_bench::<Autodiff<Flex>>(c, "flex");
    qkv_bench::<Autodiff<NdArray<f32>>>(c, "ndarray");
    qkv_bench::<Autodiff<Flex>>(c, "flex");
    if std::env::var("DYNMASK_BENCH_WGPU").is_ok() {
        dropout_bench::<Autodiff<Wgpu>>(c, "wgpu");
        rotary_bench::<Autodiff<Wgpu>>(c, "wgpu");
        qkv_bench::<Autodiff<Wgpu>>(c, "wgpu");
    }
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
