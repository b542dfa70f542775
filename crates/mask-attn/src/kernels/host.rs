//! Masked attention on host slices: the CPU fast path (inference).
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
//! - It is forward-only. Under `Autodiff` there is no gradient through host memory, so
//!   [`crate::MaskedSelfAttention`] trains through the block-sparse kernel, as with `Fused`;
//!   calling [`attention`] directly on an autodiff tensor returns a value with no gradient path.
//! - No dropout (inference).
//! - The `exp` is accurate to ~2 ulp over the range that matters (`x <= 0` after the max shift);
//!   results match [`super::reference`] to ~1e-6, tested in `tests/kernels.rs`.

// `gemm` has only a raw-pointer API, and the AVX2 copy of the exp loop needs a
// `#[target_feature]` function: the workspace's one exception to `unsafe_code = "deny"`.
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

/// Masked attention on host memory (forward only; see the module documentation).
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
    let HostDims {
        batch,
        heads,
        seq_q,
        seq_k,
        head_dim: d,
        v_dim: dv,
    } = dims;
    for (field, got, expected) in [
        ("q", q.len(), batch * heads * seq_q * d),
        ("k", k.len(), batch * heads * seq_k * d),
        ("v", v.len(), batch * heads * seq_k * dv),
    ] {
        if got != expected {
            return Err(AttnError::Length {
                field,
                expected,
                got,
            });
        }
    }
    let (map_batch, map_q, map_k) = map.sizes();
    let map_heads_ok = map.heads() == 1 || map.heads() == heads;
    for (what, expected, got) in [
        ("batch of the tile map", batch, map_batch),
        ("query positions of the tile map", seq_q, map_q),
        ("key positions of the tile map", seq_k, map_k),
        (
            "heads of the tile map",
            heads,
            if map_heads_ok { heads } else { map.heads() },
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
    let mut out = vec![0.0f32; batch * heads * seq_q * dv];
    if out.is_empty() {
        return Ok(out);
    }
    let tile_rows = map.q_range(0).len().max(1);
    let hm = map.heads();
    // Element masks of partial tiles, built on first use and shared by every head when the mask
    // is head-independent (one `allows` call per element per example, not per head).
    let tile_bits: Vec<OnceLock<Vec<u64>>> = (0..batch * hm * map.n_q_tiles() * map.n_k_tiles())
        .map(|_| OnceLock::new())
        .collect();
    out.par_chunks_mut(seq_q * dv)
        .enumerate()
        .for_each(|(bh, out_head)| {
            let (b, h) = (bh / heads, bh % heads);
            let mh = if hm == 1 { 0 } else { h };
            let q_head = &q[bh * seq_q * d..(bh + 1) * seq_q * d];
            let k_head = &k[bh * seq_k * d..(bh + 1) * seq_k * d];
            let v_head = &v[bh * seq_k * dv..(bh + 1) * seq_k * dv];
            out_head
                .par_chunks_mut(tile_rows * dv)
                .enumerate()
                .for_each(|(qt, acc)| {
                    let qr = map.q_range(qt);
                    let runs = map.key_runs(|kt| map.kind(b, mh, qt, kt), MAX_RUN);
                    let task = Task {
                        b,
                        h,
                        mh,
                        qt,
                        qr,
                        d,
                        dv,
                        scale,
                        mask,
                        map,
                        tile_bits: &tile_bits,
                    };
                    task.run(q_head, k_head, v_head, &runs, acc);
                });
        });
    Ok(out)
}

/// Widest run of key tiles merged into one product: the score block `[Tq, W]` of 128 x 512
/// floats (256 KiB) stays in L2 between the two products and the `exp` pass. Measured on the
/// dense L = 2048 case (2-core dev machine, 2026-11-30): 256 keys 429 ms, 512 keys 380 ms, a
/// whole 2048-key row 430 ms.
const MAX_RUN: usize = 512;

/// One (batch element, head, query tile).
struct Task<'a> {
    b: usize,
    h: usize,
    /// Head index in the tile map (0 for head-independent masks).
    mh: usize,
    qt: usize,
    qr: Range<usize>,
    d: usize,
    dv: usize,
    scale: f32,
    mask: &'a dyn AttnMask,
    map: &'a TileMap,
    /// Per tile of the map `[B, Hm, n_qt, n_kt]`: its element mask, rows of `ceil(w / 64)`
    /// words, bit set = may attend.
    tile_bits: &'a [OnceLock<Vec<u64>>],
}

impl Task<'_> {
    /// Accumulates into `acc [Tq, Dv]` (zeroed) and normalises it.
    fn run(
        &self,
        q_head: &[f32],
        k_head: &[f32],
        v_head: &[f32],
        runs: &[(Range<usize>, TileKind)],
        acc: &mut [f32],
    ) {
        let (d, dv) = (self.d, self.dv);
        let tq = self.qr.len();
        let q_i = &q_head[self.qr.start * d..self.qr.end * d]; // [Tq, D]
        let mut m = vec![f32::NEG_INFINITY; tq];
        let mut l = vec![0.0f32; tq];
        let max_w = runs.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        let mut s = vec![0.0f32; tq * max_w]; // [Tq, W]
        for (kr, kind) in runs {
            let w = kr.len();
            let s = &mut s[..tq * w];
            let k_j = &k_head[kr.start * d..kr.end * d]; // [W, D]
            let v_j = &v_head[kr.start * dv..kr.end * dv]; // [W, Dv]
                                                           // s = scale * q_i k_j^T.
                                                           // SAFETY: the pointers address `s` [Tq, W], `q_i` [Tq, D] and `k_j` [W, D] (read as
                                                           // [D, W] with column stride D), all within their slices, and `s` is not aliased.
            unsafe {
                gemm(
                    tq,
                    w,
                    d,
                    s.as_mut_ptr(),
                    1,
                    w as isize,
                    false,
                    q_i.as_ptr(),
                    1,
                    d as isize,
                    k_j.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    self.scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            if *kind == TileKind::Partial {
                self.apply_partial_masks(s, w, kr);
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
            }
            // acc += p v_j
            // SAFETY: `acc` [Tq, Dv], `s` [Tq, W] (now p) and `v_j` [W, Dv] are row-major within
            // their slices; `acc` is not aliased.
            unsafe {
                gemm(
                    tq,
                    dv,
                    w,
                    acc.as_mut_ptr(),
                    1,
                    dv as isize,
                    true,
                    s.as_ptr(),
                    1,
                    w as isize,
                    v_j.as_ptr(),
                    1,
                    dv as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        for (row, li) in acc.chunks_exact_mut(dv).zip(&l) {
            // A row that saw no visible key has l = 0 and acc = 0: output 0.
            let inv = if *li > 0.0 { 1.0 / li } else { 0.0 };
            row.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

impl Task<'_> {
    /// Sets the masked scores of every tile of the partial run `kr` (columns of `s [Tq, W]`)
    /// to `-inf`, building each tile's bits on first use.
    fn apply_partial_masks(&self, s: &mut [f32], w: usize, kr: &Range<usize>) {
        let tile_k = self.map.k_range(0).len();
        let n_kt = self.map.n_k_tiles();
        for kt in kr.start / tile_k..kr.end.div_ceil(tile_k) {
            let cols = self.map.k_range(kt);
            let words = cols.len().div_ceil(64);
            let at = ((self.b * self.map.heads() + self.mh) * self.map.n_q_tiles() + self.qt)
                * n_kt
                + kt;
            let bits = self.tile_bits[at].get_or_init(|| {
                let mut bits = vec![0u64; self.qr.len() * words];
                for (i, qi) in self.qr.clone().enumerate() {
                    for (j, ki) in cols.clone().enumerate() {
                        if self.mask.allows(self.b, self.h, qi, ki) {
                            bits[i * words + j / 64] |= 1 << (j % 64);
                        }
                    }
                }
                bits
            });
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

/// Maximum of a row (`-inf` for an empty or fully masked row).
fn row_max(row: &[f32]) -> f32 {
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
fn exp_shifted_sum(row: &mut [f32], shift: f32) -> f32 {
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
pub(crate) fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
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
