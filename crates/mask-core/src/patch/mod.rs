//! Patch masking for vision Transformers: which patches of an image grid to hide. One file
//! per policy:
//! - [`RandomPatchSelector`]: uniformly random patches (MAE, 75 %);
//! - [`BlockWisePatchSelector`]: random rectangles with log-uniform aspect ratios (BEiT, 40 %).
//!
//! Both hide *exactly* `round(mask_ratio * N)` of the `N = grid_h * grid_w` patches, so every
//! image keeps the same number `K` of visible patches, which MAE's visible-only encoder needs to
//! batch images. A mask is a pure function of `(seed, regime.effective_epoch(epoch), index)`
//! through [`MaskRng::for_example`] with stream [`MaskRng::STREAM_PATCHES`]: static masking with
//! duplication factor `k` and dynamic masking work as for tokens.
//!
//! ```
//! use mask_core::{PatchMaskingConfig, PatchSelectionConfig, Regime};
//!
//! let masker = PatchMaskingConfig::new(7, 7, PatchSelectionConfig::Random { mask_ratio: 0.75 })
//!     .with_regime(Regime::Static { dupe_factor: 1 })
//!     .build()?;
//! let m = masker.mask(42, 3, 0);
//! assert_eq!((m.keep.len(), m.masked.len()), (12, 37)); // round(0.75 * 49) = 37 hidden
//! assert_eq!(m, masker.mask(42, 4, 0)); // static, k = 1: the same mask every epoch
//! # Ok::<(), mask_core::MaskError>(())
//! ```

mod block_wise;
mod random;

pub use block_wise::BlockWisePatchSelector;
pub use random::RandomPatchSelector;

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::regime::Regime;
use crate::rng::MaskRng;

pub(crate) fn default_random_ratio() -> f64 {
    0.75
}
pub(crate) fn default_block_ratio() -> f64 {
    0.4
}
pub(crate) fn default_min_block() -> u32 {
    4
}
pub(crate) fn default_min_aspect() -> f64 {
    0.3
}

/// Patch selection policy, tagged by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PatchSelectionConfig {
    /// Uniformly random patches (MAE).
    Random {
        /// Fraction of patches hidden, in `[0, 1)`. Default: 0.75
        #[serde(default = "default_random_ratio")]
        mask_ratio: f64,
    },
    /// Random rectangles (BEiT's block-wise masking).
    BlockWise {
        /// Fraction of patches hidden, in `[0, 1)`. Default: 0.4
        #[serde(default = "default_block_ratio")]
        mask_ratio: f64,
        /// Smallest target area of a block, in patches (>= 1). Default: 4
        #[serde(default = "default_min_block")]
        min_block: u32,
        /// Smallest aspect ratio, in `(0, 1]`; the largest is `1 / min_aspect`. Default: 0.3
        #[serde(default = "default_min_aspect")]
        min_aspect: f64,
    },
}

impl Default for PatchSelectionConfig {
    fn default() -> Self {
        PatchSelectionConfig::Random {
            mask_ratio: default_random_ratio(),
        }
    }
}

impl PatchSelectionConfig {
    /// BEiT's block-wise masking with its defaults (40 %, blocks >= 4 patches, aspect 0.3..3.33).
    pub fn block_wise() -> Self {
        PatchSelectionConfig::BlockWise {
            mask_ratio: default_block_ratio(),
            min_block: default_min_block(),
            min_aspect: default_min_aspect(),
        }
    }

    /// The fraction of patches hidden.
    pub fn mask_ratio(&self) -> f64 {
        match *self {
            PatchSelectionConfig::Random { mask_ratio }
            | PatchSelectionConfig::BlockWise { mask_ratio, .. } => mask_ratio,
        }
    }
}

/// A patch-masking policy: grid, selection and regime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchMaskingConfig {
    /// Patch rows of the image grid (>= 1).
    pub grid_h: u32,
    /// Patch columns of the image grid (>= 1).
    pub grid_w: u32,
    /// Which patches. Default: random, 0.75
    #[serde(default)]
    pub selection: PatchSelectionConfig,
    /// When masks are redrawn. Default: dynamic
    #[serde(default)]
    pub regime: Regime,
}

impl PatchMaskingConfig {
    /// A dynamic policy on a `grid_h x grid_w` grid.
    pub fn new(grid_h: u32, grid_w: u32, selection: PatchSelectionConfig) -> Self {
        Self {
            grid_h,
            grid_w,
            selection,
            regime: Regime::default(),
        }
    }

    /// Replaces the regime.
    pub fn with_regime(mut self, regime: Regime) -> Self {
        self.regime = regime;
        self
    }

    /// Patches per image `N`.
    pub fn n_patches(&self) -> u64 {
        self.grid_h as u64 * self.grid_w as u64
    }

    /// Validates every field (naming the first bad one) and builds the masker.
    pub fn build(&self) -> Result<PatchMasker> {
        for (field, v) in [("grid_h", self.grid_h), ("grid_w", self.grid_w)] {
            if v == 0 {
                return Err(MaskError::InvalidValue {
                    field,
                    value: "0".into(),
                    expected: "an integer >= 1",
                });
            }
        }
        let n = self.n_patches();
        if n > u32::MAX as u64 / 2 {
            return Err(MaskError::InvalidValue {
                field: "grid_h",
                value: format!("{} (x grid_w = {} patches)", self.grid_h, n),
                expected: "a grid of fewer than 2^31 patches",
            });
        }
        let n = n as u32;
        let ratio = self.selection.mask_ratio();
        if !(ratio.is_finite() && (0.0..1.0).contains(&ratio)) {
            return Err(MaskError::InvalidValue {
                field: "mask_ratio",
                value: ratio.to_string(),
                expected: "a fraction in [0, 1)",
            });
        }
        let n_masked = (ratio * n as f64).round() as u32;
        if n_masked >= n {
            return Err(MaskError::InvalidValue {
                field: "mask_ratio",
                value: ratio.to_string(),
                expected:
                    "a fraction that leaves at least one visible patch (round(mask_ratio * N) < N)",
            });
        }
        self.regime.validate()?;
        let selector = match self.selection {
            PatchSelectionConfig::Random { .. } => {
                AnyPatchSelector::Random(RandomPatchSelector::new(n, n_masked))
            }
            PatchSelectionConfig::BlockWise {
                min_block,
                min_aspect,
                ..
            } => {
                if min_block == 0 {
                    return Err(MaskError::InvalidValue {
                        field: "min_block",
                        value: "0".into(),
                        expected: "an integer >= 1",
                    });
                }
                if !(min_aspect.is_finite() && min_aspect > 0.0 && min_aspect <= 1.0) {
                    return Err(MaskError::InvalidValue {
                        field: "min_aspect",
                        value: min_aspect.to_string(),
                        expected: "a ratio in (0, 1] (the largest aspect is 1 / min_aspect)",
                    });
                }
                AnyPatchSelector::BlockWise(BlockWisePatchSelector::new(
                    self.grid_h,
                    self.grid_w,
                    n_masked,
                    min_block,
                    min_aspect,
                )?)
            }
        };
        Ok(PatchMasker {
            config: *self,
            n_patches: n,
            n_masked,
            selector,
        })
    }
}

/// Any built-in patch selector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyPatchSelector {
    /// See [`RandomPatchSelector`].
    Random(RandomPatchSelector),
    /// See [`BlockWisePatchSelector`].
    BlockWise(BlockWisePatchSelector),
}

/// Which patches of one image are visible and hidden.
///
/// `keep` and `masked` are ascending and partition `0..N`; `restore[i]` is the position of patch
/// `i` in `keep ++ masked` (MAE's `ids_restore`), so gathering `cat(encoded visible, mask
/// tokens)` with `restore` puts every patch back in place.
#[derive(Debug, Clone, Default)]
pub struct PatchMask {
    /// Visible patches, ascending (`K = N - round(mask_ratio * N)`).
    pub keep: Vec<u32>,
    /// Hidden patches, ascending.
    pub masked: Vec<u32>,
    /// Position of each patch in `keep ++ masked`.
    pub restore: Vec<u32>,
    hidden: Vec<bool>,
    scratch: Vec<u32>,
}

impl PartialEq for PatchMask {
    fn eq(&self, other: &Self) -> bool {
        self.keep == other.keep && self.masked == other.masked && self.restore == other.restore
    }
}

impl Eq for PatchMask {}

impl PatchMask {
    /// Patches per image `N`.
    pub fn n_patches(&self) -> usize {
        self.restore.len()
    }

    /// `true` for hidden patches, length `N`.
    pub fn hidden(&self) -> Vec<bool> {
        let mut out = vec![false; self.n_patches()];
        for &m in &self.masked {
            out[m as usize] = true;
        }
        out
    }

    /// Rebuilds `keep`, `masked` and `restore` from the `hidden` flags.
    fn fill_from_flags(&mut self) {
        self.keep.clear();
        self.masked.clear();
        self.restore.clear();
        for (i, &h) in self.hidden.iter().enumerate() {
            if h {
                self.masked.push(i as u32);
            } else {
                self.keep.push(i as u32);
            }
        }
        let k = self.keep.len() as u32;
        let (mut visible, mut hidden) = (0u32, k);
        for &h in &self.hidden {
            if h {
                self.restore.push(hidden);
                hidden += 1;
            } else {
                self.restore.push(visible);
                visible += 1;
            }
        }
    }
}

/// A built patch-masking policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchMasker {
    config: PatchMaskingConfig,
    n_patches: u32,
    n_masked: u32,
    selector: AnyPatchSelector,
}

impl PatchMasker {
    /// The config this masker was built from.
    pub fn config(&self) -> &PatchMaskingConfig {
        &self.config
    }

    /// Patches per image `N`.
    pub fn n_patches(&self) -> usize {
        self.n_patches as usize
    }

    /// Hidden patches per image, `round(mask_ratio * N)`.
    pub fn n_masked(&self) -> usize {
        self.n_masked as usize
    }

    /// Visible patches per image `K = N - n_masked >= 1`.
    pub fn n_visible(&self) -> usize {
        (self.n_patches - self.n_masked) as usize
    }

    /// The selector.
    pub fn selector(&self) -> &AnyPatchSelector {
        &self.selector
    }

    /// The mask of image `index` at `epoch` under `seed`.
    pub fn mask(&self, seed: u64, epoch: u64, index: u64) -> PatchMask {
        let mut out = PatchMask::default();
        self.mask_into(seed, epoch, index, &mut out);
        out
    }

    /// As [`PatchMasker::mask`], reusing `out`'s buffers (no allocation after warm-up).
    pub fn mask_into(&self, seed: u64, epoch: u64, index: u64, out: &mut PatchMask) {
        let mut rng = MaskRng::for_example(
            seed,
            self.config.regime.effective_epoch(epoch),
            index,
            MaskRng::STREAM_PATCHES,
        );
        out.hidden.clear();
        out.hidden.resize(self.n_patches as usize, false);
        match &self.selector {
            AnyPatchSelector::Random(s) => s.select(&mut rng, &mut out.scratch, &mut out.hidden),
            AnyPatchSelector::BlockWise(s) => s.select(&mut rng, &mut out.scratch, &mut out.hidden),
        }
        out.fill_from_flags();
    }
}
