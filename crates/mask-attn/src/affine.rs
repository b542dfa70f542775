//! Affine maps `y = x W + b`: burn's [`Linear`] and the MLM decoder against a tied embedding
//! matrix, computed on burn-flex by one `gemm` call per product and one autodiff node, and by
//! burn's own ops everywhere else.
//!
//! Why: on flex, every matrix product's output buffer is allocated twice (burn-flex 0.21's
//! `FlexTensor::empty` zero-fills a byte vector, then `Bytes::from_bytes_vec` copies it into a
//! 16-byte aligned one), and the bias is added in a second pass over a third buffer. On the
//! MLM decoder at all positions (`[4096, 30522]`, 500 MB) that is ~1.5 GB of page faults and
//! copies per step on the calling thread while the other core waits: 18% of a
//! `bert-small-peer` training step in the profile of docs/benchmarks.md. Here the output is
//! allocated once, its rows start as the bias (written in parallel), and `gemm` accumulates
//! the product into it. The backward is the three products of the textbook gradient
//! (`dx = g W^T`, `dW = x^T g`, `db = sum_rows g`) on the same `gemm`, with no transposed
//! copies (strides only).
//!
//! Used for the attention's four projections ([`crate::MaskedSelfAttention`]) and by
//! `mask-model` for the feed-forward layers, the MLM head's transform and its tied decoder.
//!
//! Dispatch as in [`crate::flex`]: a `TypeId` test for `Flex` / `Autodiff<Flex>` with `f32`
//! values and a bias; every other case runs burn's `linear` / `matmul` unchanged (the reference
//! the tests compare against, in `tests/suite/affine.rs`). Outputs and input gradients come
//! out bit-equal to burn-flex's there (the same `gemm`, which adds the finished product to the
//! bias-filled buffer in one rounding, as burn adds the bias after); the weight and bias
//! gradients sum in another order, within `f32` summation error (the bound derived there).

// gemm's API takes raw pointers and strides: one of the exceptions to `unsafe_code = "deny"`
// that the workspace's Cargo.toml lists.
#![allow(unsafe_code)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::flex::{on_flex, primitive, values};
use crate::kernels::host::gemm_strided;

/// `layer.forward(x)`: fused on flex (one buffer, bias first, one `gemm`), burn's module
/// everywhere else.
///
/// # Shapes
/// - `x`: `[.., d_in]` -> `[.., d_out]`
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(bias) = layer.bias.as_ref() else {
        return layer.forward(x);
    };
    try_affine(x, layer.weight.val(), Layout::InOut, bias.val())
        .unwrap_or_else(|x| layer.forward(x))
}

/// Logits against a tied embedding matrix: `hidden embeddings^T + bias`, fused on flex.
///
/// # Shapes
/// - `hidden`: `[N, d]`, `embeddings`: `[V, d]`, `bias`: `[V]` -> `[N, V]`
pub fn tied_logits<B: Backend>(
    hidden: Tensor<B, 2>,
    embeddings: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    match try_affine(hidden, embeddings.clone(), Layout::OutIn, bias.clone()) {
        Ok(y) => y,
        Err(hidden) => hidden.matmul(embeddings.transpose()) + bias.unsqueeze::<2>(),
    }
}

/// How the weight is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[k, m]`, burn's `Linear` (`O = I W + b`).
    InOut,
    /// `[m, k]`, used transposed: a tied embedding matrix `[V, d]`.
    OutIn,
}

impl Layout {
    /// `(k, m)` of a weight of shape `dims`.
    fn in_out(self, [r, c]: [usize; 2]) -> (usize, usize) {
        match self {
            Layout::InOut => (r, c),
            Layout::OutIn => (c, r),
        }
    }

    /// (row, column) strides of the weight read as the `[k, m]` matrix `W`.
    fn strides(self, k: usize, m: usize) -> (isize, isize) {
        match self {
            Layout::InOut => (m as isize, 1),
            Layout::OutIn => (1, k as isize),
        }
    }
}

/// gemm's threads: rayon's pool above ~2 M multiply-adds (burn-flex's own threshold is of
/// that order), the calling thread below.
fn parallelism(r: usize, c: usize, p: usize) -> Parallelism {
    if r.saturating_mul(c).saturating_mul(p) >= 1 << 21 && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `dst [r, c]` (row-major, contiguous) `= (accumulate ? dst : 0) + a b`, for `a [r, p]` and
/// `b [p, c]` given by their (row, column) strides.
///
/// # Safety
/// `a` and `b` must address `r x p` and `p x c` elements with those strides.
unsafe fn product(
    dst: &mut [f32],
    (r, c, p): (usize, usize, usize),
    accumulate: bool,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
) {
    assert!(dst.len() == r * c);
    if r == 0 || c == 0 {
        return;
    }
    if p == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let ((a, a_rs, a_cs), (b, b_rs, b_cs)) = (a, b);
    // SAFETY: the caller's contract for `a` and `b`; `dst` holds r * c elements, row stride c.
    unsafe {
        gemm_strided(
            dst.as_mut_ptr(),
            c as isize,
            (r, c, p),
            a,
            (a_rs, a_cs),
            b,
            (b_rs, b_cs),
            accumulate,
            1.0,
            parallelism(r, c, p),
        );
    }
}

/// Rows per parallel task when writing the bias into rows of `m` values (~64 K elements a
/// task).
fn rows_per_task(m: usize) -> usize {
    ((1 << 16) / m.max(1)).max(1)
}

/// `y [n, m] = x [n, k] W + b`, `W` read through `layout`.
fn forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, k, m): (usize, usize, usize),
    layout: Layout,
) -> Vec<f32> {
    let mut y = vec![0f32; n * m];
    if m == 0 {
        return y;
    }
    y.par_chunks_mut(rows_per_task(m) * m).for_each(|rows| {
        for row in rows.chunks_exact_mut(m) {
            row.copy_from_slice(b);
        }
    });
    let (w_rs, w_cs) = layout.strides(k, m);
    // SAFETY: x is [n, k] row-major; w holds k * m elements read with `layout`'s strides.
    unsafe {
        product(
            &mut y,
            (n, m, k),
            true,
            (x.as_ptr(), k as isize, 1),
            (w.as_ptr(), w_rs, w_cs),
        );
    }
    y
}

/// Column sums of `g [n, m]`, accumulated in `f64` row by row (the same order every run).
fn column_sums(g: &[f32], n: usize, m: usize) -> Vec<f32> {
    const COLUMNS: usize = 256;
    let mut out = vec![0f32; m];
    out.par_chunks_mut(COLUMNS)
        .enumerate()
        .for_each(|(c, out)| {
            let c0 = c * COLUMNS;
            let mut acc = vec![0f64; out.len()];
            for r in 0..n {
                let row = &g[r * m + c0..r * m + c0 + out.len()];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += f64::from(v);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a as f32;
            }
        });
    out
}

/// The number of rows of `[.., k]`: the product of the leading dimensions.
fn rows(shape: &burn::tensor::Shape) -> usize {
    let dims = shape.as_slice();
    dims[..dims.len().saturating_sub(1)].iter().product()
}

/// `y = x W + b` on flex tensors: `x [.., k]` (any strides), the weight `[k, m]` or `[m, k]`
/// per `layout`, `b [m]`.
fn affine_flex(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, layout: Layout) -> FlexTensor {
    let (k, m) = layout.in_out(w.layout().shape().dims());
    let mut shape = x.layout().shape().clone();
    let n = rows(&shape);
    let y = forward(&values(x), &values(w), &values(b), (n, k, m), layout);
    *shape.as_mut_slice().last_mut().expect("rank >= 1") = m;
    FlexTensor::from_data(TensorData::new(y, shape))
}

#[derive(Debug)]
struct AffineBackward;

impl Backward<Flex, 3> for AffineBackward {
    /// Input, weight, the weight's layout.
    type State = (FlexTensor, FlexTensor, Layout);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, layout) = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let [node_x, node_w, node_b] = ops.parents;
        let w_shape = w.layout().shape().clone();
        let (k, m) = layout.in_out(w_shape.dims());
        let g = values(&g);
        let n = rows(x.layout().shape());
        if let Some(node) = node_x {
            // dx [n, k] = g [n, m] W^T: W^T's (row, column) strides are W's swapped.
            let w = values(&w);
            let (w_rs, w_cs) = layout.strides(k, m);
            let mut dx = vec![0f32; n * k];
            // SAFETY: g is [n, m] row-major; w holds k * m elements.
            unsafe {
                product(
                    &mut dx,
                    (n, k, m),
                    false,
                    (g.as_ptr(), m as isize, 1),
                    (w.as_ptr(), w_cs, w_rs),
                );
            }
            let shape = x.layout().shape().clone();
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        }
        if let Some(node) = node_w {
            let x = values(&x);
            let mut dw = vec![0f32; k * m];
            // SAFETY: x is [n, k] and g [n, m], both row-major.
            unsafe {
                match layout {
                    // dW [k, m] = x^T g.
                    Layout::InOut => product(
                        &mut dw,
                        (k, m, n),
                        false,
                        (x.as_ptr(), 1, k as isize),
                        (g.as_ptr(), m as isize, 1),
                    ),
                    // dW [m, k] = g^T x.
                    Layout::OutIn => product(
                        &mut dw,
                        (m, k, n),
                        false,
                        (g.as_ptr(), 1, m as isize),
                        (x.as_ptr(), k as isize, 1),
                    ),
                }
            }
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, w_shape)));
        }
        if let Some(node) = node_b {
            let db = column_sums(&g, n, m);
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, [m])));
        }
    }
}

/// `x W + b` fused on flex `f32` tensors with or without autodiff; `Err(x)` (unchanged) for
/// every other backend or element type, and for shapes that do not fit (burn's path then
/// reports them).
fn try_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 2>,
    layout: Layout,
    b: Tensor<B, 1>,
) -> std::result::Result<Tensor<B, D>, Tensor<B, D>> {
    if w.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(x);
    }
    let (k, m) = layout.in_out(w.dims());
    if D == 0 || x.dims()[D - 1] != k || b.dims()[0] != m {
        return Err(x);
    }
    on_flex(
        x,
        |t| {
            let wt = primitive::<B, Autodiff<Flex>, 2>(w.clone());
            let bt = primitive::<B, Autodiff<Flex>, 1>(b.clone());
            let y = affine_flex(&t.primitive, &wt.primitive, &bt.primitive, layout);
            match AffineBackward
                .prepare::<NoCheckpointing>([t.node.clone(), wt.node.clone(), bt.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((t.primitive, wt.primitive, layout), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        },
        |t| {
            let wt = primitive::<B, Flex, 2>(w.clone());
            let bt = primitive::<B, Flex, 1>(b.clone());
            affine_flex(&t, &wt, &bt, layout)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x W + b` in f64, by loops.
    fn by_hand(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        (n, k, m): (usize, usize, usize),
        layout: Layout,
    ) -> Vec<f64> {
        let (rs, cs) = layout.strides(k, m);
        let mut y = vec![0f64; n * m];
        for i in 0..n {
            for j in 0..m {
                let mut s = f64::from(b[j]);
                for p in 0..k {
                    s += f64::from(x[i * k + p]) * f64::from(w[p * rs as usize + j * cs as usize]);
                }
                y[i * m + j] = s;
            }
        }
        y
    }

    #[test]
    fn forward_equals_the_loops_in_both_layouts_and_edge_shapes() {
        for &(n, k, m) in &[(3, 5, 7), (1, 1, 1), (40, 33, 130), (0, 4, 3), (2, 0, 3)] {
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let w: Vec<f32> = (0..k * m)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..m).map(|i| i as f32 - 1.5).collect();
            for layout in [Layout::InOut, Layout::OutIn] {
                let got = forward(&x, &w, &b, (n, k, m), layout);
                let want = by_hand(&x, &w, &b, (n, k, m), layout);
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    // Exact: every input is a multiple of 1/32 below 8, k <= 33 terms.
                    assert_eq!(f64::from(*g), *w, "{layout:?} {n}x{k}x{m}");
                }
            }
        }
    }

    #[test]
    fn the_fused_path_runs_on_flex_with_and_without_autodiff_and_nowhere_else() {
        fn runs<B: Backend>() -> bool {
            let device = Default::default();
            let x = Tensor::<B, 2>::ones([2, 3], &device);
            let (w, b) = (Tensor::ones([3, 4], &device), Tensor::ones([4], &device));
            let fused = try_affine(x, w.clone(), Layout::InOut, b.clone());
            if let Ok(y) = &fused {
                // 3 products of ones plus a bias of one.
                assert_eq!(y.to_data().to_vec::<f32>().unwrap(), vec![4.0; 8]);
            }
            // Shapes that do not fit are left to burn.
            let x = Tensor::<B, 2>::ones([2, 5], &device);
            assert!(try_affine(x, w, Layout::InOut, b).is_err());
            fused.is_ok()
        }
        assert!(runs::<Flex>());
        assert!(runs::<Autodiff<Flex>>());
        assert!(!runs::<burn::backend::NdArray<f32>>());
        assert!(!runs::<Autodiff<burn::backend::NdArray<f32>>>());
    }

    #[test]
    fn column_sums_add_every_row_of_each_column() {
        let (n, m) = (5, 300);
        let g: Vec<f32> = (0..n * m).map(|i| (i % 17) as f32).collect();
        let got = column_sums(&g, n, m);
        for (j, &s) in got.iter().enumerate() {
            let want: f32 = (0..n).map(|r| g[r * m + j]).sum();
            assert_eq!(s, want, "column {j}");
        }
    }
}
