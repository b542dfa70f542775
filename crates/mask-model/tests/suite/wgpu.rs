//! The model on wgpu (Mesa's lavapipe in CI): inference on burn's default fused backend, one
//! training run on the unfused backend (mask-attn's block-sparse kernel gives wrong forwards
//! under `Autodiff<Wgpu>` with fusion; see docs/architecture.md).

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use mask_attn::{AllowAll, AttnKernel, KeyPadding};
use mask_model::*;

use crate::common::*;
use crate::hf_reference::*;
use crate::shapes::{images, keep_lists, small_mae};

type Gpu = burn::backend::Wgpu;
type GpuUnfused = burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
type GpuTrain = burn::backend::Autodiff<GpuUnfused>;

#[test]
fn wgpu_mlm_matches_pytorch_logits() {
    let (ids_flat, lengths, want) = reference_batch();
    let device = Default::default();
    for kernel in [
        AttnKernel::Reference,
        AttnKernel::BlockSparse,
        AttnKernel::Fused,
    ] {
        let mut enc = tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0);
        enc.transformer.kernel = kernel;
        let model = MlmConfig::new(enc).init::<Gpu>(&device).unwrap();
        let model = import_hf_bert_mlm(model, REFERENCE, "bert_reference", &device).unwrap();
        let x = ids_tensor::<Gpu>("input_ids", &ids_flat, 2, VOCAB, &device).unwrap();
        let mask = KeyPadding::from_lengths(&lengths, 12).unwrap();
        let got = values(model.forward(x, &mask).unwrap());
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "wgpu {kernel:?}: max |ours - HF| = {diff}");
    }
}

#[test]
fn wgpu_padding_invariance_and_other_front_ends() {
    let device = Default::default();
    let model = MlmConfig::new(tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.0))
        .init::<Gpu>(&device)
        .unwrap();
    let a = seq(7, 1);
    let solo = values(
        model
            .encoder
            .forward(ids::<Gpu>(std::slice::from_ref(&a), &device), &AllowAll)
            .unwrap(),
    );
    let mut p = a.clone();
    p.resize(20, 0);
    let mask = KeyPadding::from_lengths(&[7], 20).unwrap();
    let padded = values(
        model
            .encoder
            .forward(ids::<Gpu>(&[p], &device), &mask)
            .unwrap(),
    );
    let diff = max_abs_diff(&padded[..7 * 32], &solo);
    assert!(diff < 1e-4, "wgpu padding invariance: {diff}");

    let mae = small_mae().init::<Gpu>(&device).unwrap();
    let idx = MaeIndices::<Gpu>::from_keep(&keep_lists(2, 49, 12), 49, &device).unwrap();
    let out = mae.forward_mae(images::<Gpu>(2, &device), &idx).unwrap();
    assert_eq!(out.pred.dims(), [2, 49, 16]);
    assert!(values(out.loss())[0].is_finite());

    let rec = Bert4RecConfig::new(20)
        .with_max_len(8)
        .with_d_model(16)
        .with_d_ff(32);
    let model = rec.init::<Gpu>(&device).unwrap();
    let x = ids::<Gpu>(&[vec![1, 2, 3, 21]], &device);
    let c = Tensor::<Gpu, 2, Int>::from_data([[1i64, 2, 3]], &device);
    assert_eq!(model.score(x, &AllowAll, &[3], c).unwrap().dims(), [1, 3]);
}

#[test]
fn wgpu_training_steps_reduce_the_loss() {
    let device = Default::default();
    let mut model = MlmConfig::new(tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0))
        .init::<GpuTrain>(&device)
        .unwrap();
    let mut optim = AdamWConfig::new().init::<GpuTrain, MlmModel<GpuTrain>>();
    let targets = MaskedTargets {
        positions: vec![1, 4, 9, 13, 19, 22],
        targets: vec![3, 8, 21, 30, 11, 2],
    };
    let mask = KeyPadding::from_lengths(&[12, 9], 12).unwrap();
    let mut losses = vec![];
    for _ in 0..5 {
        let x = ids::<GpuTrain>(&[seq(12, 1), seq(12, 2)], &device);
        let (p, t) = targets.to_tensors::<GpuTrain>(&device);
        let loss = masked_lm_loss(model.forward_at(x, &mask, p).unwrap(), t);
        losses.push(values(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[4] < losses[0] * 0.8,
        "loss did not fall on wgpu: {losses:?}"
    );
}
