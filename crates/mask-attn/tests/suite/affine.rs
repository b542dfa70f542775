//! The fused affine maps (`src/affine.rs`) against burn's own `Linear` / `matmul + bias`, on
//! flex under autodiff: outputs and the three gradients within the bound of `f32` summation
//! error derived below; deterministic; strided inputs; other backends run burn's code.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use mask_attn::affine;

use crate::common::*;

type Flex = burn::backend::Flex;
type FlexTrain = burn::backend::Autodiff<Flex>;
type NdArray = burn::backend::NdArray<f32>;

/// The unit roundoff of `f32`.
const U: f32 = f32::EPSILON / 2.0;

/// Elements where `|got - want| > 2 (p + 2) u s`: `s` is the sum of the absolute values of the
/// `p` products (and bias) summed into that element. Each side's rounding error is at most
/// `gamma_(p+1) s` whatever the order or blocking of its sums (Higham, Accuracy and Stability
/// of Numerical Algorithms, 3.1 and 3.5), so the two differ by at most twice that; `p + 2`
/// absorbs the rounding of `s` itself. A wrong transpose, stride or missing term is off by
/// O(s).
fn beyond_bound(name: &str, got: &[f32], want: &[f32], abs_sums: &[f32], p: usize) -> usize {
    assert_eq!(got.len(), want.len(), "{name}");
    assert_eq!(got.len(), abs_sums.len(), "{name}");
    let mut worst = 0f32;
    let n = (0..got.len())
        .filter(|&i| {
            let bound = 2.0 * (p as f32 + 2.0) * U * abs_sums[i];
            let diff = (got[i] - want[i]).abs();
            worst = worst.max(diff / bound.max(f32::MIN_POSITIVE));
            diff > bound
        })
        .count();
    eprintln!("affine {name}: worst |diff| / bound = {worst:.3e}");
    n
}

/// A `Linear` with random weights and bias (not the default initialisation's scale).
fn random_linear<Bk: Backend>(d_in: usize, d_out: usize, device: &Bk::Device) -> Linear<Bk> {
    let mut layer = LinearConfig::new(d_in, d_out).init::<Bk>(device);
    layer.weight = burn::module::Param::from_tensor(Tensor::random(
        [d_in, d_out],
        Distribution::Normal(0.0, 0.5),
        device,
    ));
    layer.bias = Some(burn::module::Param::from_tensor(Tensor::random(
        [d_out],
        Distribution::Normal(0.0, 1.0),
        device,
    )));
    layer
}

/// `|t|` as a plain (non-autodiff) flex tensor.
fn abs<const D: usize>(t: Tensor<FlexTrain, D>) -> Tensor<Flex, D> {
    t.inner().abs()
}

#[test]
fn fused_linear_matches_the_module_forward_and_backward_within_the_summation_bound() {
    let device = Default::default();
    let (k, m) = (96, 200);
    let layer = random_linear::<FlexTrain>(k, m, &device);
    // n = 2,100 rows: large enough for gemm to split the work over threads.
    let x0 = Tensor::<FlexTrain, 3>::random([3, 700, k], Distribution::Normal(0.0, 1.0), &device);
    let r = Tensor::<FlexTrain, 3>::random([3, 700, m], Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let x = x0.clone().detach().require_grad();
        let y = if fused {
            affine::linear(&layer, x.clone())
        } else {
            layer.forward(x.clone())
        };
        let out = host(y.clone());
        // The loss's gradient with respect to y is r.
        let grads = (y * r.clone()).sum().backward();
        (
            out,
            host(x.grad(&grads).expect("x tracked")),
            host(layer.weight.val().grad(&grads).expect("weight tracked")),
            host(
                layer
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .grad(&grads)
                    .expect("bias tracked"),
            ),
        )
    };
    let (y, dx, dw, db) = run(true);
    let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
    let n = 3 * 700;
    let (xa, wa, ga) = (
        abs(x0.clone()).reshape([n, k]),
        abs(layer.weight.val()),
        abs(r.clone()).reshape([n, m]),
    );
    let ba = abs(layer.bias.as_ref().unwrap().val());
    let y_sums = host(xa.clone().matmul(wa.clone()) + ba.unsqueeze::<2>());
    let dx_sums = host(ga.clone().matmul(wa.transpose()));
    let dw_sums = host(xa.transpose().matmul(ga.clone()));
    let db_sums = host(ga.sum_dim(0));
    assert_eq!(beyond_bound("y", &y, &y_ref, &y_sums, k + 1), 0);
    assert_eq!(beyond_bound("dx", &dx, &dx_ref, &dx_sums, m), 0);
    assert_eq!(beyond_bound("dW", &dw, &dw_ref, &dw_sums, n), 0);
    assert_eq!(beyond_bound("db", &db, &db_ref, &db_sums, n), 0);
}

#[test]
fn fused_tied_logits_match_matmul_and_bias_within_the_summation_bound() {
    let device = Default::default();
    let (n, d, v) = (300, 64, 1000);
    let h0 = Tensor::<FlexTrain, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device);
    let e = Tensor::<FlexTrain, 2>::random([v, d], Distribution::Normal(0.0, 0.5), &device)
        .require_grad();
    let b =
        Tensor::<FlexTrain, 1>::random([v], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let r = Tensor::<FlexTrain, 2>::random([n, v], Distribution::Normal(0.0, 1.0), &device);
    let run = |fused: bool| {
        let h = h0.clone().detach().require_grad();
        let y = if fused {
            affine::tied_logits(h.clone(), e.clone(), b.clone())
        } else {
            h.clone().matmul(e.clone().transpose()) + b.clone().unsqueeze::<2>()
        };
        let out = host(y.clone());
        let grads = (y * r.clone()).sum().backward();
        (
            out,
            host(h.grad(&grads).expect("h tracked")),
            host(e.grad(&grads).expect("e tracked")),
            host(b.grad(&grads).expect("b tracked")),
        )
    };
    let (y, dh, de, db) = run(true);
    let (y_ref, dh_ref, de_ref, db_ref) = run(false);
    let (ha, ea, ga) = (abs(h0.clone()), abs(e.clone()), abs(r.clone()));
    let y_sums = host(ha.clone().matmul(ea.clone().transpose()) + abs(b.clone()).unsqueeze::<2>());
    let dh_sums = host(ga.clone().matmul(ea));
    let de_sums = host(ga.clone().transpose().matmul(ha));
    let db_sums = host(ga.sum_dim(0));
    assert_eq!(beyond_bound("logits", &y, &y_ref, &y_sums, d + 1), 0);
    assert_eq!(beyond_bound("dh", &dh, &dh_ref, &dh_sums, v), 0);
    assert_eq!(beyond_bound("dE", &de, &de_ref, &de_sums, n), 0);
    assert_eq!(beyond_bound("db", &db, &db_ref, &db_sums, n), 0);
}

#[test]
fn fused_linear_is_deterministic_reads_strided_inputs_and_falls_back_elsewhere() {
    let device = Default::default();
    let layer = random_linear::<FlexTrain>(48, 160, &device);
    // A strided view: the transpose of a [48, 3000] tensor.
    let xt = Tensor::<FlexTrain, 2>::random([48, 3000], Distribution::Normal(0.0, 1.0), &device);
    let strided = xt.clone().transpose();
    let contiguous = Tensor::<FlexTrain, 2>::from_data(strided.to_data(), &device);
    let run = |x: Tensor<FlexTrain, 2>| {
        let y = affine::linear(&layer, x.require_grad());
        let grads = (y.clone() * y.clone()).sum().backward();
        let dw = host(layer.weight.val().grad(&grads).unwrap());
        (bits(host(y)), bits(dw))
    };
    // Split over threads, the same bits every run; the strided view gives the contiguous
    // input's result.
    let first = run(contiguous);
    for _ in 0..3 {
        assert_eq!(run(strided.clone()), first);
    }
    // NdArray, and a layer without bias on flex: burn's module itself, bit for bit.
    let ndarray = Default::default();
    let layer = random_linear::<NdArray>(8, 5, &ndarray);
    let x = Tensor::<NdArray, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &ndarray);
    assert_eq!(
        bits(host(affine::linear(&layer, x.clone()))),
        bits(host(layer.forward(x)))
    );
    let mut layer = random_linear::<Flex>(8, 5, &device);
    layer.bias = None;
    let x = Tensor::<Flex, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(
        bits(host(affine::linear(&layer, x.clone()))),
        bits(host(layer.forward(x)))
    );
}
