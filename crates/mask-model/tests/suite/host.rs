//! The fused flex kernels (`src/host.rs`) against the burn code they replace:
//! - GELU: within the two implementations' error bounds of the tensor-op reference on flex
//!   (the fused kernel's `erf` has PyTorch's precision, the reference's is libm's `erff`),
//!   forward and backward, on tensors large enough to be split over threads and on strided
//!   views; where it does not apply (NdArray, flex `f64`) the reference itself;
//! - LayerNorm: within f32 summation error of burn's module, forward and all three gradients,
//!   deterministic across runs; NdArray runs the module itself.

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use mask_model::activation::{gelu, gelu_reference};

use crate::common::*;

type Flex = burn::backend::Flex;
type FlexTrain = burn::backend::Autodiff<Flex>;

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

/// How far the fused GELU may be from the reference at `x` (`y`: the reference's value).
///
/// Both compute `0.5 x (1 + erf(x / sqrt 2))` in `f32`. The fused `1 + erf` is within
/// 1.5e-7 (Abramowitz & Stegun 7.1.26) + 1e-6 erfc + 1.2e-7 of the true value (derivation in
/// `src/host.rs`'s unit test; erfc <= 1 here); the reference's within 2.3e-7 (libm's `erff`
/// to an ulp, the rounding of `+ 1`, and of `x / sqrt 2`). So they differ by at most
/// `0.5 |x| (1.5e-6)` plus two roundings of the result on each side.
fn gelu_tolerance(x: f32, y: f32) -> f32 {
    0.5 * x.abs() * 1.5e-6 + 4.8e-7 * y.abs()
}

/// The same for the gradient `w (0.5 (1 + erf) + x e^(-x^2 / 2) / sqrt(2 pi))`: half the
/// forward bound on `1 + erf`, and on `e^(-x^2/2)` the polynomial `exp` (4e-7) against
/// libm's (an ulp), with the rounding of `x^2 / 2` (relative `x^2 / 2` ulp) on both sides.
fn gelu_grad_tolerance(x: f32, w: f32, g: f32) -> f32 {
    let e = (-0.5 * x * x).exp() * x.abs() * 0.398_942_3;
    w.abs() * (0.75e-6 + e * (5.2e-7 + x * x * f32::EPSILON)) + 4.8e-7 * g.abs()
}

/// Elements of `got` farther than `tol(i)` from `want`, with the worst ratio to it.
fn beyond(got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) -> (usize, f32) {
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    let n = (0..got.len())
        .filter(|&i| {
            let r = (got[i] - want[i]).abs() / tol(i).max(f32::MIN_POSITIVE);
            worst = worst.max(r);
            r > 1.0
        })
        .count();
    (n, worst)
}

#[test]
fn fused_gelu_forward_is_within_the_error_bound_of_the_reference_on_flex() {
    let device = Default::default();
    // 2 x 3 x 40000 = 240,000 elements: several of the kernel's 32k-element chunks.
    let x = inputs::<Flex>([2, 3, 40_000], &device);
    let (xs, fused) = (values(x.clone()), values(gelu(x.clone())));
    let reference = values(gelu_reference(x.clone()));
    let (n, worst) = beyond(&fused, &reference, |i| gelu_tolerance(xs[i], reference[i]));
    assert_eq!(
        n, 0,
        "{n} elements beyond the bound (worst {worst} x bound)"
    );
    assert_eq!(fused[0], 0.0);
    // A strided view (the transpose of the last two axes) gives the transposed result.
    let xt = x.clone().swap_dims(1, 2);
    assert_eq!(
        bits(values(gelu(xt))),
        bits(values(gelu(x).swap_dims(1, 2)))
    );
}

#[test]
fn fused_gelu_gradient_is_within_the_error_bound_of_the_reference_under_autodiff() {
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
    let (xs, ws) = (values(x0.clone()), values(w.clone()));
    let (n, _) = beyond(&fused_y, &ref_y, |i| gelu_tolerance(xs[i], ref_y[i]));
    assert_eq!(n, 0, "{n} forward elements beyond the bound");
    let (n, worst) = beyond(&fused_g, &ref_g, |i| {
        gelu_grad_tolerance(xs[i], ws[i], ref_g[i])
    });
    assert_eq!(
        n, 0,
        "{n} gradient elements beyond the bound (worst {worst} x bound)"
    );
    // And the gradient is GELU's: at x = 0 it is w / 2 (Phi(0) + 0 phi(0)), to the
    // approximation's 1.5e-7 on 1 + erf(0).
    assert!((fused_g[0] - ws[0] * 0.5).abs() <= ws[0].abs() * 1.5e-7);
}

#[test]
fn gelu_without_a_gradient_is_fused_and_other_backends_run_the_reference() {
    // Untracked autodiff input (inference under an autodiff backend): the fused kernel, as
    // on plain flex.
    let device = Default::default();
    let x = inputs::<FlexTrain>([2, 2, 1000], &device);
    let plain = Tensor::<Flex, 3>::from_data(x.to_data(), &Default::default());
    assert_eq!(bits(values(gelu(x.clone()))), bits(values(gelu(plain))));
    let (xs, reference) = (values(x.clone()), values(gelu_reference(x.clone())));
    let (n, _) = beyond(&values(gelu(x)), &reference, |i| {
        gelu_tolerance(xs[i], reference[i])
    });
    assert_eq!(n, 0);
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
