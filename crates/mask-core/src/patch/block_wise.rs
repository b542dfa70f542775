//! Block-wise patch masking (BEiT, Bao et al. 2022, "BEiT: BERT Pre-Training of Image
//! Transformers", section 2.5 and Algorithm 1; `MaskingGenerator` in microsoft/unilm's
//! `beit/masking_generator.py`).
//!
//! Repeatedly: draw a target area `s ~ U[min_block, remaining]` (patches), an aspect ratio
//! `r = exp(U[ln min_aspect, ln(1 / min_aspect)])` (log-uniform), a block of
//! `h = round(sqrt(s r))` by `w = round(sqrt(s / r))` patches with `h < grid_h` and `w < grid_w`
//! at a uniform position; mask it if it adds between 1 and `remaining` new patches (so the
//! budget is never exceeded). Up to 10 attempts per block, as BEiT.
//!
//! Difference from BEiT, documented: BEiT stops when 10 attempts in a row add nothing, leaving
//! some images with fewer masked patches. MAE's visible-only encoder needs the same number of
//! visible patches in every image of a batch, so here the remaining budget is then topped up
//! with uniformly random unmasked patches. The count is exactly `round(mask_ratio * N)`.

use rand_distr::{Distribution, Uniform};

use crate::error::{MaskError, Result};
use crate::rng::MaskRng;

/// Attempts per block before the rectangle loop is declared stalled (BEiT: 10).
const ATTEMPTS: usize = 10;

/// Random rectangles of patches with log-uniform aspect ratios, a fixed count per image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockWisePatchSelector {
    grid_h: u32,
    grid_w: u32,
    n_masked: u32,
    min_block: u32,
    /// `U[ln min_aspect, ln(1 / min_aspect)]`: the log of the aspect ratio.
    log_aspect: Uniform<f64>,
}

impl BlockWisePatchSelector {
    /// The config checks the parameters; a `min_aspect` whose log range is empty or not
    /// finite is refused here too.
    pub(crate) fn new(
        grid_h: u32,
        grid_w: u32,
        n_masked: u32,
        min_block: u32,
        min_aspect: f64,
    ) -> Result<Self> {
        let log_aspect =
            Uniform::new_inclusive(min_aspect.ln(), -min_aspect.ln()).map_err(|_| {
                MaskError::InvalidValue {
                    field: "min_aspect",
                    value: min_aspect.to_string(),
                    expected: "a ratio in (0, 1] (the largest aspect is 1 / min_aspect)",
                }
            })?;
        Ok(Self {
            grid_h,
            grid_w,
            n_masked,
            min_block,
            log_aspect,
        })
    }

    /// One BEiT `_mask` call: up to 10 attempts to place a block adding `1..=max_add` new
    /// patches. Returns the number of patches added.
    fn place_block(&self, rng: &mut MaskRng, hidden: &mut [bool], max_add: u32) -> u32 {
        let (gh, gw) = (self.grid_h as usize, self.grid_w as usize);
        let (lo, hi) = (self.min_block as f64, max_add as f64);
        for _ in 0..ATTEMPTS {
            // Python's random.uniform(a, b) = a + (b - a) u, also when b < a (BEiT draws the
            // area so when the remaining budget is below min_block); rand's Uniform refuses
            // b < a, so this one draw stays written out.
            let area = lo + (hi - lo) * rng.next_f64();
            let aspect = self.log_aspect.sample(rng).exp();
            let h = (area * aspect).sqrt().round() as usize;
            let w = (area / aspect).sqrt().round() as usize;
            if h == 0 || w == 0 || h >= gh || w >= gw {
                continue;
            }
            let top = rng.below((gh - h + 1) as u64) as usize;
            let left = rng.below((gw - w + 1) as u64) as usize;
            let mut fresh = 0u32;
            for r in top..top + h {
                fresh += hidden[r * gw + left..r * gw + left + w]
                    .iter()
                    .filter(|&&x| !x)
                    .count() as u32;
            }
            if fresh > 0 && fresh <= max_add {
                for r in top..top + h {
                    hidden[r * gw + left..r * gw + left + w].fill(true);
                }
                return fresh;
            }
        }
        0
    }

    /// Sets `hidden[i] = true` for exactly `n_masked` patches; `free` is scratch.
    pub(crate) fn select(&self, rng: &mut MaskRng, free: &mut Vec<u32>, hidden: &mut [bool]) {
        hidden.fill(false);
        let mut count = 0u32;
        while count < self.n_masked {
            let added = self.place_block(rng, hidden, self.n_masked - count);
            if added == 0 {
                break;
            }
            count += added;
        }
        if count < self.n_masked {
            // Stalled: top up with uniformly random unmasked patches (partial Fisher-Yates).
            free.clear();
            free.extend((0..hidden.len() as u32).filter(|&i| !hidden[i as usize]));
            let need = (self.n_masked - count) as usize;
            for i in 0..need {
                let j = i + rng.below((free.len() - i) as u64) as usize;
                free.swap(i, j);
                hidden[free[i] as usize] = true;
            }
        }
    }
}
