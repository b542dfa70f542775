//! Test helpers shared by the mask-attn suites: host-generated data (identical on every backend),
//! tensor <-> Vec conversion, and closeness checks with stated tolerances.

#![allow(dead_code)]

pub mod random_masks;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use mask_core::MaskRng;

/// The CPU backend, always tested.
pub type Cpu = burn::backend::NdArray<f32>;
/// The GPU backend (on CPU-only machines: Mesa's lavapipe), with burn's operation fusion.
pub type Gpu = burn::backend::Wgpu;
/// The GPU backend without fusion.
pub type GpuUnfused =
    burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;

/// Standard normal samples (`rand_distr`'s ziggurat on `mask-core`'s counter-based stream).
pub fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = MaskRng::for_example(seed, 0, 0, 7);
    (0..n)
        .map(|_| {
            rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng) as f32
        })
        .collect()
}

/// A tensor from host data.
pub fn tensor<B: Backend>(data: Vec<f32>, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Host copy of a tensor.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The bit patterns of `t`'s values (for bit-for-bit comparisons).
pub fn bits(t: Vec<f32>) -> Vec<u32> {
    t.into_iter().map(f32::to_bits).collect()
}

/// Absolute gradient tolerance for [`mask_attn::kernels::fused`] under autodiff (burn's own
/// decomposition, which we do not own): its softmax divides, burn's autodiff differentiates
/// `a / b` into `grad * recip(b)`, and burn-ndarray's SIMD `recip` is the CPU's approximate
/// reciprocal (`_mm256_rcp_ps` on AVX2: relative error <= 1.5 x 2^-12 = 3.7e-4). The error
/// lands on `grad_p` only, so after the softmax backward's cancellation
/// (`ds = p (dp (1 + e) - delta)`) a gradient is off by up to `e scale sum_j p_j |dp_j| |k_j|`,
/// i.e. ~3.7e-4 x O(1) for the unit-normal data here: 1e-4 + 3.7e-4, rounded up to 5e-4.
/// Measured on an AVX2 machine: 2.0e-4 (dk) and 1.2e-4 (dq). Our kernels avoid the reciprocal
/// (`divide_exactly`) and keep 1e-4.
pub const FUSED_GRAD_ATOL: f64 = 5e-4;

/// Largest |a - b| / (atol + rtol |b|); <= 1 means close.
pub fn max_violation(a: &[f32], b: &[f64], atol: f64, rtol: f64) -> (f64, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0.0, 0);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let x = x as f64;
        let v = if x.is_finite() {
            (x - y).abs() / (atol + rtol * y.abs())
        } else {
            f64::INFINITY
        };
        if v > worst.0 {
            worst = (v, i);
        }
    }
    worst
}

/// Asserts `a` is close to `b` elementwise: `|a - b| <= atol + rtol |b|`.
pub fn assert_close(what: &str, a: &[f32], b: &[f64], atol: f64, rtol: f64) {
    let (v, i) = max_violation(a, b, atol, rtol);
    assert!(
        v <= 1.0,
        "{what}: element {i}: got {} expected {} (atol {atol}, rtol {rtol})",
        a[i],
        b[i]
    );
}

/// f32 slice widened.
pub fn wide(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&x| x as f64).collect()
}

/// Output and q/k/v gradients of `f(q, k, v)` under autodiff, for `loss = sum(out * dout)`.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<B: AutodiffBackend>(
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    q_shape: [usize; 4],
    kv_shape: [usize; 4],
    out_shape: [usize; 4],
    device: &B::Device,
    f: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> [Vec<f32>; 4] {
    let q = tensor::<B>(q, q_shape, device).require_grad();
    let k = tensor::<B>(k, kv_shape, device).require_grad();
    let v = tensor::<B>(v, kv_shape, device).require_grad();
    let dout = tensor::<B>(dout, out_shape, device);
    let out = f(q.clone(), k.clone(), v.clone());
    let loss = (out.clone() * dout).sum();
    let grads = loss.backward();
    let g = |t: &Tensor<B, 4>| {
        t.grad(&grads)
            .map(host)
            .unwrap_or_else(|| vec![0.0; t.dims().iter().product()])
    };
    [host(out.inner()), g(&q), g(&k), g(&v)]
}
