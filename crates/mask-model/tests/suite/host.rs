//! The fused flex kernels (`src/host.rs`) against the burn code they replace:
//! - GELU: equal bit for bit to the tensor-op reference on flex, forward and backward, on
//!   tensors large enough to be split over threads and on strided views; where it does not
//!   apply (NdArray, flex `f64`) the reference itself;
//! - LayerNorm: within f32 summation error of burn's module, forward and all three gradients,
//!   deterministic across runs; NdArray runs the module itself.

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use mask_model::activation::{gelu, gelu_reference};

use crate::common::*;

type Flex = burn::backend::Flex;
type FlexTrain = burn::backend::Autodiff<Flex>;

fn bits(t: Vec<f32>) -> Vec<u32> {
    t.into_iter().map(f32::to_bits).collect()
}

/// Inputs over GELU's whole range: normal draws scaled to +-12 (erf saturates past ~4),
/// with exact zeros and signed zeros.
fn inputs<Bk: Backend>(shape: [usize; 3], device: &Bk::Device) -> Tensor<Bk, 3> {
    let x = Tensor::<Bk, 3>::random(shape, Distribution::Normal(0.0, 3.0), device);
    let n = shape.iter().product::<usize>();
    let mut v = values(x);
    v[0] = 0.0;
    v[1] = -0.0;
    v[2] = 12.0;
    v[n - 1] = -12.0;
    Tensor::from_data(TensorData::new(v, shape), device)
}

#[test]
fn fused_gelu_forward_equals_the_reference_bit_for_bit_on_flex() {
    let device = Default::default();
    // 2 x 3 x 40000 = 240,000 elements: several of the kernel's 32k-element chunks.
    let x = inputs::<Flex>([2, 3, 40_000], &device);
    let fused = bits(values(gelu(x.clone())));
    let reference = bits(values(gelu_reference(x.clone())));
    assert_eq!(fused.len(), reference.len());
    let differing = fused.iter().zip(&reference).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} elements differ");
    // A strided view (the transpose of the last two axes) gives the transposed result.
    let xt = x.swap_dims(1, 2);
    assert_eq!(
        bits(values(gelu(xt.clone()))),
        bits(values(gelu_reference(xt)))
    );
}

#[test]
fn fused_gelu_gradient_equals_the_reference_bit_for_bit_under_autodiff() {
    let device = Default::default();
    let x0 = inputs::<FlexTrain>([4, 5, 20_000], &device);
    // An upstream gradient that is not all ones: loss = sum(gelu(x) * w).
    let w = Tensor::<FlexTrain, 3>::random([4, 5, 20_000], Distribution::Normal(0.0, 1.0), &device);
    let grad = |f: fn(Tensor<FlexTrain, 3>) -> Tensor<FlexTrain, 3>| {
        let x = x0.clone().detach().require_grad();
        let y = f(x.clone());
        let forward = values(y.clone());
        let grads = (y * w.clone()).sum().backward();
        (forward, values(x.grad(&grads).expect("x requires grad")))
    };
    let (fused_y, fused_g) = grad(gelu);
    let (ref_y, ref_g) = grad(gelu_reference);
    assert_eq!(bits(fused_y), bits(ref_y));
    let (fused_g, ref_g) = (bits(fused_g), bits(ref_g));
    let differing = fused_g.iter().zip(&ref_g).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} gradient elements differ");
    // And the gradient is GELU's: at x = 0 it is w / 2 (Phi(0) + 0 phi(0)).
    let g0 = f32::from_bits(fused_g[0]);
    let w0 = values(w.clone())[0];
    assert_eq!(g0, w0 * 0.5);
}

#[test]
fn gelu_without_a_gradient_and_on_other_backends_is_the_reference() {
    // Untracked autodiff input (inference under an autodiff backend).
    let device = Default::default();
    let x = inputs::<FlexTrain>([2, 2, 1000], &device);
    assert_eq!(
        bits(values(gelu(x.clone()))),
        bits(values(gelu_reference(x)))
    );
    // NdArray takes the reference path itself.
    let x = inputs::<B>([2, 2, 1000], &dev());
    assert_eq!(
        bits(values(gelu(x.clone()))),
        bits(values(gelu_reference(x)))
    );
    // Flex f64 falls back to the reference (the fused kernel is f32 only).
    let x = inputs::<Flex>([2, 2, 100], &Default::default()).cast(DType::F64);
    let y = gelu(x.clone());
    assert_eq!(y.dtype(), DType::F64);
    let (a, b) = (
        y.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
        gelu_reference(x)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .unwrap(),
    );
    assert_eq!(a, b);
}

/// A LayerNorm over `d` with random gamma and beta (not the identity initialisation).
fn random_norm<Bk: Backend>(d: usize, device: &Bk::Device) -> burn::nn::LayerNorm<Bk> {
    let mut norm = burn::nn::LayerNormConfig::new(d).init::<Bk>(device);
    norm.gamma = burn::module::Param::from_tensor(Tensor::random(
        [d],
        Distribution::Uniform(0.5, 1.5),
        device,
    ));
    norm.beta = Some(burn::module::Param::from_tensor(Tensor::random(
        [d],
        Distribution::Normal(0.0, 0.5),
        device,
    )));
    norm
}

/// max |a - b| / max(max |b|, 1e-30).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    max_abs_diff(a, b) / scale
}

#[test]
fn fused_layer_norm_matches_the_module_forward_and_backward() {
    // Tolerances: the module sums d = 256 terms per row in f32, a random-walk error of
    // ~sqrt(d) eps = 1.9e-6 of the scale (eps = 1.2e-7); ours accumulates in f64. Gamma's and
    // beta's gradients sum over n = 4 x 3000 rows: ~sqrt(n) eps = 1.3e-5. Bounds: 1e-5 of the
    // scale for outputs and dx, 5e-5 for the parameter gradients (measured 2026-12-01: 1.2e-7,
    // 1.9e-7, 1.2e-6, 1.5e-6). A wrong formula (e.g. a missing mean term) is off by O(1).
    let device = Default::default();
    let d = 256;
    let norm = random_norm::<FlexTrain>(d, &device);
    let x0 = Tensor::<FlexTrain, 3>::random([4, 3000, d], Distribution::Normal(1.0, 2.0), &device);
    let w = Tensor::<FlexTrain, 3>::random([4, 3000, d], Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let x = x0.clone().detach().require_grad();
        let y = if fused {
            mask_model::norm::normalize(&norm, x.clone())
        } else {
            norm.forward(x.clone())
        };
        let out = values(y.clone());
        let grads = (y * w.clone()).sum().backward();
        let g = |t: Tensor<FlexTrain, 1>| values(t.grad(&grads).expect("tracked"));
        (
            out,
            values(x.grad(&grads).expect("x tracked")),
            g(norm.gamma.val()),
            g(norm.beta.as_ref().unwrap().val()),
        )
    };
    let (y, dx, dg, db) = run(true);
    let (y_ref, dx_ref, dg_ref, db_ref) = run(false);
    for (name, got, want, tol) in [
        ("y", &y, &y_ref, 1e-5),
        ("dx", &dx, &dx_ref, 1e-5),
        ("dgamma", &dg, &dg_ref, 5e-5),
        ("dbeta", &db, &db_ref, 5e-5),
    ] {
        let r = rel_diff(got, want);
        eprintln!("layer norm {name}: max diff / scale = {r:e}");
        assert!(r < tol, "{name}: {r} >= {tol}");
    }
    // And a property of the true gradient: dx of a row sums to ~0 (a shift of the row does
    // not change its normalised value).
    let row_sum: f32 = dx[..d].iter().sum();
    assert!(row_sum.abs() < 1e-3, "{row_sum}");
}

#[test]
fn fused_layer_norm_is_deterministic_and_falls_back_elsewhere() {
    let device = Default::default();
    let norm = random_norm::<FlexTrain>(64, &device);
    let x = Tensor::<FlexTrain, 2>::random([5000, 64], Distribution::Normal(0.0, 1.0), &device);
    let grad_gamma = || {
        let y = mask_model::norm::normalize(&norm, x.clone().require_grad());
        let grads = (y.clone() * y).sum().backward();
        bits(values(norm.gamma.val().grad(&grads).unwrap()))
    };
    // Summed over 5,000 rows in several chunks, on two threads: the same bits every time.
    let first = grad_gamma();
    for _ in 0..3 {
        assert_eq!(grad_gamma(), first);
    }
    // NdArray: the module's own forward, bit for bit.
    let norm = random_norm::<B>(64, &dev());
    let x = Tensor::<B, 2>::random([7, 64], Distribution::Normal(0.0, 1.0), &dev());
    assert_eq!(
        bits(values(mask_model::norm::normalize(&norm, x.clone()))),
        bits(values(norm.forward(x)))
    );
}
