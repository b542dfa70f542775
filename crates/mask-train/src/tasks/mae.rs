//! Masked image modelling with a ViT-MAE (He et al. 2021): patches hidden by a `mask-core`
//! patch policy (MAE random or BEiT block-wise; static or dynamic), the encoder sees the visible
//! ones only, the decoder reconstructs the hidden ones (normalised-pixel targets), the loss is
//! the MSE over hidden patches. Evaluation: masked-patch MSE on test images under fixed masks,
//! the same for every run (seed `eval_seed`, epoch 0).
//!
//! Legend: B images, N patches, K visible, P pixels per patch, d encoder width.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{PatchMask, PatchMasker, PatchMaskingConfig};
use mask_data::collate::Fnv;
use mask_data::image::ImageSet;
use mask_data::{BatchSchedule, EpochOrder};
use mask_model::{MaeIndices, VitMae, VitMaeConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::task::{BatchInfo, Metrics, TaskOutput, TrainTask};

/// Mean and standard deviation of Fashion-MNIST's training pixels in `[0, 1]` (input
/// normalisation, as MAE normalises with dataset statistics).
pub const PIXEL_MEAN: f32 = 0.2860;
/// See [`PIXEL_MEAN`].
pub const PIXEL_STD: f32 = 0.3530;

/// Images `rows` of `set` as `[B * H * W]` normalised pixels.
pub fn normalised_pixels(set: &ImageSet, rows: &[usize]) -> Vec<f32> {
    let px = set.images.rows * set.images.cols;
    let mut data = Vec::with_capacity(rows.len() * px);
    for &i in rows {
        data.extend(
            set.images
                .image(i)
                .iter()
                .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD),
        );
    }
    data
}

/// Images `rows` of `set` as a `[B, 1, H, W]` tensor of normalised pixels.
pub fn image_tensor<B: Backend>(
    set: &ImageSet,
    rows: &[usize],
    device: &B::Device,
) -> Tensor<B, 4> {
    let (h, w) = (set.images.rows, set.images.cols);
    Tensor::from_data(
        TensorData::new(normalised_pixels(set, rows), [rows.len(), 1, h, w]),
        device,
    )
}

fn indices<B: Backend>(
    masks: &[PatchMask],
    n_patches: usize,
    device: &B::Device,
) -> Result<MaeIndices<B>> {
    let keep: Vec<Vec<usize>> = masks
        .iter()
        .map(|m| m.keep.iter().map(|&i| i as usize).collect())
        .collect();
    Ok(MaeIndices::from_keep(&keep, n_patches, device)?)
}

/// Masked-patch reconstruction metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaeEval {
    /// MSE over hidden patches, normalised-pixel targets (the training loss).
    pub recon_mse: f64,
    /// The same in pixel units (`[0, 1]`): predictions un-normalised with each patch's mean and
    /// standard deviation.
    pub recon_pixel_mse: f64,
}

impl Metrics for MaeEval {
    fn score(&self) -> f64 {
        self.recon_mse
    }
    fn values(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("recon_mse", self.recon_mse),
            ("recon_pixel_mse", self.recon_pixel_mse),
        ]
    }
}

/// Reconstruction of a set under given masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconstruction {
    /// The metrics.
    pub eval: MaeEval,
    /// Un-normalised predictions of the first images asked for, pixels in `[0, 1]`, `[N * P]`
    /// per image in patch order (visible patches: the original pixels).
    pub shown: Vec<Vec<f32>>,
}

/// Masked-patch MSE of `model` on `set` with one mask per image, and the reconstructions of
/// the first `keep_shown` images.
pub fn reconstruct<B: Backend>(
    model: &VitMae<B>,
    set: &ImageSet,
    masks: &[PatchMask],
    keep_shown: usize,
    device: &B::Device,
) -> Result<Reconstruction> {
    if masks.len() < set.len() || masks.is_empty() {
        return Err(invalid(
            "masks",
            masks.len(),
            format!("one per image ({})", set.len()),
        ));
    }
    let n_patches = masks[0].n_patches();
    let (mut sum, mut pix_sum, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut shown = vec![];
    let rows: Vec<usize> = (0..set.len()).collect();
    let to_vec = |t: Tensor<B, 3>| -> Result<Vec<f32>> {
        t.into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| invalid("reconstruction", format!("{e:?}"), "a float tensor"))
    };
    for chunk in rows.chunks(250) {
        let x = image_tensor::<B>(set, chunk, device);
        let idx = indices::<B>(&masks[chunk[0]..chunk[0] + chunk.len()], n_patches, device)?;
        let out = model.forward_mae(x.clone(), &idx)?;
        let [_, _, p] = out.pred.dims();
        let pred = to_vec(out.pred)?;
        let target = to_vec(out.target)?;
        let pixels: Vec<f32> = to_vec(model.patchify(x)?)?
            .into_iter()
            .map(|v| v * PIXEL_STD + PIXEL_MEAN)
            .collect();
        for (b, &img) in chunk.iter().enumerate() {
            let mut un = vec![];
            if img < keep_shown {
                un = pixels[b * n_patches * p..(b + 1) * n_patches * p].to_vec();
            }
            for &j in &masks[img].masked {
                let at = (b * n_patches + j as usize) * p;
                let (pr, tg, px) = (&pred[at..at + p], &target[at..at + p], &pixels[at..at + p]);
                sum += pr
                    .iter()
                    .zip(tg)
                    .map(|(a, t)| ((a - t) as f64).powi(2))
                    .sum::<f64>();
                let mean = px.iter().sum::<f32>() / p as f32;
                let var =
                    px.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / (p as f32 - 1.0).max(1.0);
                let std = (var + 1e-6 / (PIXEL_STD * PIXEL_STD)).sqrt();
                for (k, (&a, &t)) in pr.iter().zip(px).enumerate() {
                    let v = (a * std + mean).clamp(0.0, 1.0);
                    pix_sum += ((v - t) as f64).powi(2);
                    if img < keep_shown {
                        un[j as usize * p + k] = v;
                    }
                }
                count += p;
            }
            if img < keep_shown {
                shown.push(un);
            }
        }
    }
    let count = count.max(1) as f64;
    Ok(Reconstruction {
        eval: MaeEval {
            recon_mse: sum / count,
            recon_pixel_mse: pix_sum / count,
        },
        shown,
    })
}

/// Frozen, mean-pooled encoder features of every image of `set`: `([n * d], d)`.
pub fn features<B: Backend>(
    model: &VitMae<B>,
    set: &ImageSet,
    device: &B::Device,
) -> Result<(Vec<f32>, usize)> {
    let rows: Vec<usize> = (0..set.len()).collect();
    let (mut out, mut d) = (vec![], 0);
    for chunk in rows.chunks(500) {
        let f = model.features(image_tensor::<B>(set, chunk, device))?;
        d = f.dims()[1];
        out.extend(
            f.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| invalid("features", format!("{e:?}"), "a float tensor"))?,
        );
    }
    Ok((out, d))
}

/// The fixed evaluation masks of `n` images: `masking` at `(eval_seed, epoch 0, image index)`.
pub fn eval_masks(
    masking: &PatchMaskingConfig,
    eval_seed: u64,
    n: usize,
) -> Result<Vec<PatchMask>> {
    let masker = masking.build()?;
    Ok((0..n as u64)
        .map(|i| masker.mask(eval_seed, 0, i))
        .collect())
}

/// A batch of images with their masks.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Epoch.
    pub epoch: u64,
    /// Normalised pixels `[B * H * W]`.
    pub pixels: Vec<f32>,
    /// One mask per image.
    pub masks: Vec<PatchMask>,
}

/// The MAE pretraining task.
#[derive(Debug, Clone)]
pub struct MaeTask {
    config: VitMaeConfig,
    masking: PatchMaskingConfig,
    masker: PatchMasker,
    train: Arc<ImageSet>,
    test: Arc<ImageSet>,
    eval_masks: Arc<Vec<PatchMask>>,
    eval_seed: u64,
    order: EpochOrder,
}

impl MaeTask {
    /// Pretrains `config`'s ViT-MAE on `train` with `masking` (its grid must match the
    /// model's), evaluated on `test` under fixed masks drawn from `eval_seed` with the same
    /// selection, static.
    pub fn new(
        config: VitMaeConfig,
        masking: PatchMaskingConfig,
        train: Arc<ImageSet>,
        test: Arc<ImageSet>,
        eval_seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        let grid = (config.image_size / config.patch_size) as u32;
        if (masking.grid_h, masking.grid_w) != (grid, grid) {
            return Err(invalid(
                "masking.grid",
                format!("{} x {}", masking.grid_h, masking.grid_w),
                format!("the model's patch grid {grid} x {grid}"),
            ));
        }
        for (what, set) in [("train", &train), ("test", &test)] {
            if set.is_empty() {
                return Err(invalid("images", format!("0 {what}"), "at least one"));
            }
            if (set.images.rows, set.images.cols) != (config.image_size, config.image_size) {
                return Err(invalid(
                    "images",
                    format!("{what} {} x {}", set.images.rows, set.images.cols),
                    format!("{0} x {0} (the model's image_size)", config.image_size),
                ));
            }
        }
        let eval_masking = PatchMaskingConfig::new(grid, grid, masking.selection);
        let eval = eval_masks(&eval_masking, eval_seed, test.len())?;
        Ok(Self {
            masker: masking.build()?,
            config,
            masking,
            train,
            test,
            eval_masks: Arc::new(eval),
            eval_seed,
            order: EpochOrder::default(),
        })
    }

    /// The fixed evaluation masks of the test images.
    pub fn eval_masks(&self) -> &[PatchMask] {
        &self.eval_masks
    }
}

impl<B: AutodiffBackend> TrainTask<B> for MaeTask {
    type Model = VitMae<B>;
    type Batch = ImageBatch;
    type Metrics = MaeEval;

    fn kind(&self) -> &'static str {
        "mae"
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "model": self.config,
            "masking": self.masking,
            "train_images": self.train.len(),
            "test_images": self.test.len(),
            "eval_seed": self.eval_seed,
        })
    }

    fn bindings(&self) -> Vec<(String, String)> {
        let mut h = Fnv::default();
        for set in [&self.train, &self.test] {
            h.eat(set.len() as u32);
            set.images
                .pixels
                .chunks(4)
                .for_each(|c| h.eat(c.iter().fold(0u32, |a, &b| (a << 8) | b as u32)));
            set.labels.iter().for_each(|&l| h.eat(l as u32));
        }
        vec![("data".to_string(), format!("{:016x}", h.0))]
    }

    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn init_model(&self, device: &B::Device) -> Result<VitMae<B>> {
        Ok(self.config.init::<B>(device)?)
    }

    fn batch(&mut self, seed: u64, step: u64, batch_size: usize) -> Result<ImageBatch> {
        let schedule = BatchSchedule::new(self.train.len(), batch_size, seed)?;
        let epoch = schedule.epoch_of(step);
        let rows = schedule.indices_at_cached(step, &mut self.order);
        let masks = rows
            .iter()
            .map(|&i| self.masker.mask(seed, epoch, i as u64))
            .collect();
        Ok(ImageBatch {
            epoch,
            pixels: normalised_pixels(&self.train, &rows),
            masks,
        })
    }

    fn describe(&self, b: &ImageBatch) -> BatchInfo {
        let mut h = Fnv::default();
        b.pixels.iter().for_each(|v| h.eat(v.to_bits()));
        b.masks.iter().flat_map(|m| &m.keep).for_each(|&k| h.eat(k));
        BatchInfo {
            epoch: b.epoch,
            examples: b.masks.len(),
            tokens: b.masks.iter().map(|m| m.keep.len()).sum(),
            items: b.masks.iter().map(|m| m.masked.len()).sum(),
            digest: h.0,
            task: None,
        }
    }

    fn shard(&self, b: &ImageBatch, rank: usize, world: usize) -> Option<ImageBatch> {
        let rows = crate::task::shard_rows(b.masks.len(), rank, world);
        let pixels_per_image = b.pixels.len() / b.masks.len().max(1);
        Some(ImageBatch {
            epoch: b.epoch,
            pixels: super::pick_rows(&b.pixels, pixels_per_image, &rows),
            masks: rows.iter().map(|&r| b.masks[r].clone()).collect(),
        })
    }

    fn forward(
        &self,
        model: &VitMae<B>,
        b: &ImageBatch,
        device: &B::Device,
    ) -> Result<Option<TaskOutput<B>>> {
        let s = self.config.image_size;
        let n = b.masks.len();
        let x = Tensor::<B, 4>::from_data(TensorData::new(b.pixels.clone(), [n, 1, s, s]), device);
        let idx = indices::<B>(&b.masks, self.masker.n_patches(), device)?;
        Ok(Some(TaskOutput {
            loss: model.forward_mae(x, &idx)?.loss(),
            per_item: None,
        }))
    }

    fn evaluate(&self, model: &VitMae<B::InnerBackend>, device: &B::Device) -> Result<MaeEval> {
        Ok(reconstruct(model, &self.test, &self.eval_masks, 0, device)?.eval)
    }
}
