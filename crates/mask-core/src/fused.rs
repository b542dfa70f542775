//! The fused Bernoulli row: [`BernoulliSelector`](crate::selection::BernoulliSelector) and
//! [`Corruption`] of one row in a few AVX-512 passes, giving the same masks as the generic path
//! (select into spans, then corrupt span by span), bit for bit.
//!
//! # Why the masks are the same
//! wyrand's state only ever moves by a constant `C` ([`MaskRng::next_u64`]), so draw `j` of a
//! stream is a pure function of the stream's state `s` and `j`: `wy(s + j C)`. Eight draws are
//! computed at once, in 64-bit lanes (the 64x64->128 product from four 32x32->64 ones).
//!
//! - Selection takes draws `1..=ceil(n / 2)`: position `2i` the low half of draw `i + 1`,
//!   `2i + 1` its high half, an odd last position the high half of its own draw (`next_u32`).
//!   Sixteen positions per step give a 16-bit mask: `half < t` and not special.
//! - Corruption takes the next draws in order of the chosen positions: chosen rank `k` reads the
//!   high half of corruption draw `k + r_k`, where `r_k` is the number of random replacements
//!   before it (each takes one more draw for its id). Every corruption draw is classified at
//!   once (mask token / random token / keep); a walk then visits only the random draws, each
//!   shifting the ranks after it by one. Rows have a handful of random replacements, so the walk
//!   is a few steps instead of a branch per chosen position; when a row's draws fit one 64-bit
//!   word (a BERT row of 128 has ~20), it runs in registers.
//! - A last pass writes `input_ids` and `labels` sixteen positions at a time with blends; the
//!   rank-ordered "mask token" bits are spread onto positions with `pdep`, and the few random
//!   ids are written one by one.
//!
//! # When it runs
//! On x86-64 with AVX-512 F/BW/VL, BMI1/2 and POPCNT, for plain Bernoulli selection with
//! `predict_prob = 1` (the default); otherwise [`mask_row`] returns `None` and the caller takes
//! the generic path. `tests` compares the two on random rows, lengths, rates and splits.
//!
//! # Trade-off
//! It is the only `unsafe` in mask-core (intrinsics behind a CPU check, masked loads and
//! stores); the workspace's Cargo.toml lists it. It buys speed nobody's training needs (masking
//! is far below 1% of a step): the issue that asked for it measures mask generation against
//! HuggingFace's collator (docs/benchmarks.md).
#![allow(unsafe_code)]
// Off x86-64 only the dispatch remains (it always declines).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::corruption::Corruption;
use crate::rng::MaskRng;

/// Reusable buffers of the fused row (one per masking scratch).
#[derive(Debug, Default, Clone)]
pub(crate) struct FusedScratch {
    /// Bit `p`: position `p` is chosen.
    hits: Vec<u64>,
    /// Number of corruption draws classified so far (a multiple of 8).
    drawn: usize,
    /// Bit `j`: corruption draw `j`'s high half says "mask token".
    mask_draws: Vec<u64>,
    /// Bit `j`: corruption draw `j`'s high half says "random token".
    random_draws: Vec<u64>,
    /// Bit `k`: chosen rank `k` becomes the mask token.
    masked: Vec<u64>,
    /// `(rank, id)` of each random replacement.
    randoms: Vec<(u32, u32)>,
}

impl FusedScratch {
    /// Whether the fused row has run with these buffers (tests: the dispatch took it).
    #[cfg(test)]
    pub(crate) fn ran(&self) -> bool {
        !self.hits.is_empty()
    }
}

/// Whether this CPU runs the fused row.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Some id is not below the vocabulary size (the caller finds which, for its error).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfVocab;

/// Selects with threshold `t_select` ([`crate::rng::threshold_u32`] of the rate) from `rng`
/// and corrupts, writing every element of `out_ids` and `out_labels`; returns the number of
/// labels set, or [`OutOfVocab`] (after writing) when an id is `>= vocab_size`. `None`
/// (nothing written) when the fused row does not apply here: no AVX-512, or
/// `predict_prob < 1`.
///
/// # Panics
/// If the slices' lengths differ (the caller has checked them).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mask_row(
    ids: &[u32],
    special: &[bool],
    vocab_size: u32,
    rng: &MaskRng,
    t_select: u64,
    corruption: &Corruption,
    out_ids: &mut [u32],
    out_labels: &mut [i32],
    scratch: &mut FusedScratch,
) -> Option<Result<usize, OutOfVocab>> {
    let n = ids.len();
    assert!(special.len() == n && out_ids.len() == n && out_labels.len() == n);
    if corruption.t_predict().is_some() || !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` checked every feature `avx512::mask_row` is compiled for.
        Some(unsafe {
            avx512::mask_row(
                ids,
                special,
                vocab_size,
                rng.state(),
                t_select,
                corruption,
                out_ids,
                out_labels,
                scratch,
            )
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (vocab_size, rng, t_select, scratch);
        None
    }
}

/// `len` (1..=64) bits of `words` from bit `start`.
#[inline(always)]
fn get_bits(words: &[u64], start: usize, len: usize) -> u64 {
    let (i, o) = (start / 64, start % 64);
    let mut v = words[i] >> o;
    if o != 0 && o + len > 64 {
        v |= words[i + 1] << (64 - o);
    }
    if len == 64 {
        v
    } else {
        v & ((1u64 << len) - 1)
    }
}

/// ORs the `len` (1..=64) low bits of `v` into `words` from bit `start`.
#[inline(always)]
fn or_bits(words: &mut [u64], start: usize, len: usize, v: u64) {
    let (i, o) = (start / 64, start % 64);
    words[i] |= v << o;
    if o != 0 && o + len > 64 {
        words[i + 1] |= v >> (64 - o);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{get_bits, or_bits, FusedScratch, OutOfVocab};
    use crate::corruption::Corruption;
    use crate::rng::{wyrand, WY_INCREMENT as C, WY_XOR};

    const LOW32: u64 = 0xffff_ffff;

    /// `wy(s)` in each 64-bit lane: the high and low halves of `s * (s ^ WY_XOR)` XORed, the
    /// 128-bit product assembled from four 32x32->64 products.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn wyrand8(s: __m512i) -> __m512i {
        let low32 = _mm512_set1_epi64(LOW32 as i64);
        let b = _mm512_xor_si512(s, _mm512_set1_epi64(WY_XOR as i64));
        let (ah, bh) = (_mm512_srli_epi64(s, 32), _mm512_srli_epi64(b, 32));
        let ll = _mm512_mul_epu32(s, b);
        let lh = _mm512_mul_epu32(s, bh);
        let hl = _mm512_mul_epu32(ah, b);
        let hh = _mm512_mul_epu32(ah, bh);
        // Bits 32..96 of the product; below 3 * 2^32, so no lane overflows.
        let mid = _mm512_add_epi64(
            _mm512_add_epi64(_mm512_srli_epi64(ll, 32), _mm512_and_si512(lh, low32)),
            _mm512_and_si512(hl, low32),
        );
        let hi = _mm512_add_epi64(
            _mm512_add_epi64(hh, _mm512_srli_epi64(lh, 32)),
            _mm512_add_epi64(_mm512_srli_epi64(hl, 32), _mm512_srli_epi64(mid, 32)),
        );
        let lo = _mm512_or_si512(_mm512_slli_epi64(mid, 32), _mm512_and_si512(ll, low32));
        _mm512_xor_si512(hi, lo)
    }

    /// `C, 2C, ..., 8C`: lane `i` of [`states8`]'s offsets.
    const OFFSETS: [u64; 8] = {
        let mut o = [0u64; 8];
        let mut i = 0;
        while i < 8 {
            o[i] = C.wrapping_mul(i as u64 + 1);
            i += 1;
        }
        o
    };

    /// States `s + C, s + 2C, ..., s + 8C`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn states8(s: u64) -> __m512i {
        // SAFETY: OFFSETS is 64 readable bytes.
        let offsets = unsafe { _mm512_loadu_si512(OFFSETS.as_ptr().cast()) };
        _mm512_add_epi64(_mm512_set1_epi64(s as i64), offsets)
    }

    /// Selection: sets `hits` (zeroed, `n.div_ceil(64)` words) and returns the state after the
    /// last selection draw.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn select(special: &[bool], s0: u64, t: u64, hits: &mut [u64]) -> u64 {
        let n = special.len();
        if t == 0 {
            // Nothing is chosen; the generic path draws nothing either.
            return s0;
        }
        // `half < t` is `half <= t - 1`, and t - 1 < 2^32 fits the 32-bit lanes.
        let last = _mm512_set1_epi32((t - 1) as u32 as i32);
        let chunks = n / 16;
        let (mut states, step) = (states8(s0), _mm512_set1_epi64(C.wrapping_mul(8) as i64));
        let mut word = 0u64;
        for c in 0..chunks {
            // Lane 2i is the low half of draw i, lane 2i + 1 its high half: position order.
            let halves = wyrand8(states);
            states = _mm512_add_epi64(states, step);
            let below = _mm512_cmple_epu32_mask(halves, last);
            // SAFETY: c * 16 + 16 <= n = special.len(); 16 bytes are read.
            let sp = unsafe { _mm_loadu_si128(special.as_ptr().add(c * 16).cast()) };
            let chosen = below & !_mm_test_epi8_mask(sp, sp);
            word |= (chosen as u64) << (16 * (c % 4));
            if c % 4 == 3 || c + 1 == chunks {
                hits[c / 4] = word;
                word = 0;
            }
        }
        // The last n % 16 positions one draw (two positions) at a time, as the generic path.
        let mut s = s0.wrapping_add(C.wrapping_mul(8 * chunks as u64));
        let mut i = chunks * 16;
        let mut set = |p: usize, hit: bool| hits[p / 64] |= (hit as u64) << (p % 64);
        while i + 1 < n {
            s = s.wrapping_add(C);
            let r = wyrand(s);
            set(i, (r & LOW32) < t && !special[i]);
            set(i + 1, (r >> 32) < t && !special[i + 1]);
            i += 2;
        }
        if i < n {
            s = s.wrapping_add(C);
            set(i, (wyrand(s) >> 32) < t && !special[i]);
        }
        s
    }

    /// The "mask token" and "random token" bits of corruption draws `j0..j0 + 8` (draw `j` is
    /// `wyrand(s + (j + 1) C)`), from the thresholds `tm` and `tr` in every lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn classify8(s: u64, j0: usize, tm: __m512i, tr: __m512i) -> (u64, u64) {
        let r = wyrand8(states8(s.wrapping_add(C.wrapping_mul(j0 as u64))));
        // Thresholds are up to 2^32: compare the high halves in 64-bit lanes.
        let u = _mm512_srli_epi64(r, 32);
        let mask = _mm512_cmplt_epu64_mask(u, tm);
        let random = _mm512_cmplt_epu64_mask(u, tr) & !mask;
        (mask as u64, random as u64)
    }

    /// Classifies the corruption draws up to at least `upto`, into bit vectors.
    #[target_feature(enable = "avx512f")]
    fn extend_draws(sc: &mut FusedScratch, s: u64, upto: usize, tm: __m512i, tr: __m512i) {
        while sc.drawn < upto {
            let j0 = sc.drawn;
            let (mask, random) = classify8(s, j0, tm, tr);
            sc.drawn += 8;
            // j0 is a multiple of 8: the eight bits never straddle two words.
            if j0.is_multiple_of(64) {
                sc.mask_draws.push(0);
                sc.random_draws.push(0);
            }
            sc.mask_draws[j0 / 64] |= mask << (j0 % 64);
            sc.random_draws[j0 / 64] |= random << (j0 % 64);
        }
    }

    /// The walk of [`mask_row`] for a row whose corruption draws fit one 64-bit word (a BERT
    /// row: ~20 chosen, ~2 random replacements), in registers: the "mask token" bits by rank,
    /// the random replacements pushed to `randoms`. `None` (with `randoms` partly filled) when
    /// 64 or more positions are chosen or more than 64 draws are needed: the caller clears it
    /// and takes the general walk.
    #[target_feature(enable = "avx512f,bmi1")]
    fn corrupt_short(
        chosen: usize,
        s: u64,
        (tm, tr): (__m512i, __m512i),
        corruption: &Corruption,
        randoms: &mut Vec<(u32, u32)>,
    ) -> Option<u64> {
        if chosen >= 64 {
            return None;
        }
        let (mut mask_draws, mut random_draws, mut drawn) = (0u64, 0u64, 0usize);
        let (mut masked, mut k, mut shift) = (0u64, 0usize, 0usize);
        while k < chosen {
            // Classified draws up to the last rank's (a random replacement's id draw is
            // recomputed, not classified).
            let need = chosen + shift;
            if need > 64 {
                return None;
            }
            while drawn < need {
                let (mask, random) = classify8(s, drawn, tm, tr);
                mask_draws |= mask << drawn;
                random_draws |= random << drawn;
                drawn += 8;
            }
            // Ranks k.. read draws j = k + shift.. (j < need <= 64; left < chosen < 64).
            let (j, left) = (k + shift, chosen - k);
            let random = (random_draws >> j) & ((1u64 << left) - 1);
            let until = if random == 0 {
                left
            } else {
                random.trailing_zeros() as usize
            };
            masked |= ((mask_draws >> j) & ((1u64 << until) - 1)) << k;
            if random == 0 {
                break;
            }
            // Rank k + until is a random replacement (draw j + until); its id is the next draw.
            let draw = wyrand(s.wrapping_add(C.wrapping_mul((j + until) as u64 + 2)));
            randoms.push((
                (k + until) as u32,
                corruption.random_ids().id_for_draw(draw),
            ));
            shift += 1;
            k += until + 1;
        }
        Some(masked)
    }

    /// The general walk (any number of draws): fills `sc.masked` (the "mask token" bits by
    /// rank) and `sc.randoms`.
    #[target_feature(enable = "avx512f,bmi1")]
    fn walk(
        sc: &mut FusedScratch,
        chosen: usize,
        s: u64,
        (tm, tr): (__m512i, __m512i),
        corruption: &Corruption,
    ) {
        sc.drawn = 0;
        sc.mask_draws.clear();
        sc.random_draws.clear();
        sc.masked.resize(chosen.div_ceil(64) + 1, 0);
        let (mut k, mut shift) = (0usize, 0usize);
        while k < chosen {
            // Classified draws up to the last rank's (as in `corrupt_short`).
            extend_draws(sc, s, chosen + shift, tm, tr);
            // The next random replacement at or after rank k (draw k + shift), if any.
            let (from, end) = (k + shift, chosen + shift);
            let mut random_at = end;
            let mut q = from;
            while q < end {
                let len = (end - q).min(64);
                let bits = get_bits(&sc.random_draws, q, len);
                if bits != 0 {
                    random_at = q + bits.trailing_zeros() as usize;
                    break;
                }
                q += len;
            }
            // Ranks before it read draws k + shift.. in order: copy their "mask token" bits.
            let until = random_at - shift;
            let mut a = k;
            while a < until {
                let len = (until - a).min(64);
                let bits = get_bits(&sc.mask_draws, a + shift, len);
                or_bits(&mut sc.masked, a, len, bits);
                a += len;
            }
            if until >= chosen {
                break;
            }
            // Rank `until` is a random replacement; its id is the next draw.
            let draw = wyrand(s.wrapping_add(C.wrapping_mul(random_at as u64 + 2)));
            let id = corruption.random_ids().id_for_draw(draw);
            sc.randoms.push((until as u32, id));
            shift += 1;
            k = until + 1;
        }
    }

    /// The fused row ([`super::mask_row`]); the caller has checked the CPU and the lengths.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,bmi1,bmi2,popcnt")]
    pub(super) fn mask_row(
        ids: &[u32],
        special: &[bool],
        vocab_size: u32,
        s0: u64,
        t_select: u64,
        corruption: &Corruption,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
        sc: &mut FusedScratch,
    ) -> Result<usize, OutOfVocab> {
        let n = ids.len();
        let words = n.div_ceil(64);
        sc.hits.clear();
        sc.hits.resize(words, 0);
        let s = select(special, s0, t_select, &mut sc.hits);
        let chosen: usize = sc.hits.iter().map(|w| w.count_ones() as usize).sum();

        // Corruption: which ranks become the mask token, and the random replacements.
        let (t_mask, t_random) = corruption.action_thresholds();
        let thresholds = (
            _mm512_set1_epi64(t_mask as i64),
            _mm512_set1_epi64(t_random as i64),
        );
        sc.randoms.clear();
        sc.masked.clear();
        if let Some(masked) = corrupt_short(chosen, s, thresholds, corruption, &mut sc.randoms) {
            sc.masked.extend([masked, 0]);
        } else {
            sc.randoms.clear();
            walk(sc, chosen, s, thresholds, corruption);
        }

        // Write every position: ids (or the mask token) and labels, 16 at a time; check the
        // ids against the vocabulary on the way.
        let mask_id = _mm512_set1_epi32(corruption.mask_token_id() as i32);
        let ignore = _mm512_set1_epi32(crate::IGNORE_INDEX);
        let vocab = _mm512_set1_epi32(vocab_size as i32);
        let mut out_of_vocab = 0u16;
        let mut rank = 0usize;
        for w in 0..words {
            let hits = sc.hits[w];
            let count = hits.count_ones() as usize;
            let masked = if count == 0 {
                0
            } else {
                _pdep_u64(get_bits(&sc.masked, rank, count), hits)
            };
            rank += count;
            for q in 0..4 {
                let p = w * 64 + q * 16;
                if p >= n {
                    break;
                }
                let live: u16 = if n - p >= 16 {
                    u16::MAX
                } else {
                    (1u16 << (n - p)) - 1
                };
                // SAFETY: p < n and only the `live` lanes (p..min(p + 16, n)) are read or
                // written; masked lanes are neither read nor written.
                unsafe {
                    let v = _mm512_maskz_loadu_epi32(live, ids.as_ptr().add(p).cast());
                    out_of_vocab |= _mm512_mask_cmpge_epu32_mask(live, v, vocab);
                    let new = _mm512_mask_blend_epi32((masked >> (q * 16)) as u16, v, mask_id);
                    let label = _mm512_mask_blend_epi32((hits >> (q * 16)) as u16, ignore, v);
                    _mm512_mask_storeu_epi32(out_ids.as_mut_ptr().add(p).cast(), live, new);
                    _mm512_mask_storeu_epi32(out_labels.as_mut_ptr().add(p).cast(), live, label);
                }
            }
        }
        // The random replacements: the position of rank r is the r-th set bit of `hits`.
        let (mut w, mut before) = (0usize, 0usize);
        for &(r, id) in &sc.randoms {
            let r = r as usize;
            while r >= before + sc.hits[w].count_ones() as usize {
                before += sc.hits[w].count_ones() as usize;
                w += 1;
            }
            let bit = _pdep_u64(1u64 << (r - before), sc.hits[w]).trailing_zeros() as usize;
            out_ids[w * 64 + bit] = id;
        }
        if out_of_vocab != 0 {
            return Err(OutOfVocab);
        }
        Ok(chosen)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::rng::MaskRng;
        use crate::{CorruptionConfig, VocabSpec};

        /// The walk in registers gives the general walk's ranks and random ids, and it runs
        /// whenever a row's draws fit one word (fewer than 64 chosen, chosen plus random
        /// replacements at most 64).
        #[test]
        fn the_short_walk_equals_the_general_walk() {
            if !super::super::available() {
                return;
            }
            let vocab = VocabSpec::new(1000, 3, vec![0, 1, 2, 3, 500]);
            let mut gen = MaskRng::from_state(99);
            let (mut short_runs, mut edge_runs) = (0, 0);
            for case in 0..3000 {
                let (mask_p, random_p) = [(0.8, 0.1), (0.5, 0.5), (0.0, 1.0), (0.7, 0.2)][case % 4];
                let corruption = CorruptionConfig {
                    mask_replace_prob: mask_p,
                    random_replace_prob: random_p,
                    ..CorruptionConfig::default()
                }
                .build(&vocab)
                .unwrap();
                let (t_mask, t_random) = corruption.action_thresholds();
                let chosen = gen.below(70) as usize;
                let s = gen.next_u64();
                let mut randoms = Vec::new();
                let mut sc = FusedScratch::default();
                // SAFETY: `available()` checked every feature these functions need.
                let short = unsafe {
                    let thresholds = (
                        _mm512_set1_epi64(t_mask as i64),
                        _mm512_set1_epi64(t_random as i64),
                    );
                    walk(&mut sc, chosen, s, thresholds, &corruption);
                    corrupt_short(chosen, s, thresholds, &corruption, &mut randoms)
                };
                let fits = chosen < 64 && chosen + sc.randoms.len() <= 64;
                edge_runs += (chosen < 64 && chosen + sc.randoms.len() == 64) as usize;
                match short {
                    Some(masked) => {
                        short_runs += 1;
                        assert_eq!(masked, sc.masked[0], "case {case}: {chosen} chosen");
                        assert_eq!(randoms, sc.randoms, "case {case}: {chosen} chosen");
                    }
                    None => assert!(!fits, "case {case}: {chosen} chosen, declined"),
                }
            }
            assert!(short_runs > 2000, "{short_runs}");
            assert!(edge_runs > 0, "no case with draws filling the word exactly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CorruptionConfig, VocabSpec};

    #[test]
    fn bit_ranges_round_trip_across_words() {
        let mut w = vec![0u64; 3];
        or_bits(&mut w, 60, 10, 0b11_0110_1011);
        assert_eq!(w[0], 0b1011 << 60);
        assert_eq!(w[1], 0b11_0110);
        assert_eq!(get_bits(&w, 60, 10), 0b11_0110_1011);
        assert_eq!(get_bits(&w, 62, 3), 0b010);
        or_bits(&mut w, 64, 64, u64::MAX);
        assert_eq!(get_bits(&w, 64, 64), u64::MAX);
        assert_eq!(get_bits(&w, 100, 64), u64::MAX >> 36);
        // A range ending exactly at the end of the last word reads no further.
        assert_eq!(get_bits(&[0b1011 << 60], 60, 4), 0b1011);
        assert_eq!(get_bits(&[7], 0, 64), 7);
    }

    /// The fused row equals the generic path on random rows: lengths around the 16- and
    /// 64-position steps, special masks from none to all, rates 0 to 1 (1 takes every
    /// eligible position and the threshold 2^32), splits from all-mask to all-random (every
    /// chosen position takes two draws, so the draws are extended past the first guess), and
    /// vocabularies with excluded ids to step over.
    /// `predict_prob < 1` draws once more per chosen position: the fused row declines it.
    #[test]
    fn the_fused_row_declines_predict_prob_below_one() {
        let corruption = CorruptionConfig {
            predict_prob: 0.5,
            ..CorruptionConfig::default()
        }
        .build(&VocabSpec::new(10, 1, vec![0]))
        .unwrap();
        let (mut ids, mut labels) = ([3u32; 4], [3i32; 4]);
        assert!(mask_row(
            &[5; 4],
            &[false; 4],
            10,
            &MaskRng::from_state(1),
            1 << 31,
            &corruption,
            &mut ids,
            &mut labels,
            &mut FusedScratch::default(),
        )
        .is_none());
        assert_eq!((ids, labels), ([3; 4], [3; 4]), "nothing written");
    }
}
