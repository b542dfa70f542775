//! Random patch masking (MAE, He et al. 2021, "Masked Autoencoders Are Scalable Vision
//! Learners", section 3): exactly `round(mask_ratio * N)` of the `N` patches are hidden, chosen
//! uniformly without replacement; the encoder sees the remaining `K` patches only.
//!
//! MAE draws one uniform noise value per patch, sorts, and keeps the first `K`. A partial
//! Fisher-Yates shuffle of the patch indices that stops after `K` swaps yields the same
//! distribution (a uniformly random `K`-subset) with `K` draws instead of `N` and no sort.

use crate::rng::MaskRng;

/// Uniformly random patches, a fixed count per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomPatchSelector {
    n_patches: u32,
    n_masked: u32,
}

impl RandomPatchSelector {
    /// Hides `n_masked` of `n_patches` (`n_masked <= n_patches`; checked by the config).
    pub(crate) fn new(n_patches: u32, n_masked: u32) -> Self {
        Self {
            n_patches,
            n_masked,
        }
    }

    /// Sets `hidden[i] = true` for exactly `n_masked` patches; `perm` is scratch.
    pub(crate) fn select(&self, rng: &mut MaskRng, perm: &mut Vec<u32>, hidden: &mut [bool]) {
        let n = self.n_patches as usize;
        let keep = n - self.n_masked as usize;
        perm.clear();
        perm.extend(0..self.n_patches);
        // Partial Fisher-Yates: after `keep` steps, perm[..keep] is a uniform random keep-set.
        for i in 0..keep {
            let j = i + rng.below((n - i) as u64) as usize;
            perm.swap(i, j);
        }
        hidden.fill(true);
        for &p in &perm[..keep] {
            hidden[p as usize] = false;
        }
    }
}
