//! The model on burn-flex (burn's gemm-based SIMD CPU backend, the CLI's default): the same
//! PyTorch conformance as NdArray with the same tolerances (HF logits within 1e-4, f32
//! gradients within 5e-4 of each tensor's scale), padding invariance, the other front ends, and
//! a training run that learns.

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use mask_attn::{AllowAll, AttnKernel, KeyPadding};
use mask_model::*;
use safetensors::SafeTensors;

use crate::common::*;
use crate::hf_reference::*;
use crate::shapes::{images, keep_lists, small_mae};

type Flex = burn::backend::Flex;
type FlexTrain = burn::backend::Autodiff<Flex>;

#[test]
fn flex_mlm_matches_pytorch_logits() {
    let (ids_flat, lengths, want) = reference_batch();
    let device = Default::default();
    for kernel in [
        AttnKernel::Reference,
        AttnKernel::BlockSparse,
        AttnKernel::Fused,
    ] {
        let mut enc = tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0);
        enc.transformer.kernel = kernel;
        let model = MlmConfig::new(enc).init::<Flex>(&device).unwrap();
        let model = import_hf_bert_mlm(model, REFERENCE, "bert_reference", &device).unwrap();
        let x = ids_tensor::<Flex>("input_ids", &ids_flat, 2, VOCAB, &device).unwrap();
        let mask = KeyPadding::from_lengths(&lengths, 12).unwrap();
        let got = values(model.forward(x, &mask).unwrap());
        let diff = max_abs_diff(&got, &want);
        eprintln!("flex {kernel:?}: max |ours - HF| = {diff:e}");
        assert!(diff < 1e-4, "flex {kernel:?}: max |ours - HF| = {diff}");
    }
}

#[test]
fn flex_gradients_match_pytorch_in_float32() {
    let st = SafeTensors::deserialize(REFERENCE).unwrap();
    for (name, got) in our_gradients::<FlexTrain>(AttnKernel::BlockSparse, DType::F32) {
        let want = floats(&st, &format!("grad.{name}"))
            .into_iter()
            .map(f64::from)
            .collect();
        let (diff, scale) = compare(name, got, want);
        eprintln!("flex f32 {name}: max |ours - torch| = {diff:e} (scale {scale:.1})");
        assert!(diff < 5e-4 * scale, "{name}: {diff} (scale {scale})");
    }
}

#[test]
fn flex_padding_invariance_and_other_front_ends() {
    let device = Default::default();
    let model = MlmConfig::new(tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.0))
        .init::<Flex>(&device)
        .unwrap();
    let a = seq(7, 1);
    let solo = values(
        model
            .encoder
            .forward(ids::<Flex>(std::slice::from_ref(&a), &device), &AllowAll)
            .unwrap(),
    );
    let mut p = a.clone();
    p.resize(20, 0);
    let mask = KeyPadding::from_lengths(&[7], 20).unwrap();
    let padded = values(
        model
            .encoder
            .forward(ids::<Flex>(&[p], &device), &mask)
            .unwrap(),
    );
    let diff = max_abs_diff(&padded[..7 * 32], &solo);
    assert!(diff < 1e-4, "flex padding invariance: {diff}");

    let mae = small_mae().init::<Flex>(&device).unwrap();
    let idx = MaeIndices::<Flex>::from_keep(&keep_lists(2, 49, 12), 49, &device).unwrap();
    let out = mae.forward_mae(images::<Flex>(2, &device), &idx).unwrap();
    assert_eq!(out.pred.dims(), [2, 49, 16]);
    assert!(values(out.loss())[0].is_finite());

    let rec = Bert4RecConfig::new(20)
        .with_max_len(8)
        .with_d_model(16)
        .with_d_ff(32);
    let model = rec.init::<Flex>(&device).unwrap();
    let x = ids::<Flex>(&[vec![1, 2, 3, 21]], &device);
    let c = Tensor::<Flex, 2, Int>::from_data([[1i64, 2, 3]], &device);
    assert_eq!(model.score(x, &AllowAll, &[3], c).unwrap().dims(), [1, 3]);
}

#[test]
fn flex_training_steps_reduce_the_loss() {
    let device = Default::default();
    let mut model = MlmConfig::new(tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0))
        .init::<FlexTrain>(&device)
        .unwrap();
    let mut optim = AdamWConfig::new().init::<FlexTrain, MlmModel<FlexTrain>>();
    let targets = MaskedTargets {
        positions: vec![1, 4, 9, 13, 19, 22],
        targets: vec![3, 8, 21, 30, 11, 2],
    };
    let mask = KeyPadding::from_lengths(&[12, 9], 12).unwrap();
    let mut losses = vec![];
    for _ in 0..5 {
        let x = ids::<FlexTrain>(&[seq(12, 1), seq(12, 2)], &device);
        let (p, t) = targets.to_tensors::<FlexTrain>(&device);
        let loss = masked_lm_loss(model.forward_at(x, &mask, p).unwrap(), t);
        losses.push(values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[4] < losses[0] * 0.8,
        "loss did not fall on flex: {losses:?}"
    );
}
