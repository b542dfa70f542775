//! One training step under `Autodiff<NdArray>` for every model: every parameter gets a finite,
//! non-zero gradient, and one AdamW step changes every parameter.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_attn::{AllowAll, KeyPadding};
use mask_model::*;

use crate::common::*;
use crate::shapes::{images, keep_lists, small_mae};

struct GradCheck<'a> {
    grads: &'a <AB as AutodiffBackend>::Gradients,
    stack: Vec<String>,
    bad: Vec<String>,
    count: usize,
}

impl ModuleVisitor<AB> for GradCheck<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        self.count += 1;
        let name = self.stack.join(".");
        match param.val().grad(self.grads) {
            None => self.bad.push(format!("{name}: no gradient")),
            Some(g) => {
                let v = values(g);
                if v.iter().any(|x| !x.is_finite()) {
                    self.bad.push(format!("{name}: non-finite gradient"));
                } else if v.iter().all(|&x| x == 0.0) {
                    self.bad.push(format!("{name}: gradient is all zero"));
                }
            }
        }
    }
}

/// Checks gradients of `loss` w.r.t. every parameter of `model`, then takes one AdamW step
/// and checks that every parameter moved.
fn check_step<M: Module<AB> + burn::module::AutodiffModule<AB>>(
    what: &str,
    model: M,
    loss: Tensor<AB, 1>,
) {
    let l = values(loss.clone())[0];
    assert!(l.is_finite() && l > 0.0, "{what}: loss {l}");
    let grads = loss.backward();
    let mut check = GradCheck {
        grads: &grads,
        stack: vec![],
        bad: vec![],
        count: 0,
    };
    model.visit(&mut check);
    assert!(check.count > 0);
    assert!(check.bad.is_empty(), "{what}: {:#?}", check.bad);

    let before: Vec<Vec<f32>> = NamedTensors::by_path(&model)
        .0
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    let grads = GradientsParams::from_grads(grads, &model);
    let mut optim = AdamWConfig::new().init::<AB, M>();
    let model = optim.step(1e-3, model, grads);
    let after = NamedTensors::by_path(&model).0;
    for ((name, _, v), old) in after.iter().zip(&before) {
        assert!(
            max_abs_diff(v, old) > 0.0,
            "{what}: `{name}` did not move in the AdamW step"
        );
    }
}

fn ad_dev() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

#[test]
fn mlm_gradients_reach_every_parameter() {
    for (pos, norm) in variants() {
        let model = MlmConfig::new(tiny(pos, norm, 0.1))
            .init::<AB>(&ad_dev())
            .unwrap();
        let x = ids::<AB>(&[seq(12, 1), seq(12, 2)], &ad_dev());
        let mask = KeyPadding::from_lengths(&[12, 9], 12).unwrap();
        let targets = MaskedTargets {
            positions: vec![1, 4, 13, 19],
            targets: vec![3, 8, 21, 30],
        };
        let (p, t) = targets.to_tensors::<AB>(&ad_dev());
        let logits = model.forward_at(x, &mask, p).unwrap();
        check_step(
            &format!("mlm {pos:?}/{norm:?}"),
            model,
            masked_lm_loss(logits, t),
        );
    }
}

#[test]
fn classifier_gradients_reach_every_parameter() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let config = ClassifierConfig::new(
            tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.1),
            3,
        )
        .with_pooling(pooling);
        let model = config.init::<AB>(&ad_dev()).unwrap();
        let x = ids::<AB>(&[seq(10, 1), seq(10, 2), seq(10, 3)], &ad_dev());
        let mask = KeyPadding::from_lengths(&[10, 6, 8], 10).unwrap();
        let logits = model.forward(x, &mask, Some(&[10, 6, 8])).unwrap();
        let labels = Tensor::<AB, 1, Int>::from_data([0i64, 2, 1], &ad_dev());
        check_step(
            &format!("classifier {pooling:?}"),
            model,
            masked_lm_loss(logits, labels),
        );
    }
}

#[test]
fn causal_lm_gradients_reach_every_parameter() {
    for tie in [true, false] {
        let config = CausalLmConfig::new(tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.1))
            .with_tie_embeddings(tie);
        let model = config.init::<AB>(&ad_dev()).unwrap();
        let s = seq(13, 4);
        let x = ids::<AB>(&[s[..12].to_vec()], &ad_dev());
        let logits = model.forward(x, None).unwrap().reshape([12, VOCAB]);
        let next: Vec<i64> = s[1..].iter().map(|&v| v as i64).collect();
        let t = Tensor::<AB, 1, Int>::from_data(TensorData::new(next, [12]), &ad_dev());
        check_step(
            &format!("causal lm tie={tie}"),
            model,
            masked_lm_loss(logits, t),
        );
    }
}

#[test]
fn vit_mae_gradients_reach_every_parameter() {
    let config = small_mae();
    let model = config.init::<AB>(&ad_dev()).unwrap();
    let idx = MaeIndices::<AB>::from_keep(&keep_lists(2, 49, 12), 49, &ad_dev()).unwrap();
    let out = model.forward_mae(images::<AB>(2, &ad_dev()), &idx).unwrap();
    let logits = model.classify(images::<AB>(2, &ad_dev())).unwrap();
    let labels = Tensor::<AB, 1, Int>::from_data([3i64, 7], &ad_dev());
    let loss = out.loss() + masked_lm_loss(logits, labels);
    check_step("vit mae", model, loss);
}

#[test]
fn bert4rec_gradients_reach_every_parameter() {
    let config = Bert4RecConfig::new(30)
        .with_max_len(16)
        .with_d_model(32)
        .with_d_ff(64);
    let model = config.init::<AB>(&ad_dev()).unwrap();
    let mut items: Vec<u32> = seq(10, 9).iter().map(|i| i % 30 + 1).collect();
    items[9] = config.mask_id();
    let x = ids::<AB>(&[items], &ad_dev());
    let logits = model.forward(x, &AllowAll).unwrap().reshape([10, 32]);
    let targets: Vec<i64> = (0..10).map(|i| (i % 30 + 1) as i64).collect();
    let t = Tensor::<AB, 1, Int>::from_data(TensorData::new(targets, [10]), &ad_dev());
    check_step("bert4rec", model, masked_lm_loss(logits, t));
}
