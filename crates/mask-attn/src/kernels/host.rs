//! Masked attention on host slices: the CPU fast path (forward; [`super::host_train`] trains it).
//!
//! The same online-softmax recurrence as [`super::block_sparse`], but per (batch element, head,
//! query tile) on `f32` host memory, so that:
//! - the tile map is the **per-example** one ([`TileMap::kind`]): a padded row or a document
//!   boundary skips the tiles that are empty for *this* example, not only those empty for the
//!   whole batch (the tensor kernel is batched over B and H and can only skip the union);
//! - the two products of a tile run through `gemm` (the crate burn-flex uses: runtime-dispatched
//!   AVX2 / AVX-512 / NEON micro-kernels), with no tensor allocation per tile;
//! - the softmax's `exp` is a branch-free polynomial that the compiler vectorises (see
//!   `exp_shifted_sum`), compiled for AVX-512 or AVX2+FMA when the CPU has them;
//! - (batch, head, query tile) tasks run in parallel on rayon's pool.
//!
//! ```text
//! for each (b, h, query tile i) in parallel:   q_i [Tq, D] (pre-scaled), acc [Tq, Dv] = 0
//!   m = -inf, l = 0                            m, l [Tq]
//!   for each run j of non-empty key tiles of (b, h):
//!     s = q_i k_j^T                            [Tq, W]   (gemm)
//!     if partial: s[masked] = -inf
//!     m' = max(m, rowmax(s)); p = exp(s - m')  (rows with m' = -inf: nothing visible yet, skip)
//!     l = l * exp(m - m') + rowsum(p); acc = acc * exp(m - m') + p v_j   (gemm, accumulating)
//!   out_i = acc / l  (0 for a row with no visible key, as every kernel here)
//! ```
//!
//! Legend: B batch, H heads, T query positions, S key positions, D head dim, Dv value dim,
//! Tq query-tile rows, W width of a run of key tiles.
//!
//! Trade-offs, honestly:
//! - It reads the tensors back to the host and uploads the result: free on the CPU backends
//!   (NdArray, flex), a round trip on a GPU, where burn's fused kernel is the fast path.
//! - This module is the forward pass. [`super::host_train`] makes it trainable on
//!   `Autodiff<Flex>` (one autodiff node, flash-style backward, dropout); calling
//!   [`attention`] directly on an autodiff tensor returns a value with no gradient path.
//! - No dropout here (inference); `host_train` applies it inside the recurrence.
//! - The `exp` is accurate to ~2 ulp over the range that matters (`x <= 0` after the max shift);
//!   results match [`super::reference`] to ~1e-6, tested in `tests/kernels.rs`.

// `gemm` has only a raw-pointer API, and the AVX2 copy of the exp loop needs a
// `#[target_feature]` function: one of the exceptions to `unsafe_code = "deny"` that the
// workspace's Cargo.toml lists.
#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::TensorData;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::{check_qkv, AttnOptions};
use crate::error::{AttnError, Result};
use crate::mask::{AttnMask, TileKind};
use crate::tiles::TileMap;

/// Masked attention on host memory, no gradient (see the module documentation).
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
) -> Result<Tensor<B, 4>> {
    check_qkv(&q, &k, &v)?;
    let [batch, heads, seq_q, head_dim] = q.dims();
    let [_, _, seq_k, v_dim] = v.dims();
    let map = TileMap::build(
        mask,
        batch,
        heads,
        seq_q,
        seq_k,
        options.tile_q,
        options.tile_k,
    )?;
    let device = q.device();
    let host = |t: Tensor<B, 4>, field: &'static str| -> Result<Vec<f32>> {
        t.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| AttnError::InvalidValue {
                field,
                value: format!("{e:?}"),
                expected: "a float tensor readable as f32",
            })
    };
    let (qh, kh, vh) = (host(q, "q")?, host(k, "k")?, host(v, "v")?);
    let dims = HostDims {
        batch,
        heads,
        seq_q,
        seq_k,
        head_dim,
        v_dim,
    };
    let out = attention_host(
        &qh,
        &kh,
        &vh,
        dims,
        mask,
        &map,
        options.scale_for(head_dim) as f32,
    )?;
    Ok(Tensor::from_data(
        TensorData::new(out, [batch, heads, seq_q, v_dim]),
        &device,
    ))
}

/// Sizes of a host attention problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDims {
    /// B.
    pub batch: usize,
    /// H.
    pub heads: usize,
    /// T.
    pub seq_q: usize,
    /// S.
    pub seq_k: usize,
    /// D.
    pub head_dim: usize,
    /// Dv.
    pub v_dim: usize,
}

impl HostDims {
    /// The shapes of `q [B, H, T, D]`, `k [B, H, S, D]` and `v [B, H, S, Dv]` (and of their
    /// gradients).
    pub fn qkv_shapes(&self) -> [[usize; 4]; 3] {
        let (b, h) = (self.batch, self.heads);
        [
            [b, h, self.seq_q, self.head_dim],
            [b, h, self.seq_k, self.head_dim],
            [b, h, self.seq_k, self.v_dim],
        ]
    }
}

/// The kernel on row-major host slices `q [B, H, T, D]`, `k [B, H, S, D]`, `v [B, H, S, Dv]`;
/// returns `[B, H, T, Dv]`. `map` must have been built for `mask` at these sizes.
///
/// # Errors
/// [`AttnError::Length`] naming the slice whose length disagrees with `dims`, and
/// [`AttnError::Shape`] if `map` was built for other sizes.
pub fn attention_host(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: HostDims,
    mask: &dyn AttnMask,
    map: &TileMap,
    scale: f32,
) -> Result<Vec<f32>> {
    let shapes = dims.qkv_shapes();
    for ((field, slice), shape) in [("q", q), ("k", k), ("v", v)].into_iter().zip(shapes) {
        let expected = shape.iter().product();
        if slice.len() != expected {
            return Err(AttnError::Length {
                field,
                expected,
                got: slice.len(),
            });
        }
    }
    check_map(map, dims)?;
    let operands = Operands {
        q: Operand::contiguous(q, shapes[0]),
        k: Operand::contiguous(k, shapes[1]),
        v: Operand::contiguous(v, shapes[2]),
    };
    let bits = PartialBits::new(map);
    let (out, _lse) = forward(&operands, dims, Some(mask), map, &bits, scale, None);
    Ok(out)
}

/// Refuses a tile map built for other sizes than `dims`.
pub(crate) fn check_map(map: &TileMap, dims: HostDims) -> Result<()> {
    let (map_batch, map_q, map_k) = map.sizes();
    let map_heads_ok = map.heads() == 1 || map.heads() == dims.heads;
    for (what, expected, got) in [
        ("batch of the tile map", dims.batch, map_batch),
        ("query positions of the tile map", dims.seq_q, map_q),
        ("key positions of the tile map", dims.seq_k, map_k),
        (
            "heads of the tile map",
            dims.heads,
            if map_heads_ok {
                dims.heads
            } else {
                map.heads()
            },
        ),
    ] {
        if expected != got {
            return Err(AttnError::Shape {
                what: what.into(),
                expected,
                got,
            });
        }
    }
    Ok(())
}

/// A `[B, H, N, C]` operand on host memory, element `(b, h, n, c)` at
/// `data[offset + b sb + h sh + n sn + c sc]`: a contiguous tensor or a strided view of one
/// (the head split `[B, T, H, D] -> [B, H, T, D]` is a view, read in place by `gemm`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    /// `[sb, sh, sn, sc]`.
    strides: [usize; 4],
}

impl<'a> Operand<'a> {
    /// A row-major `[B, H, N, C]` slice.
    pub(crate) fn contiguous(data: &'a [f32], [_, h, n, c]: [usize; 4]) -> Self {
        Self {
            data,
            offset: 0,
            strides: [h * n * c, n * c, c, 1],
        }
    }

    /// A strided view, or `None` when some element of `dims` would lie outside `data`.
    pub(crate) fn strided(
        data: &'a [f32],
        offset: usize,
        strides: [usize; 4],
        dims: [usize; 4],
    ) -> Option<Self> {
        if dims.contains(&0) {
            return Some(Self {
                data,
                offset,
                strides,
            });
        }
        let last = dims.iter().zip(&strides).try_fold(offset, |at, (&n, &s)| {
            at.checked_add((n - 1).checked_mul(s)?)
        })?;
        (last < data.len()).then_some(Self {
            data,
            offset,
            strides,
        })
    }

    /// Pointer to element `(b, h, n, 0)`.
    pub(crate) fn row(&self, b: usize, h: usize, n: usize) -> *const f32 {
        let [sb, sh, sn, _] = self.strides;
        // In bounds: `strided` checked the last element, and callers pass indices within dims.
        self.data[self.offset + b * sb + h * sh + n * sn..].as_ptr()
    }

    /// Element `(b, h, n, c)`.
    pub(crate) fn get(&self, b: usize, h: usize, n: usize, c: usize) -> f32 {
        let [sb, sh, sn, sc] = self.strides;
        self.data[self.offset + b * sb + h * sh + n * sn + c * sc]
    }

    /// `(row stride, column stride)` of the `[N, C]` matrix of one (b, h), for `gemm`.
    pub(crate) fn strides_rc(&self) -> (isize, isize) {
        (self.strides[2] as isize, self.strides[3] as isize)
    }
}

/// The three inputs of one attention problem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operands<'a> {
    pub(crate) q: Operand<'a>,
    pub(crate) k: Operand<'a>,
    pub(crate) v: Operand<'a>,
}

/// Dropout on the attention weights inside the kernel: element `(b, h, i, j)` of the weights
/// `[B, H, T, S]` is kept as element `((b H + h) T + i) S + j` of one dropout call
/// ([`crate::dropout::keeps`]), the same mask the reference kernel draws with one call over the
/// whole weight tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropSpec {
    pub(crate) call_key: u64,
    pub(crate) keep: f64,
}

impl DropSpec {
    /// Applies the mask to the weights `row` of query `i` from key `first_key` on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &self,
        dims: HostDims,
        b: usize,
        h: usize,
        i: usize,
        first_key: usize,
        row: &mut [f32],
    ) {
        let first = ((b * dims.heads + h) * dims.seq_q + i) * dims.seq_k + first_key;
        crate::dropout::apply_keep_mask(self.call_key, first, self.keep, row);
    }
}

/// The forward recurrence over every (batch element, head, query tile) in parallel: the output
/// `[B, H, T, Dv]` (row-major) and each row's log-sum-exp `[B, H, T]` of its visible scaled
/// scores (`-inf` for a row with no visible key), which the backward pass needs.
pub(crate) fn forward(
    x: &Operands,
    dims: HostDims,
    mask: Option<&dyn AttnMask>,
    map: &TileMap,
    bits: &PartialBits,
    scale: f32,
    drop: Option<DropSpec>,
) -> (Vec<f32>, Vec<f32>) {
    let HostDims {
        heads,
        seq_q,
        v_dim: dv,
        ..
    } = dims;
    let mut out = vec![0.0f32; dims.batch * heads * seq_q * dv];
    let mut lse = vec![f32::NEG_INFINITY; dims.batch * heads * seq_q];
    if out.is_empty() {
        return (out, lse);
    }
    let tile_rows = map.q_range(0).len().max(1);
    let hm = map.heads();
    out.par_chunks_mut(seq_q * dv)
        .zip(lse.par_chunks_mut(seq_q))
        .enumerate()
        .for_each(|(bh, (out_head, lse_head))| {
            let (b, h) = (bh / heads, bh % heads);
            let mh = if hm == 1 { 0 } else { h };
            out_head
                .par_chunks_mut(tile_rows * dv)
                .zip(lse_head.par_chunks_mut(tile_rows))
                .enumerate()
                .for_each(|(qt, (acc, lse))| {
                    let runs = map.key_runs(|kt| map.kind(b, mh, qt, kt), MAX_RUN);
                    let task = Task {
                        b,
                        h,
                        mh,
                        qt,
                        qr: map.q_range(qt),
                        dims,
                        scale,
                        masks: PartialMasks { mask, map, bits },
                    };
                    task.run(x, &runs, acc, lse, drop);
                });
        });
    (out, lse)
}

/// Widest run of key tiles merged into one product: the score block `[Tq, W]` of 128 x 512
/// floats (256 KiB) stays in L2 between the two products and the `exp` pass. Measured on the
/// dense L = 2048 case (2-core dev machine, 2026-11-30): 256 keys 429 ms, 512 keys 380 ms, a
/// whole 2048-key row 430 ms.
pub(crate) const MAX_RUN: usize = 512;

/// Element masks of the partial tiles of a [`TileMap`] `[B, Hm, n_qt, n_kt]`, built on first
/// use: rows of `ceil(w / 64)` words, bit set = may attend. Shared by every head when the mask
/// is head-independent (one `allows` call per element per example, not per head), and kept by
/// the backward pass, which visits the same tiles as the forward pass.
#[derive(Debug)]
pub(crate) struct PartialBits(Vec<OnceLock<Vec<u64>>>);

impl PartialBits {
    /// No tile built yet.
    pub(crate) fn new(map: &TileMap) -> Self {
        let (batch, _, _) = map.sizes();
        Self(
            (0..batch * map.heads() * map.n_q_tiles() * map.n_k_tiles())
                .map(|_| OnceLock::new())
                .collect(),
        )
    }
}

/// Where the partial tiles' element masks come from: `mask` builds a missing one (forward);
/// without it every tile must have been built already (backward, after its forward).
#[derive(Clone, Copy)]
pub(crate) struct PartialMasks<'a> {
    pub(crate) mask: Option<&'a dyn AttnMask>,
    pub(crate) map: &'a TileMap,
    pub(crate) bits: &'a PartialBits,
}

impl PartialMasks<'_> {
    /// Sets the masked scores of every tile of the partial run `kr` (columns of `s [Tq, W]`,
    /// rows `qr` of query tile `qt`) to `-inf`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &self,
        (b, h, mh): (usize, usize, usize),
        qt: usize,
        qr: &Range<usize>,
        s: &mut [f32],
        w: usize,
        kr: &Range<usize>,
    ) {
        let map = self.map;
        let tile_k = map.k_range(0).len();
        let n_kt = map.n_k_tiles();
        for kt in kr.start / tile_k..kr.end.div_ceil(tile_k) {
            let cols = map.k_range(kt);
            let words = cols.len().div_ceil(64);
            let at = ((b * map.heads() + mh) * map.n_q_tiles() + qt) * n_kt + kt;
            let build = || {
                let mask = self
                    .mask
                    .expect("the forward pass built every partial tile the backward pass visits");
                let mut bits = vec![0u64; qr.len() * words];
                for (i, qi) in qr.clone().enumerate() {
                    for (j, ki) in cols.clone().enumerate() {
                        if mask.allows(b, h, qi, ki) {
                            bits[i * words + j / 64] |= 1 << (j % 64);
                        }
                    }
                }
                bits
            };
            let bits = self.bits.0[at].get_or_init(build);
            let offset = cols.start - kr.start;
            for (i, row) in s.chunks_exact_mut(w).enumerate() {
                let row_bits = &bits[i * words..(i + 1) * words];
                for (j, x) in row[offset..offset + cols.len()].iter_mut().enumerate() {
                    if (row_bits[j / 64] >> (j % 64)) & 1 == 0 {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}

/// `c = (read_c ? c : 0) + beta a b` through `gemm`, for `a [M, K]` and `b [K, N]` given by
/// their (row, column) strides and `c [M, N]` with row stride `c_rs` and column stride 1: the
/// one call of the `gemm` crate behind the host kernels and the affine maps (`affine.rs`).
///
/// # Safety
/// Every pointer must address its matrix with the given strides; `c` must not alias the others.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
    c: *mut f32,
    c_rs: isize,
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    (a_rs, a_cs): (isize, isize),
    b: *const f32,
    (b_rs, b_cs): (isize, isize),
    read_c: bool,
    beta: f32,
    parallelism: Parallelism,
) {
    // SAFETY: the caller's contract. gemm computes `dst = alpha dst + beta lhs rhs` and ignores
    // `alpha` (and never reads `dst`) when `read_dst` is false.
    unsafe {
        gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs,
            read_c,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `s = scale * a b^T` for `a [M, K]` and `b [N, K]` rows of operands (`s [M, N]` row-major).
///
/// # Safety
/// `a` and `b` must address `m` and `n` rows of `k` elements with the given strides, and `s`
/// must hold `m * n` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_abt(
    s: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    a_strides: (isize, isize),
    b: *const f32,
    (b_rs, b_cs): (isize, isize),
    scale: f32,
) {
    debug_assert!(s.len() >= m * n);
    // SAFETY: the caller's contract; `b` read as [K, N] has row stride b_cs, column stride b_rs.
    unsafe {
        gemm_strided(
            s.as_mut_ptr(),
            n as isize,
            (m, n, k),
            a,
            a_strides,
            b,
            (b_cs, b_rs),
            false,
            scale,
            Parallelism::None,
        );
    }
}

/// `c += beta a b` for `a [M, K]` (strides `a_rs`, `a_cs`), `b [K, N]` (strides `b_rs`, `b_cs`)
/// and `c [M, N]` row-major with row stride `c_rs`.
///
/// # Safety
/// Every pointer must address its matrix with the given strides; `c` must not alias the others.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_acc(
    c: *mut f32,
    c_rs: isize,
    dims: (usize, usize, usize),
    a: *const f32,
    a_strides: (isize, isize),
    b: *const f32,
    b_strides: (isize, isize),
    beta: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm_strided(
            c,
            c_rs,
            dims,
            a,
            a_strides,
            b,
            b_strides,
            true,
            beta,
            Parallelism::None,
        );
    }
}

/// One (batch element, head, query tile).
struct Task<'a> {
    b: usize,
    h: usize,
    /// Head index in the tile map (0 for head-independent masks).
    mh: usize,
    qt: usize,
    qr: Range<usize>,
    dims: HostDims,
    scale: f32,
    masks: PartialMasks<'a>,
}

impl Task<'_> {
    /// Accumulates into `acc [Tq, Dv]` (zeroed), normalises it and writes each row's
    /// log-sum-exp into `lse [Tq]`.
    fn run(
        &self,
        x: &Operands,
        runs: &[(Range<usize>, TileKind)],
        acc: &mut [f32],
        lse: &mut [f32],
        drop: Option<DropSpec>,
    ) {
        let (d, dv) = (self.dims.head_dim, self.dims.v_dim);
        let (b, h) = (self.b, self.h);
        let tq = self.qr.len();
        let q_i = x.q.row(b, h, self.qr.start); // [Tq, D]
        let mut m = vec![f32::NEG_INFINITY; tq];
        let mut l = vec![0.0f32; tq];
        let max_w = runs.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        let mut s = vec![0.0f32; tq * max_w]; // [Tq, W]
        for (kr, kind) in runs {
            let w = kr.len();
            let s = &mut s[..tq * w];
            // s = scale * q_i k_j^T.
            // SAFETY: `q_i` and `k_j` address Tq and W rows of D elements of their operands
            // (bounds checked when the operands were made), `s` holds Tq x W.
            unsafe {
                gemm_abt(
                    s,
                    (tq, w, d),
                    q_i,
                    x.q.strides_rc(),
                    x.k.row(b, h, kr.start),
                    x.k.strides_rc(),
                    self.scale,
                );
            }
            if *kind == TileKind::Partial {
                self.masks
                    .apply((b, h, self.mh), self.qt, &self.qr, s, w, kr);
            }
            for (i, row) in s.chunks_exact_mut(w).enumerate() {
                let m_new = m[i].max(row_max(row));
                if m_new == f32::NEG_INFINITY {
                    // Nothing visible in this row so far: p = 0, state unchanged.
                    row.fill(0.0);
                    continue;
                }
                let alpha = (m[i] - m_new).exp(); // 0 when m was -inf
                let row_sum = exp_shifted_sum(row, m_new);
                l[i] = l[i] * alpha + row_sum;
                if alpha != 1.0 {
                    acc[i * dv..(i + 1) * dv]
                        .iter_mut()
                        .for_each(|a| *a *= alpha);
                }
                m[i] = m_new;
                // Dropout acts on the weights that multiply V, not on the normaliser.
                if let Some(drop) = drop {
                    drop.apply(self.dims, b, h, self.qr.start + i, kr.start, row);
                }
            }
            // acc += p v_j
            // SAFETY: `acc` [Tq, Dv] and `s` [Tq, W] (now p) are row-major slices, `v_j`
            // addresses W rows of Dv elements of its operand; `acc` is not aliased.
            unsafe {
                gemm_acc(
                    acc.as_mut_ptr(),
                    dv as isize,
                    (tq, dv, w),
                    s.as_ptr(),
                    (w as isize, 1),
                    x.v.row(b, h, kr.start),
                    x.v.strides_rc(),
                    1.0,
                );
            }
        }
        for ((row, li), (mi, lse)) in acc.chunks_exact_mut(dv).zip(&l).zip(m.iter().zip(lse)) {
            // A row that saw no visible key has l = 0 and acc = 0: output 0.
            let inv = if *li > 0.0 { 1.0 / li } else { 0.0 };
            row.iter_mut().for_each(|a| *a *= inv);
            *lse = if *li > 0.0 {
                mi + li.ln()
            } else {
                f32::NEG_INFINITY
            };
        }
    }
}

/// Maximum of a row (`-inf` for an empty or fully masked row).
pub(crate) fn row_max(row: &[f32]) -> f32 {
    // Eight independent lanes so that the loop vectorises (a single `fold(max)` is a serial
    // dependency chain).
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = l.max(*x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, x| a.max(*x));
    lanes.iter().fold(tail, |a, x| a.max(*x))
}

/// Replaces `row[j]` by `exp(row[j] - shift)` and returns their sum. `shift` is finite and
/// `>= row[j]`, so every argument is `<= 0`; `-inf` entries become exactly 0.
pub(crate) fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features this copy was compiled for.
            return unsafe { exp_shifted_sum_avx512(row, shift) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features this copy was compiled for.
            return unsafe { exp_shifted_sum_avx2(row, shift) };
        }
    }
    exp_shifted_sum_portable::<false>(row, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_sum_avx512(row: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_portable::<true>(row, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_sum_avx2(row: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_portable::<true>(row, shift)
}

#[inline(always)]
fn exp_shifted_sum_portable<const FMA: bool>(row: &mut [f32], shift: f32) -> f32 {
    // Two simple loops rather than one: the map vectorises as is, and the sum needs its own
    // eight lanes (float addition is not reassociated by the compiler). Fused into one loop,
    // LLVM vectorised it only partly (measured: scalar FMAs and blends in the hot loop).
    for x in row.iter_mut() {
        *x = exp_nonpositive::<FMA>(*x - shift);
    }
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += *x;
        }
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

/// `e^x` for `x <= 0` (and `-inf`), branch-free so that loops over it vectorise (`FMA`: use
/// fused multiply-adds, only where the CPU has them, else `mul_add` is a libm call): Cody-Waite
/// reduction `x = n ln2 + r`, `|r| <= ln2 / 2`, a degree-6 Taylor/minimax polynomial for `e^r`
/// (Cephes `expf` coefficients), and `2^n` built in the exponent bits. Below `-87.3` (where
/// `e^x` is subnormal) it returns 0, as softmax weights that small are.
#[inline(always)]
pub fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    let fma = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOWEST: f32 = -87.336_55;
    // Round-to-nearest by the 1.5 * 2^23 trick: after `t = y + MAGIC` the low mantissa bits
    // of `t` hold round(y) as an integer, so n and 2^n come from float adds and integer shifts.
    // (`f32::round` has no SIMD instruction, and `as i32` saturates element by element: both
    // kept this loop scalar, measured at a third of the kernel's time.)
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.max(LOWEST);
    let t = fma(xc, LOG2E, MAGIC);
    let n = t - MAGIC; // in [-126, 0]
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, xc));
    let p = 1.987_569_1e-4f32;
    let p = fma(p, r, 1.398_199_9e-3);
    let p = fma(p, r, 8.333_452e-3);
    let p = fma(p, r, 4.166_579_6e-2);
    let p = fma(p, r, 1.666_666_5e-1);
    let p = fma(p, r, 0.5);
    let y = fma(p * r, r, r) + 1.0;
    let pow2n = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23); // 2^n
    if x < LOWEST {
        0.0
    } else {
        y * pow2n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomial `exp` against the standard library over the range softmax uses.
    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            for got in [exp_nonpositive::<true>(x), exp_nonpositive::<false>(x)] {
                worst = worst.max((got as f64 - want).abs() / want);
            }
        }
        // f32 epsilon is 1.19e-7: a few ulp.
        assert!(worst < 4e-7, "relative error {worst:e}");
        for exp in [exp_nonpositive::<true>, exp_nonpositive::<false>] {
            assert_eq!(exp(f32::NEG_INFINITY), 0.0);
            assert_eq!(exp(-100.0), 0.0);
            assert_eq!(exp(0.0), 1.0);
        }
    }

    #[test]
    fn exp_shifted_sum_matches_a_plain_loop() {
        let mut row: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.37).collect();
        row[5] = f32::NEG_INFINITY;
        let want: Vec<f32> = row.iter().map(|x| (x - 0.5).exp()).collect();
        let mut portable = row.clone();
        let portable_sum = exp_shifted_sum_portable::<false>(&mut portable, 0.5);
        let sum = exp_shifted_sum(&mut row, 0.5);
        assert!((sum - portable_sum).abs() < 1e-5);
        for (a, b) in row.iter().zip(&portable) {
            assert!((a - b).abs() <= 4e-7 * b.max(1e-30), "{a} vs {b}");
        }
        for (a, b) in row.iter().zip(&want) {
            assert!((a - b).abs() <= 4e-7 * b.max(1e-30), "{a} vs {b}");
        }
        assert_eq!(row[5], 0.0);
        assert!((sum - want.iter().sum::<f32>()).abs() < 1e-5);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // The AVX2 copy, which the dispatcher skips on AVX-512 machines.
            let mut avx2: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.37).collect();
            avx2[5] = f32::NEG_INFINITY;
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let s2 = unsafe { exp_shifted_sum_avx2(&mut avx2, 0.5) };
            assert!((s2 - portable_sum).abs() < 1e-5);
            for (a, b) in avx2.iter().zip(&portable) {
                assert!((a - b).abs() <= 4e-7 * b.max(1e-30), "{a} vs {b}");
            }
        }
        assert_eq!(
            row_max(&[1.0, -2.0, 7.5, 3.0, 0.0, 0.0, 0.0, 0.0, 9.0]),
            9.0
        );
        assert_eq!(row_max(&[]), f32::NEG_INFINITY);
    }

    /// Wrong slice lengths or a map of other sizes are typed errors, not panics.
    #[test]
    fn mismatched_inputs_are_refused_by_name() {
        use crate::mask::Causal;
        let dims = HostDims {
            batch: 1,
            heads: 2,
            seq_q: 4,
            seq_k: 4,
            head_dim: 2,
            v_dim: 2,
        };
        let map = TileMap::build(&Causal, 1, 2, 4, 4, 2, 2).unwrap();
        let x = vec![0.5f32; 16];
        assert!(attention_host(&x, &x, &x, dims, &Causal, &map, 1.0).is_ok());
        let err = attention_host(&x[..15], &x, &x, dims, &Causal, &map, 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                AttnError::Length {
                    field: "q",
                    expected: 16,
                    got: 15
                }
            ),
            "{err}"
        );
        let other = TileMap::build(&Causal, 1, 2, 5, 5, 2, 2).unwrap();
        let err = attention_host(&x, &x, &x, dims, &Causal, &other, 1.0).unwrap_err();
        assert!(
            err.to_string().contains("query positions of the tile map"),
            "{err}"
        );
    }
}
