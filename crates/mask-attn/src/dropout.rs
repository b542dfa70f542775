//! Dropout (Srivastava et al. 2014) with counter-based masks: no global random state.
//!
//! burn's `Dropout` samples every mask from the backend's random generator, which is one
//! process-wide stream: runs training on threads of one process draw each other's masks, and
//! the generic sampler (ChaCha, one distribution call per element) cost ~9% of a training step
//! here (docs/benchmarks.md). This module draws masks the way a counter-based generator does
//! (Salmon et al. 2011, the idea behind Philox in cuRAND and JAX): the keep decision of element
//! `i` in the `c`-th dropout call under key `k` is a pure function of `(k, c, i)`.
//!
//! - The key is the calling thread's: [`dropout_scope`] sets it (the learner opens one per
//!   training step, from the run's seed and the step) and numbers the calls from 0; the previous
//!   key and count come back when the scope ends. Outside any scope the key is 0 and the count
//!   runs on for the thread's lifetime.
//! - Call `c` gets the sub-key `mix64(k ^ mix64(c + C))`; element `i` reads half `i mod 2` of
//!   `mix64(sub_key + (i / 2 + 1) * φ)` (SplitMix64 at position `i / 2`) as a 32-bit draw and keeps
//!   the element iff the draw is `< round(keep * 2^32)`, keep = 1 - prob.
//! - Kept elements are scaled by `1 / keep`, zeroed ones are 0: one multiply by a host-built
//!   tensor (burn multiplies twice), whose gradient is the same mask.
//!
//! The masks of a call therefore depend neither on other threads nor on how many threads build
//! them (the host loop is split over rayon in chunks for large tensors, each chunk computing its
//! own positions). Dropout acts only when autodiff is on (training), as burn's does.

// The vectorised mask window is a `#[target_feature]` function with AVX-512 loads and stores,
// called after a CPU feature check: one of the exceptions to `unsafe_code = "deny"` that the
// workspace's Cargo.toml lists.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::marker::PhantomData;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use mask_core::mix64;
use rayon::prelude::*;

use crate::error::AttnError;

/// Offset of the call counter before mixing (any odd constant; the first digits of `sqrt(2)`).
const CALL_OFFSET: u64 = 0x6a09_e667_f3bc_c909;
/// SplitMix64's increment `2^64 / φ`.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// Elements per parallel chunk (even, so a chunk never splits a 64-bit draw).
const CHUNK: usize = 1 << 15;

thread_local! {
    /// `(key, calls so far)` of the calling thread's dropout stream.
    static STREAM: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Keys the calling thread's dropout masks until dropped (see the module docs). Not `Send`: it
/// restores the thread it was opened on.
#[derive(Debug)]
#[must_use = "the key applies only while the scope is alive"]
pub struct DropoutScope {
    previous: (u64, u64),
    _not_send: PhantomData<*const ()>,
}

/// Opens a dropout scope with `key` on the calling thread, numbering its dropout calls from 0.
pub fn dropout_scope(key: u64) -> DropoutScope {
    DropoutScope {
        previous: STREAM.with(|s| s.replace((key, 0))),
        _not_send: PhantomData,
    }
}

impl Drop for DropoutScope {
    fn drop(&mut self) {
        STREAM.with(|s| s.set(self.previous));
    }
}

/// The sub-key of the next dropout call on this thread (advances the count).
pub(crate) fn next_call_key() -> u64 {
    STREAM.with(|s| {
        let (key, calls) = s.get();
        s.set((key, calls.wrapping_add(1)));
        mix64(key ^ mix64(calls.wrapping_add(CALL_OFFSET)))
    })
}

/// 32-bit keep threshold of keep probability `keep` in `(0, 1]`.
fn threshold(keep: f64) -> u64 {
    (keep * 4_294_967_296.0).round() as u64
}

/// Whether element `index` of the call keyed `call_key` is kept: the definition, one element at
/// a time (the reference [`keep_mask`] is tested against).
pub fn keeps(call_key: u64, index: usize, keep: f64) -> bool {
    let d = draw(call_key, (index / 2) as u64);
    let half = if index.is_multiple_of(2) {
        d as u32
    } else {
        (d >> 32) as u32
    };
    (half as u64) < threshold(keep)
}

/// The `n` mask values of the call keyed `call_key`: `scale` where [`keeps`] and `zero`
/// elsewhere.
pub fn keep_mask<T: Copy + Send + Sync>(
    call_key: u64,
    n: usize,
    keep: f64,
    scale: T,
    zero: T,
) -> Vec<T> {
    let threshold = threshold(keep);
    let fill = |(chunk, out): (usize, &mut [T])| {
        let first_pair = (chunk * CHUNK / 2) as u64;
        for (j, pair) in out.chunks_mut(2).enumerate() {
            let d = draw(call_key, first_pair + j as u64);
            pair[0] = if ((d as u32) as u64) < threshold {
                scale
            } else {
                zero
            };
            if let Some(second) = pair.get_mut(1) {
                *second = if (d >> 32) < threshold { scale } else { zero };
            }
        }
    };
    let mut mask = vec![zero; n];
    if n > CHUNK {
        mask.par_chunks_mut(CHUNK).enumerate().for_each(fill);
    } else {
        fill((0, &mut mask));
    }
    mask
}

/// Multiplies `values[j]` by `1 / keep` where element `first + j` of the call keyed `call_key`
/// is kept ([`keeps`]) and by 0 where it is not: a window of [`keep_mask`]'s mask applied in
/// place (the attention kernels use it on one row of weights at a time).
pub(crate) fn apply_keep_mask(call_key: u64, first: usize, keep: f64, values: &mut [f32]) {
    let threshold = threshold(keep);
    let scale = (1.0 / keep) as f32;
    let pick = |half: u64| if half < threshold { scale } else { 0.0 };
    // Element `first + j` reads half `(first + j) mod 2` of draw `(first + j) / 2`.
    let odd_start = first & 1 == 1 && !values.is_empty();
    let (head, body) = values.split_at_mut(usize::from(odd_start));
    if let [x] = head {
        *x *= pick(draw(call_key, (first / 2) as u64) >> 32); // the high half of a draw
    }
    let pair0 = first.div_ceil(2) as u64;
    let (pairs, tail) = body.split_at_mut(body.len() & !1);
    apply_to_pairs(call_key, pair0, threshold, scale, pairs);
    if let [x] = tail {
        *x *= pick(draw(call_key, pair0 + (pairs.len() / 2) as u64) & 0xffff_ffff);
    }
}

/// Draw `pair` of the call keyed `call_key`: SplitMix64 at position `pair`.
#[inline(always)]
fn draw(call_key: u64, pair: u64) -> u64 {
    mix64(call_key.wrapping_add(pair.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// [`apply_keep_mask`] on `values` (even length) starting at draw `pair0`: element `2 j` reads
/// the low half of draw `pair0 + j`, element `2 j + 1` its high half.
fn apply_to_pairs(call_key: u64, pair0: u64, threshold: u64, scale: f32, values: &mut [f32]) {
    debug_assert!(values.len().is_multiple_of(2));
    #[cfg(target_arch = "x86_64")]
    if let Ok(threshold) = u32::try_from(threshold) {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            let whole = values.len() / 16 * 16;
            let (vector, rest) = values.split_at_mut(whole);
            // SAFETY: the CPU has the features this function is compiled for.
            unsafe { apply_to_pairs_avx512(call_key, pair0, threshold, scale, vector) };
            let done = (whole / 2) as u64;
            apply_to_pairs_portable(call_key, pair0 + done, threshold.into(), scale, rest);
            return;
        }
    }
    apply_to_pairs_portable(call_key, pair0, threshold, scale, values);
}

/// The definition, one 64-bit draw per pair of elements (the reference of the vector copy).
fn apply_to_pairs_portable(
    call_key: u64,
    pair0: u64,
    threshold: u64,
    scale: f32,
    values: &mut [f32],
) {
    let pick = |half: u64| if half < threshold { scale } else { 0.0 };
    for (j, pair) in values.chunks_exact_mut(2).enumerate() {
        let d = draw(call_key, pair0 + j as u64);
        pair[0] *= pick(d & 0xffff_ffff);
        pair[1] *= pick(d >> 32);
    }
}

/// Eight draws (sixteen elements) per step: SplitMix64 in 64-bit lanes (AVX-512 DQ's 64-bit
/// multiply), then one unsigned 32-bit comparison of all sixteen halves against the threshold
/// (on little-endian x86 the low half of lane `j` is 32-bit lane `2 j`: element order) and a
/// multiply by `scale` or `+0.0`, as the scalar loop does (so `-0.0`, NaN and infinities come
/// out the same bit for bit). `values.len()` is a multiple of 16.
///
/// Measured on a `bert-small-peer` training step (docs/benchmarks.md): the scalar loop was ~4%
/// of the step, one 64-bit multiply chain per two weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn apply_to_pairs_avx512(
    call_key: u64,
    pair0: u64,
    threshold: u32,
    scale: f32,
    values: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(values.len().is_multiple_of(16));
    let splat = |x: u64| _mm512_set1_epi64(x as i64);
    let (golden, key, eight) = (splat(GOLDEN), splat(call_key), splat(8));
    let (m1, m2) = (splat(0xbf58_476d_1ce4_e5b9), splat(0x94d0_49bb_1331_11eb));
    let limit = _mm512_set1_epi32(threshold as i32);
    let scale = _mm512_set1_ps(scale);
    // Positions `pair + 1` of the eight draws of the next step.
    let mut next = _mm512_add_epi64(splat(pair0), _mm512_set_epi64(8, 7, 6, 5, 4, 3, 2, 1));
    for chunk in values.chunks_exact_mut(16) {
        let mut z = _mm512_add_epi64(key, _mm512_mullo_epi64(next, golden));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), m2);
        z = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
        let kept = _mm512_cmplt_epu32_mask(z, limit);
        let factor = _mm512_maskz_mov_ps(kept, scale);
        // SAFETY: `chunk` holds 16 `f32`s; unaligned loads and stores.
        unsafe {
            let v = _mm512_loadu_ps(chunk.as_ptr());
            _mm512_storeu_ps(chunk.as_mut_ptr(), _mm512_mul_ps(v, factor));
        }
        next = _mm512_add_epi64(next, eight);
    }
}

/// [`keep_mask`]`(call_key, n, keep, 1 / keep, 0.0)` for `f32`, through [`apply_keep_mask`]'s
/// vectorised window on a buffer of ones (the same values bit for bit).
fn keep_mask_f32(call_key: u64, n: usize, keep: f64) -> Vec<f32> {
    let mut mask = vec![1.0f32; n];
    let fill =
        |(chunk, out): (usize, &mut [f32])| apply_keep_mask(call_key, chunk * CHUNK, keep, out);
    if n > CHUNK {
        mask.par_chunks_mut(CHUNK).enumerate().for_each(fill);
    } else {
        fill((0, &mut mask));
    }
    mask
}

/// Zeroes each element with probability `prob` and scales the rest by `1 / (1 - prob)`, while
/// autodiff is on; the identity otherwise. Masks come from the calling thread's dropout stream
/// (module docs). The record is burn `Dropout`'s (one `prob`), so checkpoints carry over.
#[derive(Module, Clone, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1)`.
    pub prob: f64,
}

impl Dropout {
    /// Dropout with probability `prob`, refused outside `[0, 1)`.
    pub fn new(prob: f64) -> Result<Self, AttnError> {
        if !(0.0..1.0).contains(&prob) {
            return Err(AttnError::InvalidValue {
                field: "dropout",
                value: prob.to_string(),
                expected: "a probability in [0, 1)",
            });
        }
        Ok(Self { prob })
    }

    /// Applies dropout (training only).
    ///
    /// # Shapes
    /// - `input`: any shape, returned unchanged in shape
    pub fn forward<B: Backend, const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let device = input.device();
        if self.prob == 0.0 || !B::ad_enabled(&device) {
            return input;
        }
        let (keep, dtype, shape) = (1.0 - self.prob, input.dtype(), input.shape());
        let (key, n) = (next_call_key(), shape.num_elements());
        // Built in the input's float type, so an f64 model gets an exact 1 / keep.
        let data = match dtype {
            DType::F64 => TensorData::new(keep_mask(key, n, keep, 1.0 / keep, 0.0), shape),
            // `1.0 * (1 / keep)` and `1.0 * 0.0` are `keep_mask`'s values exactly, built by the
            // vectorised window where the CPU has one.
            _ => TensorData::new(keep_mask_f32(key, n, keep), shape),
        };
        input * Tensor::<B, D>::from_data(data, (&device, dtype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = NdArray<f32>;
    type AB = Autodiff<NdArray<f32>>;

    /// Binomial tolerance: 5 standard deviations of a count of `n` trials at rate `p`.
    fn five_sigma(n: usize, p: f64) -> f64 {
        5.0 * (n as f64 * p * (1.0 - p)).sqrt()
    }

    /// The chunked, parallel mask equals the one-element definition everywhere, including
    /// across chunk boundaries and an odd tail; its rate and the pairing of the two halves of a
    /// draw are those of independent Bernoulli(keep) draws.
    #[test]
    fn fast_mask_matches_the_definition_and_its_statistics() {
        let (key, keep) = (0x1234_5678_9abc_def0, 0.9);
        let n = 3 * CHUNK + 5;
        let mask = keep_mask(key, n, keep, 2.0f32, 0.0);
        for (i, &m) in mask.iter().enumerate() {
            assert_eq!(m == 2.0, keeps(key, i, keep), "element {i}");
            assert!(m == 2.0 || m == 0.0);
        }
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64;
        assert!(
            (kept - n as f64 * keep).abs() < five_sigma(n, keep),
            "{kept}"
        );
        // Both halves of one 64-bit draw kept: keep^2 if they are independent.
        let pairs = n / 2;
        let both = (0..pairs)
            .filter(|&j| mask[2 * j] > 0.0 && mask[2 * j + 1] > 0.0)
            .count() as f64;
        let p2 = keep * keep;
        assert!(
            (both - pairs as f64 * p2).abs() < five_sigma(pairs, p2),
            "{both}"
        );
        // Neighbouring draws: the same for elements 2j+1 and 2j+2.
        let across = (0..pairs - 1)
            .filter(|&j| mask[2 * j + 1] > 0.0 && mask[2 * j + 2] > 0.0)
            .count() as f64;
        assert!((across - (pairs - 1) as f64 * p2).abs() < five_sigma(pairs, p2));
    }

    /// A window of the mask applied in place equals the one-element definition for every start
    /// parity and length (the attention kernels apply it one row of weights at a time).
    #[test]
    fn windows_of_the_mask_match_the_definition() {
        let (key, keep) = (0x0fed_cba9_8765_4321, 0.7);
        let scale = (1.0 / keep) as f32;
        for first in [0usize, 1, 2, 7, 64, 1001] {
            for len in [0usize, 1, 2, 3, 8, 33] {
                let mut row: Vec<f32> = (0..len).map(|j| j as f32 + 0.5).collect();
                apply_keep_mask(key, first, keep, &mut row);
                for (j, &x) in row.iter().enumerate() {
                    let want = if keeps(key, first + j, keep) {
                        (j as f32 + 0.5) * scale
                    } else {
                        0.0
                    };
                    assert_eq!(x, want, "first {first} len {len} element {j}");
                }
            }
        }
    }

    /// The vectorised window (AVX-512 where the CPU has it) against the scalar definition, for
    /// long rows, every start parity and rates down to keep = 1 (whose threshold 2^32 does not
    /// fit 32 bits and takes the scalar path); and the f32 mask built through it equals
    /// `keep_mask`'s bit for bit across chunk boundaries.
    #[test]
    fn the_vector_window_and_f32_mask_match_the_definition() {
        let key = 0x0123_4567_89ab_cdef;
        for keep in [0.9, 0.5, 0.013, 1.0 - 1e-12, 1.0] {
            let scale = (1.0 / keep) as f32;
            for first in [0usize, 1, 15, 16, 17, 1 << 20] {
                for len in [16usize, 31, 32, 33, 47, 200, 1025] {
                    let row: Vec<f32> = (0..len).map(|j| j as f32 - 100.5).collect();
                    let mut got = row.clone();
                    apply_keep_mask(key, first, keep, &mut got);
                    for (j, (&g, &x)) in got.iter().zip(&row).enumerate() {
                        let want = x * if keeps(key, first + j, keep) {
                            scale
                        } else {
                            0.0
                        };
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "keep {keep} first {first} len {len} element {j}"
                        );
                    }
                }
            }
            let n = 2 * CHUNK + 19;
            let fast = keep_mask_f32(key, n, keep);
            let plain = keep_mask(key, n, keep, scale, 0.0f32);
            assert!(
                fast.iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "keep {keep}"
            );
        }
    }

    /// Thresholds: keep = 1/2 keeps exactly the draws below 2^31.
    #[test]
    fn threshold_is_keep_times_two_to_the_32() {
        assert_eq!(threshold(0.5), 1 << 31);
        assert_eq!(threshold(0.9), 3_865_470_566);
        let key = 77;
        for i in 0..64usize {
            let draw = mix64(key + ((i / 2) as u64 + 1).wrapping_mul(GOLDEN));
            let half = if i.is_multiple_of(2) {
                draw as u32
            } else {
                (draw >> 32) as u32
            };
            assert_eq!(keeps(key, i, 0.5), half < (1 << 31), "{i}");
        }
    }

    fn masks_of(d: &Dropout, calls: usize) -> Vec<Vec<f32>> {
        let device = Default::default();
        (0..calls)
            .map(|_| {
                let x = Tensor::<AB, 2>::ones([8, 16], (&device, DType::F32));
                d.forward(x).into_data().to_vec().unwrap()
            })
            .collect()
    }

    /// A scope's masks depend on its key and the call's number only: the same key repeats them
    /// (also on another thread), successive calls differ, and ending a scope resumes the outer
    /// stream where it was.
    #[test]
    fn scopes_key_the_masks_per_thread() {
        let d = Dropout::new(0.5).unwrap();
        let first = {
            let _s = dropout_scope(42);
            masks_of(&d, 3)
        };
        assert_ne!(first[0], first[1]);
        assert_ne!(first[1], first[2]);
        for m in &first {
            assert!(m.iter().all(|&v| v == 0.0 || v == 2.0));
        }
        let again = {
            let _s = dropout_scope(42);
            masks_of(&d, 3)
        };
        assert_eq!(first, again);
        let other = {
            let _s = dropout_scope(43);
            masks_of(&d, 1)
        };
        assert_ne!(first[0], other[0]);
        // Another thread, same key: the same masks, whatever this thread does meanwhile.
        let d2 = d.clone();
        let handle = std::thread::spawn(move || {
            let _s = dropout_scope(42);
            masks_of(&d2, 3)
        });
        let _noise = masks_of(&d, 5);
        assert_eq!(handle.join().unwrap(), first);
        // Nesting: the outer scope continues with its third call after an inner scope.
        let _outer = dropout_scope(42);
        let two = masks_of(&d, 2);
        {
            let _inner = dropout_scope(7);
            masks_of(&d, 4);
        }
        let third = masks_of(&d, 1);
        assert_eq!(two, first[..2].to_vec());
        assert_eq!(third[0], first[2]);
    }

    /// Under autodiff the output is input times the mask and so is the gradient; without
    /// autodiff, or at probability 0, dropout is the identity.
    #[test]
    fn training_only_and_gradient_is_the_mask() {
        let device = Default::default();
        let d = Dropout::new(0.25).unwrap();
        let values: Vec<f32> = (0..40).map(|i| i as f32 - 13.5).collect();
        let f32s = |v: &[f32]| TensorData::new(v.to_vec(), [v.len()]);
        let x = Tensor::<AB, 1>::from_data(f32s(&values), (&device, DType::F32)).require_grad();
        let _s = dropout_scope(5);
        let y = d.forward(x.clone());
        let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
        let grads = y.sum().backward();
        let g: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        // The first call of scope 5: its mask by the definition.
        let call_key = mix64(5 ^ mix64(CALL_OFFSET));
        for i in 0..40 {
            let m = if keeps(call_key, i, 0.75) {
                1.0 / 0.75
            } else {
                0.0
            };
            assert!((g[i] - m).abs() < 1e-6, "{i}: {} vs {m}", g[i]);
            assert!((out[i] - values[i] * m).abs() < 1e-5, "{i}");
        }
        let plain = Tensor::<B, 1>::from_data(f32s(&values), (&device, DType::F32));
        let same: Vec<f32> = d.forward(plain).into_data().to_vec().unwrap();
        assert_eq!(same, values);
        let none = Dropout::new(0.0).unwrap();
        let kept: Vec<f32> = none
            .forward(Tensor::<AB, 1>::from_data(
                f32s(&values),
                (&device, DType::F32),
            ))
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(kept, values);
    }

    /// A float64 model gets an exact `1 / keep`; probabilities outside [0, 1) are refused by
    /// name.
    #[test]
    fn float64_scale_and_refusals() {
        let device = Default::default();
        let d = Dropout::new(0.3).unwrap();
        let _s = dropout_scope(9);
        // burn 0.21 keys a device's default float type by device, not backend: NdArray<f32> and
        // NdArray<f64> share one, so every tensor of these tests names its type.
        let y: Vec<f64> = d
            .forward(Tensor::<Autodiff<NdArray<f64>>, 1>::ones(
                [64],
                (&device, DType::F64),
            ))
            .into_data()
            .to_vec()
            .unwrap();
        assert!(y.contains(&0.0));
        assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / 0.7), "{y:?}");
        for bad in [1.0, -0.1, f64::NAN] {
            match Dropout::new(bad) {
                Err(AttnError::InvalidValue { field, .. }) => assert_eq!(field, "dropout"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
