//! Counter-based randomness: the stream for one example is a pure function of
//! `(seed, epoch, example index, stream)`, as in fairseq's `MaskTokensDataset`, so masks never
//! depend on batch order, batch composition, worker count or wall clock.
//!
//! The key is derived with the SplitMix64 finaliser (Steele et al. 2014) applied in a chain; the
//! stream itself is wyrand (Wang Yi), a 64-bit generator passing BigCrush and PractRand that
//! costs one 64x64->128 multiply per draw. It is not cryptographic, and needs not be.
//!
//! [`MaskRng`] implements `rand_core`'s [`TryRng`](rand_core::TryRng) (hence
//! [`rand_core::Rng`]), so `rand_distr`'s distributions draw from it: span lengths are
//! `rand_distr::Geometric`, BEiT's aspect ratios `rand_distr::Uniform` in log space. Their
//! algorithms are part of what a mask is: `tests/regression.rs` pins masks bit for bit, so an
//! upgrade of either crate that changes a draw fails the tests instead of silently changing
//! every mask.

/// SplitMix64 finaliser: a bijective 64-bit mixer with full avalanche.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// wyrand's state increment: draw `j` of a stream at state `s` is [`wyrand`]`(s + j C)`.
pub(crate) const WY_INCREMENT: u64 = 0xa076_1d64_78bd_642f;
/// wyrand's multiplier key.
pub(crate) const WY_XOR: u64 = 0xe703_7ed1_a0b4_28db;

/// wyrand's output function: the 128-bit product `s * (s ^ WY_XOR)`, halves XORed.
#[inline(always)]
pub(crate) fn wyrand(s: u64) -> u64 {
    let t = (s as u128).wrapping_mul((s ^ WY_XOR) as u128);
    ((t >> 64) as u64) ^ (t as u64)
}

/// What [`MaskRng::below`]`(n)` returns when the stream's next draw is `r`: Lemire's
/// multiply-shift, the high word of `r * n`.
#[inline(always)]
pub(crate) fn below_for_draw(r: u64, n: u64) -> u64 {
    ((r as u128 * n as u128) >> 64) as u64
}

/// A small, fast, reproducible random stream for one example.
#[derive(Debug, Clone)]
pub struct MaskRng {
    state: u64,
}

impl MaskRng {
    /// Stream id for token selection and corruption.
    pub const STREAM_TOKENS: u64 = 0;
    /// Stream id for patch masking (MAE random, BEiT block-wise).
    pub const STREAM_PATCHES: u64 = 1;

    /// Stream id for item masking (sequential recommendation, [`crate::ItemMasker`]).
    pub const STREAM_ITEMS: u64 = 2;

    /// The stream of example `index` at (effective) `epoch` under `seed`.
    #[inline]
    pub fn for_example(seed: u64, epoch: u64, index: u64, stream: u64) -> Self {
        let mut k = mix64(seed ^ 0x6a09_e667_f3bc_c908);
        k = mix64(k ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        k = mix64(k ^ index.wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        k = mix64(k ^ stream.wrapping_mul(0x1656_67b1_9e37_79f9));
        Self { state: k }
    }

    /// A stream from a raw 64-bit state (for tests and tools).
    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    /// Next 64 random bits (wyrand).
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(WY_INCREMENT);
        wyrand(self.state)
    }

    /// The raw state: the next draw is `wyrand(state + WY_INCREMENT)`.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn state(&self) -> u64 {
        self.state
    }

    /// Next 32 random bits.
    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform float in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`; `n` must be > 0. Lemire's multiply-shift, bias < n / 2^64.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        below_for_draw(self.next_u64(), n)
    }
}

impl rand_core::TryRng for MaskRng {
    type Error = rand_core::Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(MaskRng::next_u32(self))
    }

    #[inline]
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(MaskRng::next_u64(self))
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand_core::utils::fill_bytes_via_next_word(dst, || self.try_next_u64())
    }
}

/// The 32-bit threshold `t` such that `next_u32() < t` has probability `p` (to 2^-32).
///
/// Returned as `u64` so that `p = 1` (threshold 2^32) is exact.
#[inline]
pub fn threshold_u32(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed_by_every_coordinate() {
        let base = MaskRng::for_example(1, 2, 3, 0).next_u64();
        assert_eq!(base, MaskRng::for_example(1, 2, 3, 0).next_u64());
        assert_ne!(base, MaskRng::for_example(0, 2, 3, 0).next_u64());
        assert_ne!(base, MaskRng::for_example(1, 1, 3, 0).next_u64());
        assert_ne!(base, MaskRng::for_example(1, 2, 4, 0).next_u64());
        assert_ne!(base, MaskRng::for_example(1, 2, 3, 1).next_u64());
        // Swapping coordinates must not collide.
        assert_ne!(base, MaskRng::for_example(1, 3, 2, 0).next_u64());
    }

    #[test]
    fn uniform_f64_mean_and_below_range() {
        let mut r = MaskRng::for_example(7, 0, 0, 0);
        let n = 200_000;
        let mean: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        // sd of the mean = sqrt(1/12 / n) ~ 6.5e-4; 6 sd.
        assert!(
            (mean - 0.5).abs() < 6.0 * (1.0f64 / 12.0 / n as f64).sqrt(),
            "{mean}"
        );
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
        }
    }

    #[test]
    fn rand_core_draws_are_the_stream() {
        use rand_core::Rng;
        let (mut a, mut b) = (MaskRng::from_state(9), MaskRng::from_state(9));
        assert_eq!(Rng::next_u64(&mut a), b.next_u64());
        assert_eq!(Rng::next_u32(&mut a), b.next_u32());
        // Bytes are the next words, little-endian; a partial last word is cut.
        let mut bytes = [0u8; 12];
        a.fill_bytes(&mut bytes);
        let (w0, w1) = (b.next_u64().to_le_bytes(), b.next_u64().to_le_bytes());
        assert_eq!(&bytes[..8], &w0);
        assert_eq!(&bytes[8..], &w1[..4]);
    }

    #[test]
    fn thresholds_hit_the_ends() {
        assert_eq!(threshold_u32(0.0), 0);
        assert_eq!(threshold_u32(1.0), 1u64 << 32);
    }
}
