//! Training through the host kernel: on `Autodiff<Flex>` (f32) the whole attention core, scores,
//! mask, softmax, dropout and the weighted sum, is one autodiff node, forward and backward on
//! host memory (flash-attention style, Dao et al. 2022, section 3.1 and algorithm 4).
//!
//! Why: as burn tensor ops (the block-sparse kernel under autodiff) a training step on flex runs
//! each of ~15 ops of the attention core as one pass and one fresh buffer on the calling thread,
//! plus the head split and merge copies, forward and again backward (docs/benchmarks.md). Here
//! the forward is [`super::host`]'s per-example recurrence, which also records each row's
//! log-sum-exp; the backward recomputes the scores tile by tile:
//!
//! ```text
//! for each (b, h) in parallel:                    delta = rowsum(dO * O)      [T]
//!   for each query tile i, run j of non-empty key tiles of (b, h):
//!     p = exp(scale q_i k_j^T [masked: -inf] - lse_i)     [Tq, W]   (softmax weights)
//!     dz = dO_i v_j^T                                     [Tq, W]
//!     z = p * M, dp = dz * M                              (M: dropout mask / keep, or 1)
//!     dv_j += z^T dO_i
//!     ds = p * (dp - delta_i)                             (softmax backward; rowsum(dp p) = delta)
//!     dq_i += scale ds k_j;  dk_j += scale ds^T q_i
//! ```
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim, Dv value dim,
//! Tq query-tile rows, W width of a run of key tiles.
//!
//! - Same conventions as every kernel here: a query row with no visible key outputs 0 and gets
//!   zero gradients.
//! - Dropout draws one mask for the whole `[B, H, T, S]` weight tensor from one call of the
//!   thread's counter-based dropout stream, exactly as the reference kernel does, so the two
//!   kernels agree with dropout on too (tested).
//! - The inputs are read in place with their strides (the `[B, T, H, D] -> [B, H, T, D]` head
//!   split is a view), so the split costs no copy; the output and the gradients are laid out
//!   like their inputs, so the merge back to `[B, T, H * D]` costs none either.
//! - Trade-offs: the backward pass recomputes `q k^T` (one more product than storing the
//!   weights, but no `[B, H, T, S]` buffer kept between passes); it is parallel over (b, h) only
//!   (key tiles of one head accumulate into the same `dk`, `dv` rows), so B x H below the thread
//!   count leaves threads idle.
//! - Other autodiff backends train through [`super::block_sparse`]; without autodiff this is
//!   [`super::host::attention`] (dropout acts only in training).

// `gemm` has only a raw-pointer API (see `host`).
#![allow(unsafe_code)]

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::host::{
    self, exp_shifted_sum, forward, gemm_abt, gemm_acc, DropSpec, HostDims, Operand, Operands,
    PartialBits, PartialMasks, MAX_RUN,
};
use super::{block_sparse, check_qkv, AttnOptions};
use crate::dropout::{next_call_key, Dropout};
use crate::error::Result;
use crate::flex::{cast, rebuild};
use crate::mask::{AttnMask, TileKind};
use crate::tiles::TileMap;

/// Masked attention through the host kernel, trainable: on `Autodiff<Flex>` with `f32` tensors
/// one autodiff node (module docs); on other autodiff backends the block-sparse kernel; without
/// autodiff [`host::attention`]. `dropout` acts on the attention weights in training.
///
/// # Shapes
/// - `q`: `[B, H, T, D]`, `k`: `[B, H, S, D]`, `v`: `[B, H, S, Dv]`
/// - output: `[B, H, T, Dv]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &dyn AttnMask,
    options: &AttnOptions,
    dropout: Option<&Dropout>,
) -> Result<Tensor<B, 4>> {
    check_qkv(&q, &k, &v)?;
    if !B::ad_enabled(&q.device()) {
        return host::attention(q, k, v, mask, options);
    }
    let all_f32 = [&q, &k, &v].iter().all(|t| t.dtype() == DType::F32);
    if all_f32 {
        if let Ok(q) = cast::<_, Tensor<Autodiff<Flex>, 4>>(q.clone()) {
            let same = |t: Tensor<B, 4>| {
                cast::<_, Tensor<Autodiff<Flex>, 4>>(t)
                    .unwrap_or_else(|_| unreachable!("k and v have q's backend"))
                    .into_primitive()
                    .tensor()
            };
            let out = train_flex(
                q.into_primitive().tensor(),
                same(k),
                same(v),
                mask,
                options,
                dropout,
            )?;
            return Ok(rebuild::<Autodiff<Flex>, B, 4>(out));
        }
    }
    block_sparse::attention(q, k, v, mask, options, dropout)
}

/// `Autodiff<Flex>`'s float primitive: the flex tensor and its graph node.
type AutodiffFlexFloat = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

/// `t` as a `[B, H, N, C]` operand read in place, or `None` when its layout is not one (negative
/// strides, another rank or element type): the caller then reads a contiguous copy.
fn operand(t: &FlexTensor) -> Option<Operand<'_>> {
    let layout = t.layout();
    let dims: [usize; 4] = layout.shape().as_slice().try_into().ok()?;
    let strides: Vec<usize> = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<_>>()?;
    if t.dtype() != DType::F32 {
        return None;
    }
    Operand::strided(
        t.storage::<f32>(),
        layout.start_offset(),
        strides.try_into().ok()?,
        dims,
    )
}

/// A contiguous copy of `t` when [`operand`] cannot read it in place.
fn readable(t: &FlexTensor) -> Option<FlexTensor> {
    operand(t).is_none().then(|| t.to_contiguous())
}

/// `t` (or its contiguous copy `copy`) as an operand.
fn read<'a>(t: &'a FlexTensor, copy: &'a Option<FlexTensor>) -> Operand<'a> {
    operand(copy.as_ref().unwrap_or(t)).expect("a contiguous f32 tensor of rank 4 is readable")
}

fn train_flex(
    q: AutodiffFlexFloat,
    k: AutodiffFlexFloat,
    v: AutodiffFlexFloat,
    mask: &dyn AttnMask,
    options: &AttnOptions,
    dropout: Option<&Dropout>,
) -> Result<AutodiffFlexFloat> {
    let dims = host_dims(&q.primitive, &v.primitive);
    let map = TileMap::build(
        mask,
        dims.batch,
        dims.heads,
        dims.seq_q,
        dims.seq_k,
        options.tile_q,
        options.tile_k,
    )?;
    let scale = options.scale_for(dims.head_dim) as f32;
    // One call of the thread's dropout stream, as `Dropout::forward` on the weights would take.
    let drop = dropout.filter(|d| d.prob > 0.0).map(|d| DropSpec {
        call_key: next_call_key(),
        keep: 1.0 - d.prob,
    });
    let bits = PartialBits::new(&map);
    let (out, lse) = {
        let copies = [&q, &k, &v].map(|t| readable(&t.primitive));
        let x = Operands {
            q: read(&q.primitive, &copies[0]),
            k: read(&k.primitive, &copies[1]),
            v: read(&v.primitive, &copies[2]),
        };
        forward(&x, dims, Some(mask), &map, &bits, scale, drop)
    };
    let out = laid_out(
        out,
        [dims.batch, dims.heads, dims.seq_q, dims.v_dim],
        head_split(&q.primitive),
    );
    let parents = [q.node.clone(), k.node.clone(), v.node.clone()];
    Ok(
        match AttentionBackward
            .prepare::<NoCheckpointing>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    q: q.primitive,
                    k: k.primitive,
                    v: v.primitive,
                    out: out.clone(),
                    lse,
                    map,
                    bits,
                    dims,
                    scale,
                    drop,
                };
                prep.finish(Arc::new(saved), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    )
}

/// Whether `t` (`[B, H, N, C]`) is the head-split view of a row-major `[B, N, H, C]` buffer,
/// `linear(x).reshape([B, N, H, C]).swap_dims(1, 2)`, as `MaskedSelfAttention` makes q, k and v.
fn head_split(t: &FlexTensor) -> bool {
    let layout = t.layout();
    match *layout.shape().as_slice() {
        [_, h, n, c] => {
            let split = [n * h * c, c, h * c, 1].map(|s| s as isize);
            layout.strides() == split.as_slice()
        }
        _ => false,
    }
}

/// `values`, row-major `[B, H, N, C]`, as a `[B, H, N, C]` tensor. With `split`, stored as
/// row-major `[B, N, H, C]` (one parallel pass of row copies) and returned as that buffer's
/// head-split view: a result laid out like its head-split input lets the caller's swap back
/// and merge of the heads (`swap_dims(1, 2).reshape([B, N, H * C])`) cost no copy, where
/// flex would otherwise copy element by element on one thread, forward (the output) and
/// backward (q, k and v's gradients).
fn laid_out(values: Vec<f32>, [b, h, n, c]: [usize; 4], split: bool) -> FlexTensor {
    if !split || values.is_empty() {
        return FlexTensor::from_data(TensorData::new(values, [b, h, n, c]));
    }
    let mut rows = vec![0f32; values.len()];
    rows.par_chunks_mut(h * c)
        .with_min_len(64)
        .enumerate()
        .for_each(|(bn, row)| {
            let (bi, ni) = (bn / n, bn % n);
            for (hi, dst) in row.chunks_exact_mut(c).enumerate() {
                let src = ((bi * h + hi) * n + ni) * c;
                dst.copy_from_slice(&values[src..src + c]);
            }
        });
    FlexTensor::from_data(TensorData::new(rows, [b, n, h, c])).transpose(1, 2)
}

fn host_dims(q: &FlexTensor, v: &FlexTensor) -> HostDims {
    let (qd, vd) = (q.layout().shape().as_slice(), v.layout().shape().as_slice());
    HostDims {
        batch: qd[0],
        heads: qd[1],
        seq_q: qd[2],
        seq_k: vd[2],
        head_dim: qd[3],
        v_dim: vd[3],
    }
}

/// What the backward pass needs: the inputs (shared, not copied), the output, each row's
/// log-sum-exp, the tile map with its partial tiles' masks, and the dropout call.
#[derive(Debug)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// `[B, H, T, Dv]`, laid out like `q` ([`laid_out`]).
    out: FlexTensor,
    /// `[B, H, T]`.
    lse: Vec<f32>,
    map: TileMap,
    bits: PartialBits,
    dims: HostDims,
    scale: f32,
    drop: Option<DropSpec>,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let [dq, dk, dv] = saved.backward(&g);
        let shapes = saved.dims.qkv_shapes();
        let inputs = [&saved.q, &saved.k, &saved.v];
        for (((parent, grad), shape), input) in ops
            .parents
            .into_iter()
            .zip([dq, dk, dv])
            .zip(shapes)
            .zip(inputs)
        {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, laid_out(grad, shape, head_split(input)));
            }
        }
    }
}

impl Saved {
    /// `[dq, dk, dv]` (row-major `[B, H, T or S, D or Dv]`) for the output gradient `g`.
    fn backward(&self, g: &FlexTensor) -> [Vec<f32>; 3] {
        let shapes = self.dims.qkv_shapes();
        let [mut dq, mut dk, mut dv_all] = shapes.map(|s| vec![0f32; s.iter().product()]);
        // One head's rows of each gradient: T x D, S x D, S x Dv.
        let [q_head, k_head, v_head] = shapes.map(|s| s[2] * s[3]);
        let heads = self.dims.heads;
        if dq.is_empty() || dk.is_empty() || dv_all.is_empty() {
            // Some size is 0: every gradient is empty or 0.
            return [dq, dk, dv_all];
        }
        let copies = [&self.q, &self.k, &self.v, g].map(readable);
        let x = Operands {
            q: read(&self.q, &copies[0]),
            k: read(&self.k, &copies[1]),
            v: read(&self.v, &copies[2]),
        };
        let go = read(g, &copies[3]);
        let out = read(&self.out, &None);
        dq.par_chunks_mut(q_head)
            .zip(dk.par_chunks_mut(k_head))
            .zip(dv_all.par_chunks_mut(v_head))
            .enumerate()
            .for_each(|(bh, ((dq, dk), dv))| {
                let (b, h) = (bh / heads, bh % heads);
                self.head_backward(&x, &go, &out, (b, h), (dq, dk, dv));
            });
        [dq, dk, dv_all]
    }

    /// The backward recurrence of one (batch element, head) into its gradient rows.
    fn head_backward(
        &self,
        x: &Operands,
        go: &Operand,
        out: &Operand,
        (b, h): (usize, usize),
        (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let dims = self.dims;
        let (d, n_dv) = (dims.head_dim, dims.v_dim);
        let map = &self.map;
        let mh = if map.heads() == 1 { 0 } else { h };
        let masks = PartialMasks {
            mask: None,
            map,
            bits: &self.bits,
        };
        let lse = &self.lse[(b * dims.heads + h) * dims.seq_q..][..dims.seq_q];
        // delta_t = dO_t . O_t = rowsum(dp * p) (dropout included: O = z v).
        let delta: Vec<f32> = (0..dims.seq_q)
            .map(|t| {
                (0..n_dv)
                    .map(|c| go.get(b, h, t, c) * out.get(b, h, t, c))
                    .sum()
            })
            .collect();
        let (mut p, mut dp, mut z) = (vec![], vec![], vec![]);
        for qt in 0..map.n_q_tiles() {
            let qr = map.q_range(qt);
            let tq = qr.len();
            for (kr, kind) in map.key_runs(|kt| map.kind(b, mh, qt, kt), MAX_RUN) {
                let w = kr.len();
                p.resize(tq * w, 0.0);
                dp.resize(tq * w, 0.0);
                let (p, dp) = (&mut p[..tq * w], &mut dp[..tq * w]);
                let (q_i, k_j) = (x.q.row(b, h, qr.start), x.k.row(b, h, kr.start));
                let (v_j, go_i) = (x.v.row(b, h, kr.start), go.row(b, h, qr.start));
                // SAFETY (every product below): the row pointers address Tq or W rows of D or Dv
                // elements of their operands (bounds checked when the operands were made); the
                // row-major buffers `p`, `dp`, `z` hold Tq x W, and the gradient slices of this
                // head hold their rows; outputs alias no input.
                unsafe {
                    gemm_abt(
                        p,
                        (tq, w, d),
                        q_i,
                        x.q.strides_rc(),
                        k_j,
                        x.k.strides_rc(),
                        self.scale,
                    );
                }
                if kind == TileKind::Partial {
                    masks.apply((b, h, mh), qt, &qr, p, w, &kr);
                }
                for (row, &l) in p.chunks_exact_mut(w).zip(&lse[qr.clone()]) {
                    if l == f32::NEG_INFINITY {
                        row.fill(0.0); // no visible key in this row
                    } else {
                        exp_shifted_sum(row, l); // p = exp(s - lse) <= 1
                    }
                }
                unsafe {
                    gemm_abt(
                        dp,
                        (tq, w, n_dv),
                        go_i,
                        go.strides_rc(),
                        v_j,
                        x.v.strides_rc(),
                        1.0,
                    );
                }
                let z: &[f32] = match self.drop {
                    Some(drop) => {
                        z.clear();
                        z.extend_from_slice(p);
                        for (i, (zr, dpr)) in z
                            .chunks_exact_mut(w)
                            .zip(dp.chunks_exact_mut(w))
                            .enumerate()
                        {
                            drop.apply(dims, b, h, qr.start + i, kr.start, zr);
                            drop.apply(dims, b, h, qr.start + i, kr.start, dpr);
                        }
                        &z[..]
                    }
                    None => p,
                };
                unsafe {
                    gemm_acc(
                        dv[kr.start * n_dv..].as_mut_ptr(),
                        n_dv as isize,
                        (w, n_dv, tq),
                        z.as_ptr(),
                        (1, w as isize),
                        go_i,
                        go.strides_rc(),
                        1.0,
                    );
                }
                // ds = p * (dp - delta), in place of dp.
                for ((dsr, pr), &dl) in dp
                    .chunks_exact_mut(w)
                    .zip(p.chunks_exact(w))
                    .zip(&delta[qr.clone()])
                {
                    dsr.iter_mut()
                        .zip(pr)
                        .for_each(|(ds, &p)| *ds = p * (*ds - dl));
                }
                let ds = &*dp;
                unsafe {
                    gemm_acc(
                        dq[qr.start * d..].as_mut_ptr(),
                        d as isize,
                        (tq, d, w),
                        ds.as_ptr(),
                        (w as isize, 1),
                        k_j,
                        x.k.strides_rc(),
                        self.scale,
                    );
                    gemm_acc(
                        dk[kr.start * d..].as_mut_ptr(),
                        d as isize,
                        (w, d, tq),
                        ds.as_ptr(),
                        (1, w as isize),
                        q_i,
                        x.q.strides_rc(),
                        self.scale,
                    );
                }
            }
        }
    }
}
