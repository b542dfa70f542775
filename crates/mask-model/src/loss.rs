//! Losses over the positions that count: token cross-entropy at masked positions only (the
//! average over masked tokens, not over all positions as a padded `CrossEntropyLoss` would
//! give), and MAE's per-patch MSE over masked patches.
//!
//! Legend: B batch, T positions, N selected positions, V vocabulary, P patch features.

use burn::prelude::*;
use mask_attn::mask_core::IGNORE_INDEX;

use crate::error::{ModelError, Result};

/// Positions with a label, gathered from `labels` (`IGNORE_INDEX` elsewhere): the flat
/// positions `b * T + t` and their target ids, checked against the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaskedTargets {
    /// Flat positions into `[B * T]`.
    pub positions: Vec<i64>,
    /// Target ids, one per position.
    pub targets: Vec<i64>,
}

impl MaskedTargets {
    /// Collects the labelled positions of a `[B * T]` label vector.
    pub fn from_labels(labels: &[i32], vocab_size: usize) -> Result<Self> {
        let mut out = Self::default();
        for (position, &label) in labels.iter().enumerate() {
            if label == IGNORE_INDEX {
                continue;
            }
            if label < 0 || label as usize >= vocab_size {
                return Err(ModelError::OutOfVocab {
                    field: "labels",
                    id: label as i64,
                    position,
                    vocab_size,
                });
            }
            out.positions.push(position as i64);
            out.targets.push(label as i64);
        }
        Ok(out)
    }

    /// Number of labelled positions N.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether no position is labelled.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// `(positions [N], targets [N])` as tensors.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
        let n = self.len();
        (
            Tensor::from_data(TensorData::new(self.positions.clone(), [n]), device),
            Tensor::from_data(TensorData::new(self.targets.clone(), [n]), device),
        )
    }
}

/// `log_softmax(x, dim)` with the same forward bits as burn's default (`x - max`, then minus
/// `log(sum(exp))`), but a backward that never goes through `B::float_recip`: burn-autodiff's
/// `log` backward multiplies by `recip(input)`, and burn-ndarray's SIMD `recip` is the ~14-bit
/// approximation (`_mm512_rcp14_ps` / `_mm256_rcp_ps`) on the vector-aligned middle of the buffer
/// and an exact `1 / x` on the unaligned head and tail. When that input is uniquely owned the op
/// runs in place, so which rows get which depends on the heap address: gradients (and training
/// runs) were not reproducible bit for bit. Here `log(s)`'s gradient is an exact `1 / s`.
fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let shifted = x.clone() - x.detach().max_dim(dim);
    let sum = shifted.clone().exp().sum_dim(dim);
    let fixed = sum.clone().detach();
    let inv = fixed.ones_like() / fixed.clone(); // exact IEEE division (not `recip`)
                                                 // Value: log(s) + (s - s) / s = log(s) bit for bit; gradient w.r.t. s: 1 / s.
    let log_sum = fixed.clone().log() + (sum - fixed) * inv;
    shifted - log_sum
}

/// Per-position cross-entropy `-log softmax(logits)[target]`.
///
/// # Shapes
/// - `logits`: `[N, V]`, `targets`: `[N]` -> `[N]`
pub fn token_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let log_probs = log_softmax(logits, 1); // [N, V]
    log_probs
        .gather(1, targets.unsqueeze_dim(1)) // [N, 1]
        .squeeze_dim::<1>(1)
        .neg()
}

/// Mean cross-entropy over the N labelled positions (the MLM loss).
///
/// # Shapes
/// - `logits`: `[N, V]`, `targets`: `[N]` -> `[1]`
pub fn masked_lm_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    token_cross_entropy(logits, targets).mean()
}

/// MAE loss: per-patch mean squared error, averaged over masked patches only (He et al. 2021,
/// section 3). `mask` is 1 for masked (reconstructed) patches, 0 for visible ones.
///
/// # Shapes
/// - `pred`, `target`: `[B, N, P]`, `mask`: `[B, N]` -> `[1]`
pub fn masked_patch_mse<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let per_patch = (pred - target)
        .powi_scalar(2)
        .mean_dim(2)
        .squeeze_dim::<2>(2); // [B, N]
    let masked = mask.clone().sum().clamp_min(1.0);
    (per_patch * mask).sum() / masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = NdArray<f32>;

    /// Regression (tests issue): no test checked cross-entropy values. By hand:
    /// row 0: -log softmax([1, 2, 3])[2] = log(1 + e^-1 + e^-2) = 0.4076059644;
    /// row 1: -log softmax([0, 0, 0])[1] = log 3 = 1.0986122887.
    #[test]
    fn cross_entropy_by_hand() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_data([[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]], &device);
        let t = Tensor::<B, 1, Int>::from_data([2i64, 1], &device);
        let ce: Vec<f32> = token_cross_entropy(logits.clone(), t.clone())
            .into_data()
            .to_vec()
            .unwrap();
        let want = [(1.0f64 + (-1f64).exp() + (-2f64).exp()).ln(), 3f64.ln()];
        for (g, w) in ce.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        let mean = masked_lm_loss(logits, t).into_scalar();
        assert!(((mean as f64) - (want[0] + want[1]) / 2.0).abs() < 1e-6);
    }

    /// The gradient of the mean cross-entropy w.r.t. the logits is (softmax - one_hot) / N,
    /// and our `log_softmax`'s exact-reciprocal backward gives it to f32 rounding.
    #[test]
    fn cross_entropy_gradient_is_softmax_minus_one_hot() {
        type A = Autodiff<B>;
        let device = Default::default();
        let raw = [[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]];
        let logits = Tensor::<A, 2>::from_data(raw, &device).require_grad();
        let t = Tensor::<A, 1, Int>::from_data([2i64, 0], &device);
        let loss = token_cross_entropy(logits.clone(), t).mean();
        let g: Vec<f32> = logits
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        for (r, (row, target)) in raw.iter().zip([2usize, 0]).enumerate() {
            let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            for k in 0..3 {
                let p = (row[k] as f64).exp() / z;
                let want = (p - f64::from(u8::from(k == target))) / 2.0;
                assert!((g[r * 3 + k] as f64 - want).abs() < 1e-6, "({r}, {k})");
            }
        }
    }

    /// Regression (tests issue): `masked_patch_mse` had no value check. Per-patch means of the
    /// squared errors are 1 and 2.5; the loss averages them over the masked patches only.
    #[test]
    fn masked_patch_mse_by_hand() {
        let device = Default::default();
        let pred = Tensor::<B, 3>::from_data([[[0.0f32, 0.0], [1.0, 1.0]]], &device);
        let target = Tensor::<B, 3>::from_data([[[1.0f32, 1.0], [0.0, 3.0]]], &device);
        let loss = |m: [f32; 2]| {
            let mask = Tensor::<B, 2>::from_data([m], &device);
            masked_patch_mse(pred.clone(), target.clone(), mask).into_scalar()
        };
        assert_eq!(loss([1.0, 0.0]), 1.0);
        assert_eq!(loss([0.0, 1.0]), 2.5);
        assert_eq!(loss([1.0, 1.0]), 1.75);
        assert_eq!(loss([0.0, 0.0]), 0.0, "no masked patch: 0, not NaN");
    }
}
