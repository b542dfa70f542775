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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Linear to `min_lr_ratio * lr` at the last step (BERT).
    #[default]
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

/// Multiplies every gradient of `model`'s parameters by `factor`.
pub fn scale_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    let mut s = Scale::<B> {
        grads,
        factor,
        _b: std::marker::PhantomData,
    };
    model.visit(&mut s);
}

/// The factor that clips a global norm `norm` to `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`: `max_norm / (norm + 1e-6)` when `norm > max_norm`, else 1).
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Scales all gradients by [`clip_factor`] when their global norm exceeds `max_norm`; returns
/// the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm::<B, M>(model, grads);
    let factor = clip_factor(norm, max_norm);
    if factor != 1.0 && norm.is_finite() {
        scale_gradients::<B, M>(model, grads, factor);
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

    /// Regression (tests issue): clipping and the global norm, used by every config, had no
    /// test. A linear layer y = w . x + b with w = (1, 2), b = 0.5 at x = (3, 4) and loss = y
    /// has gradients dL/dw = x = (3, 4) and dL/db = 1: global norm sqrt(26).
    #[test]
    fn global_norm_and_clipping_by_hand() {
        use burn::backend::{Autodiff, NdArray};
        use burn::module::Param;
        use burn::nn::{Linear, LinearConfig};
        type B = Autodiff<NdArray<f32>>;
        let device = Default::default();
        let mut lin: Linear<B> = LinearConfig::new(2, 1).init(&device);
        lin.weight = Param::from_tensor(Tensor::from_data([[1.0f32], [2.0]], &device));
        lin.bias = Some(Param::from_tensor(Tensor::from_data([0.5f32], &device)));
        let grads_of = |lin: &Linear<B>| {
            let x = Tensor::<B, 2>::from_data([[3.0f32, 4.0]], &device);
            let y = lin.forward(x).sum();
            assert_eq!(y.clone().into_scalar(), 11.5);
            GradientsParams::from_grads(y.backward(), lin)
        };
        let grads = grads_of(&lin);
        let norm = global_grad_norm::<B, _>(&lin, &grads);
        assert!((norm - 26f64.sqrt()).abs() < 1e-6, "{norm}");

        // Above the bound: every gradient scaled by 1 / (sqrt 26 + 1e-6), so the norm becomes 1.
        let mut clipped = grads_of(&lin);
        let before = clip_global_norm::<B, _>(&lin, &mut clipped, 1.0);
        assert!((before - 26f64.sqrt()).abs() < 1e-6);
        assert!((global_grad_norm::<B, _>(&lin, &clipped) - 1.0).abs() < 1e-5);
        let w: Vec<f32> = clipped
            .get::<NdArray<f32>, 2>(lin.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let k = 1.0 / (26f32.sqrt() + 1e-6);
        assert!(
            (w[0] - 3.0 * k).abs() < 1e-6 && (w[1] - 4.0 * k).abs() < 1e-6,
            "{w:?}"
        );

        // Below the bound: untouched.
        let mut kept = grads_of(&lin);
        clip_global_norm::<B, _>(&lin, &mut kept, 10.0);
        let b: Vec<f32> = kept
            .get::<NdArray<f32>, 1>(lin.bias.as_ref().unwrap().id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(b, vec![1.0]);
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(3.0, 1.0), 1.0 / (3.0 + 1e-6));
    }
}
