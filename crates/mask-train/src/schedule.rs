//! Learning-rate schedule (linear warm-up, then linear / cosine decay or constant) and
//! global-norm gradient clipping.
//!
//! Why our own clipping: burn 0.21's `GradientClippingConfig::Norm` clips each parameter's
//! gradient by *its own* norm; BERT, HF's Trainer and `torch.nn.utils.clip_grad_norm_` scale all
//! gradients by one factor so that their *global* norm is at most `max_norm`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// Shape of the learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Linear to `min_lr_ratio * lr` at the last step (BERT).
    Linear,
    /// Half-cosine to `min_lr_ratio * lr` at the last step.
    Cosine,
    /// Constant `lr`.
    Constant,
}

/// Learning rate at `step` (0-based) of `steps`: linear warm-up from `lr / warmup` to `lr` over
/// `warmup` steps, then `decay` to `min_lr_ratio * lr` at step `steps - 1`.
pub fn lr_at(step: u64, steps: u64, lr: f64, warmup: u64, decay: Decay, min_lr_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = steps.saturating_sub(warmup).saturating_sub(1).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = lr * min_lr_ratio;
    match decay {
        Decay::Constant => lr,
        Decay::Linear => floor + (lr - floor) * (1.0 - progress),
        Decay::Cosine => {
            floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g * self.factor);
        }
    }
}

/// Global L2 norm of all gradients of `model`'s parameters.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, total: None };
    model.visit(&mut v);
    v.total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds `max_norm`; returns
/// the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm::<B, M>(model, grads);
    if norm > max_norm && norm.is_finite() {
        let mut s = Scale::<B> {
            grads,
            factor: max_norm / (norm + 1e-6),
            _b: std::marker::PhantomData,
        };
        model.visit(&mut s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_and_cosine() {
        let (lr, steps, warm) = (1e-3, 110, 10);
        assert!((lr_at(0, steps, lr, warm, Decay::Linear, 0.0) - 1e-4).abs() < 1e-15);
        assert!((lr_at(9, steps, lr, warm, Decay::Linear, 0.0) - 1e-3).abs() < 1e-15);
        assert!((lr_at(10, steps, lr, warm, Decay::Linear, 0.0) - 1e-3).abs() < 1e-15);
        assert!(lr_at(109, steps, lr, warm, Decay::Linear, 0.0).abs() < 1e-15);
        assert!((lr_at(109, steps, lr, warm, Decay::Cosine, 0.1) - 1e-4).abs() < 1e-15);
        // cosine at the midpoint of the decay is halfway between lr and the floor
        let mid = lr_at(10 + 99 / 2, steps, lr, warm, Decay::Cosine, 0.0);
        assert!((mid - 5e-4).abs() < 2e-5, "{mid}");
        assert_eq!(lr_at(70, steps, lr, warm, Decay::Constant, 0.0), lr);
        assert!(lr_at(5, 10, lr, 0, Decay::Linear, 0.0) > 0.0);
    }
}
