//! Masked image modelling on Fashion-MNIST: an IDX reader, the embedded subset, and a study that
//! pretrains a small ViT-MAE (He et al. 2021) with static and dynamic patch masking, then
//! measures masked-patch reconstruction on held-out images (with fixed evaluation masks, the
//! same for every arm) and a linear probe on frozen encoder features (MAE section 4.1), against
//! a randomly initialised encoder.
//!
//! Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence, Zalando SE). The first 10,000
//! training and first 2,000 test images are embedded (see `data/README.md`); full IDX files are
//! read by path with [`read_idx_images`] / [`read_idx_labels`] (gzip or raw, by magic bytes).

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{PatchMask, PatchMasker, PatchMaskingConfig, PatchSelectionConfig, Regime};
use mask_model::config::NormPlacement;
use mask_model::{token_cross_entropy, MaeIndices, TransformerConfig, VitMae, VitMaeConfig};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::{invalid, io_error, Result, TrainError};
use crate::metrics::{ClassificationReport, ConfusionMatrix};
use crate::pipeline::EpochOrder;
use crate::schedule::{lr_at, Decay};

static TRAIN_IMAGES_GZ: &[u8] =
    include_bytes!("../data/fashion-mnist/train10k-images-idx3-ubyte.gz");
static TRAIN_LABELS_GZ: &[u8] =
    include_bytes!("../data/fashion-mnist/train10k-labels-idx1-ubyte.gz");
static TEST_IMAGES_GZ: &[u8] = include_bytes!("../data/fashion-mnist/test2k-images-idx3-ubyte.gz");
static TEST_LABELS_GZ: &[u8] = include_bytes!("../data/fashion-mnist/test2k-labels-idx1-ubyte.gz");

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Mean and standard deviation of Fashion-MNIST's training pixels in `[0, 1]` (input
/// normalisation, as MAE normalises with dataset statistics).
const PIXEL_MEAN: f32 = 0.2860;
const PIXEL_STD: f32 = 0.3530;

/// Errors reading IDX files (LeCun's MNIST format, big-endian).
#[derive(Debug, Error)]
pub enum IdxError {
    /// The file does not start with the expected magic number.
    #[error("{what}: magic number {got:#010x}, expected {expected:#010x} ({kind})")]
    BadMagic {
        /// The file or buffer.
        what: String,
        /// Magic number found.
        got: u32,
        /// Magic number expected.
        expected: u32,
        /// What that magic means.
        kind: &'static str,
    },
    /// Image dimensions are zero or absurd.
    #[error("{what}: image dimensions {rows} x {cols} are not supported (1..=4096 each)")]
    BadDims {
        /// The file or buffer.
        what: String,
        /// Rows per image.
        rows: u32,
        /// Columns per image.
        cols: u32,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("{what}: header says {expected} bytes of data, found {got}")]
    Truncated {
        /// The file or buffer.
        what: String,
        /// Bytes the header announces (after the header).
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// Images and labels files disagree on the number of examples.
    #[error("{images} images but {labels} labels")]
    CountMismatch {
        /// Images in the images file.
        images: usize,
        /// Labels in the labels file.
        labels: usize,
    },
    /// A gzip stream could not be decoded.
    #[error("{what}: cannot decompress: {source}")]
    Gzip {
        /// The file or buffer.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl From<IdxError> for TrainError {
    fn from(e: IdxError) -> Self {
        TrainError::Idx(e)
    }
}

/// Grey images, `count` of `rows x cols` `u8` pixels, row-major, image after image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Images with class labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// The images.
    pub images: Images,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Pairs images and labels, refusing different counts.
    pub fn new(images: Images, labels: Vec<u8>) -> Result<Self> {
        if images.count != labels.len() {
            return Err(IdxError::CountMismatch {
                images: images.count,
                labels: labels.len(),
            }
            .into());
        }
        Ok(Self { images, labels })
    }

    /// Reads an images file and a labels file (IDX, gzip or raw).
    pub fn from_files(images: &Path, labels: &Path) -> Result<Self> {
        Self::new(read_idx_images(images)?, read_idx_labels(labels)?)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` images (all of them if fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        let px = self.images.rows * self.images.cols;
        Self {
            images: Images {
                count: n,
                rows: self.images.rows,
                cols: self.images.cols,
                pixels: self.images.pixels[..n * px].to_vec(),
            },
            labels: self.labels[..n].to_vec(),
        }
    }
}

fn maybe_gunzip(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|source| IdxError::Gzip {
                what: what.to_string(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn header(bytes: &[u8], len: usize, what: &str) -> Result<Vec<u32>> {
    if bytes.len() < len {
        return Err(IdxError::Truncated {
            what: format!("{what} (header)"),
            expected: len as u64,
            got: bytes.len() as u64,
        }
        .into());
    }
    Ok((0..len / 4)
        .map(|i| be_u32(bytes, 4 * i).unwrap_or(0))
        .collect())
}

/// Parses an IDX images buffer (magic `0x00000803`; gzip-compressed or raw).
pub fn parse_idx_images(bytes: Vec<u8>, what: &str) -> Result<Images> {
    let bytes = maybe_gunzip(bytes, what)?;
    let h = header(&bytes, 16, what)?;
    if h[0] != 0x0803 {
        return Err(IdxError::BadMagic {
            what: what.to_string(),
            got: h[0],
            expected: 0x0803,
            kind: "IDX u8 images, 3 dimensions",
        }
        .into());
    }
    let (count, rows, cols) = (h[1], h[2], h[3]);
    if !(1..=4096).contains(&rows) || !(1..=4096).contains(&cols) {
        return Err(IdxError::BadDims {
            what: what.to_string(),
            rows,
            cols,
        }
        .into());
    }
    let expected = count as u64 * rows as u64 * cols as u64;
    let got = (bytes.len() - 16) as u64;
    if got != expected {
        return Err(IdxError::Truncated {
            what: what.to_string(),
            expected,
            got,
        }
        .into());
    }
    Ok(Images {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an IDX labels buffer (magic `0x00000801`; gzip-compressed or raw).
pub fn parse_idx_labels(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    let bytes = maybe_gunzip(bytes, what)?;
    let h = header(&bytes, 8, what)?;
    if h[0] != 0x0801 {
        return Err(IdxError::BadMagic {
            what: what.to_string(),
            got: h[0],
            expected: 0x0801,
            kind: "IDX u8 labels, 1 dimension",
        }
        .into());
    }
    let got = (bytes.len() - 8) as u64;
    if got != h[1] as u64 {
        return Err(IdxError::Truncated {
            what: what.to_string(),
            expected: h[1] as u64,
            got,
        }
        .into());
    }
    Ok(bytes[8..].to_vec())
}

/// Reads an IDX images file (`*-images-idx3-ubyte`, optionally `.gz`).
pub fn read_idx_images(path: &Path) -> Result<Images> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    parse_idx_images(bytes, &path.display().to_string())
}

/// Reads an IDX labels file (`*-labels-idx1-ubyte`, optionally `.gz`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    parse_idx_labels(bytes, &path.display().to_string())
}

/// The embedded Fashion-MNIST subset: the first 10,000 training and first 2,000 test images.
pub fn fashion_mnist_subset() -> Result<(ImageSet, ImageSet)> {
    let train = ImageSet::new(
        parse_idx_images(TRAIN_IMAGES_GZ.to_vec(), "embedded train10k images")?,
        parse_idx_labels(TRAIN_LABELS_GZ.to_vec(), "embedded train10k labels")?,
    )?;
    let test = ImageSet::new(
        parse_idx_images(TEST_IMAGES_GZ.to_vec(), "embedded test2k images")?,
        parse_idx_labels(TEST_LABELS_GZ.to_vec(), "embedded test2k labels")?,
    )?;
    Ok((train, test))
}

/// One pretraining arm: a name and when masks are redrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeArm {
    /// Row name in the report.
    pub name: String,
    /// Static (`dupe_factor`) or dynamic.
    pub regime: Regime,
}

/// ViT-MAE size (pre-LN, no dropout, as MAE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeModelSize {
    /// Patch side (divides 28). Default: 7 (16 patches; 4 visible at 75 %)
    pub patch_size: usize,
    /// Encoder width. Default: 64
    pub d_model: usize,
    /// Encoder blocks. Default: 3
    pub n_layers: usize,
    /// Encoder heads. Default: 4
    pub n_heads: usize,
    /// Encoder feed-forward width. Default: 128
    pub d_ff: usize,
    /// Decoder width. Default: 32
    pub decoder_d_model: usize,
    /// Decoder blocks. Default: 2
    pub decoder_layers: usize,
    /// Decoder heads. Default: 2
    pub decoder_heads: usize,
    /// Decoder feed-forward width. Default: 64
    pub decoder_d_ff: usize,
}

impl Default for MaeModelSize {
    fn default() -> Self {
        Self {
            patch_size: 7,
            d_model: 64,
            n_layers: 3,
            n_heads: 4,
            d_ff: 128,
            decoder_d_model: 32,
            decoder_layers: 2,
            decoder_heads: 2,
            decoder_d_ff: 64,
        }
    }
}

impl MaeModelSize {
    /// The model config for `image_size x image_size` grey images and `n_classes` classes.
    pub fn vit_mae(&self, image_size: usize, n_classes: usize) -> VitMaeConfig {
        let blocks = |d, heads, layers, ff| {
            TransformerConfig::new(d, heads, layers, ff)
                .with_norm(NormPlacement::PreLn)
                .with_layer_norm_eps(1e-6)
                .with_dropout(0.0)
                .with_attn_dropout(0.0)
        };
        VitMaeConfig::new(
            blocks(self.d_model, self.n_heads, self.n_layers, self.d_ff),
            blocks(
                self.decoder_d_model,
                self.decoder_heads,
                self.decoder_layers,
                self.decoder_d_ff,
            ),
        )
        .with_image_size(image_size)
        .with_patch_size(self.patch_size)
        .with_channels(1)
        .with_n_classes(n_classes)
        .with_norm_pix_loss(true)
    }
}

/// The MAE study: arms, model, pretraining, evaluation and linear-probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeStudyConfig {
    /// Masking arms, all with the same selection. Default: static (k = 1), dynamic
    pub arms: Vec<MaeArm>,
    /// Patch selection. Default: random, 0.75 (MAE)
    pub selection: PatchSelectionConfig,
    /// Model size.
    pub model: MaeModelSize,
    /// Use at most this many training images (`None`: all). Default: None
    pub train_images: Option<usize>,
    /// Use at most this many test images (`None`: all). Default: None
    pub test_images: Option<usize>,
    /// Pretraining steps per arm. Default: 1200
    pub steps: u64,
    /// Images per pretraining batch. Default: 128
    pub batch_size: usize,
    /// Peak learning rate (MAE: 1.5e-4 * batch / 256 at much larger scale). Default: 1e-3
    pub lr: f64,
    /// Linear warm-up as a fraction of the steps, then half-cosine to 0. Default: 0.05
    pub warmup_ratio: f64,
    /// AdamW weight decay (MAE: 0.05). Default: 0.05
    pub weight_decay: f64,
    /// Seed of initialisation, data order and masks (the same for every arm). Default: 0
    pub seed: u64,
    /// Seed of the fixed evaluation masks (the same for every arm). Default: 12345
    pub eval_seed: u64,
    /// Log the training loss every this many steps. Default: 50
    pub log_every: u64,
    /// Linear-probe epochs over the training features. Default: 30
    pub probe_epochs: u64,
    /// Linear-probe batch size. Default: 256
    pub probe_batch_size: usize,
    /// Linear-probe learning rate (AdamW, cosine). Default: 0.01
    pub probe_lr: f64,
    /// Test images shown in the PNG grid. Default: 8
    pub grid_images: usize,
}

impl Default for MaeStudyConfig {
    fn default() -> Self {
        Self {
            arms: vec![
                MaeArm {
                    name: "static (k=1)".into(),
                    regime: Regime::fully_static(),
                },
                MaeArm {
                    name: "dynamic".into(),
                    regime: Regime::Dynamic {},
                },
            ],
            selection: PatchSelectionConfig::default(),
            model: MaeModelSize::default(),
            train_images: None,
            test_images: None,
            steps: 1200,
            batch_size: 128,
            lr: 1e-3,
            warmup_ratio: 0.05,
            weight_decay: 0.05,
            seed: 0,
            eval_seed: 12345,
            log_every: 50,
            probe_epochs: 30,
            probe_batch_size: 256,
            probe_lr: 0.01,
            grid_images: 8,
        }
    }
}

impl MaeStudyConfig {
    /// A tiny variant for smoke tests (seconds): a 2 x 64 encoder, 512 / 256 images, 40 steps.
    pub fn quick(mut self) -> Self {
        self.model = MaeModelSize {
            d_model: 64,
            n_layers: 2,
            n_heads: 2,
            d_ff: 128,
            decoder_d_model: 32,
            decoder_layers: 1,
            decoder_heads: 2,
            decoder_d_ff: 64,
            ..MaeModelSize::default()
        };
        self.train_images = Some(self.train_images.map_or(512, |n| n.min(512)));
        self.test_images = Some(self.test_images.map_or(256, |n| n.min(256)));
        self.steps = 40;
        self.batch_size = 32;
        self.lr = 2e-3;
        self.log_every = 10;
        self.probe_epochs = 10;
        self.probe_batch_size = 64;
        self.grid_images = 4;
        self
    }

    /// Checks the settings that the model and masker do not check themselves.
    pub fn validate(&self) -> Result<()> {
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one arm"));
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("probe_batch_size", self.probe_batch_size),
        ] {
            if v == 0 {
                return Err(invalid(field, v, "at least 1"));
            }
        }
        if self.steps == 0 {
            return Err(invalid("steps", 0, "at least 1"));
        }
        for (field, v) in [("lr", self.lr), ("probe_lr", self.probe_lr)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(field, v, "a positive number"));
            }
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(invalid(
                "warmup_ratio",
                self.warmup_ratio,
                "a fraction in [0, 1)",
            ));
        }
        for arm in &self.arms {
            arm.regime.validate()?;
        }
        Ok(())
    }
}

/// Linear-probe result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro F1.
    pub macro_f1: f64,
    /// Full report (per class, confusion matrix).
    pub report: ClassificationReport,
}

/// Results of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaeArmReport {
    /// Arm name.
    pub name: String,
    /// Regime.
    pub regime: Regime,
    /// Masked-patch MSE (normalised-pixel targets, the training loss) on the test images with
    /// the fixed evaluation masks, before pretraining.
    pub recon_mse_initial: f64,
    /// The same after pretraining.
    pub recon_mse: f64,
    /// Masked-patch MSE in pixel units (`[0, 1]`), predictions un-normalised with each patch's
    /// mean and standard deviation, after pretraining.
    pub recon_pixel_mse: f64,
    /// Training loss at `(step, loss)`, every `log_every` steps and the last step.
    pub loss_curve: Vec<(u64, f64)>,
    /// Pretraining wall time in seconds.
    pub train_seconds: f64,
    /// Pretraining throughput.
    pub images_per_second: f64,
    /// Linear probe on frozen, mean-pooled encoder features.
    pub probe: ProbeReport,
}

/// Results of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaeReport {
    /// The config that was run.
    pub config: MaeStudyConfig,
    /// Training and test images used.
    pub train_images: usize,
    /// Test images used.
    pub test_images: usize,
    /// One entry per arm.
    pub arms: Vec<MaeArmReport>,
    /// Linear probe on a randomly initialised (untrained) encoder, the baseline.
    pub random_init_probe: ProbeReport,
    /// Masked-patch MSE of the untrained model (the same for every arm: same seed).
    pub random_init_recon_mse: f64,
    /// Path of the PNG grid.
    pub grid_png: String,
}

/// Images `[B, 1, H, W]`, pixels scaled to `[0, 1]` and normalised with the dataset statistics.
fn image_tensor<B: Backend>(set: &ImageSet, rows: &[usize], device: &B::Device) -> Tensor<B, 4> {
    let (h, w) = (set.images.rows, set.images.cols);
    let mut data = Vec::with_capacity(rows.len() * h * w);
    for &i in rows {
        data.extend(
            set.images
                .image(i)
                .iter()
                .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD),
        );
    }
    Tensor::from_data(TensorData::new(data, [rows.len(), 1, h, w]), device)
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

/// Fixed evaluation masks: random 75 % (or the study's selection), seed `eval_seed`, epoch 0.
fn eval_masks(cfg: &MaeStudyConfig, grid: u32, n: usize) -> Result<Vec<PatchMask>> {
    let masker = PatchMaskingConfig::new(grid, grid, cfg.selection).build()?;
    Ok((0..n as u64)
        .map(|i| masker.mask(cfg.eval_seed, 0, i))
        .collect())
}

struct Recon {
    mse: f64,
    pixel_mse: f64,
    /// Un-normalised predictions of the first `grid_images` images, pixels in `[0, 1]`, `[N * P]`.
    shown: Vec<Vec<f32>>,
}

/// Masked-patch MSE on `set` with `masks` (normalised targets and pixel units).
fn evaluate_recon<B: Backend>(
    model: &VitMae<B>,
    set: &ImageSet,
    masks: &[PatchMask],
    keep_shown: usize,
    device: &B::Device,
) -> Result<Recon> {
    let n_patches = masks[0].n_patches();
    let (mut sum, mut pix_sum, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut shown = vec![];
    let rows: Vec<usize> = (0..set.len()).collect();
    for chunk in rows.chunks(250) {
        let x = image_tensor::<B>(set, chunk, device);
        let idx = indices::<B>(&masks[chunk[0]..chunk[0] + chunk.len()], n_patches, device)?;
        let out = model.forward_mae(x.clone(), &idx)?;
        let [_, _, p] = out.pred.dims();
        let pred: Vec<f32> = out.pred.into_data().convert::<f32>().to_vec().expect("f32");
        let target: Vec<f32> = out
            .target
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        // Pixel-space patches in [0, 1] for un-normalisation and the pixel MSE.
        let pixels: Vec<f32> = model
            .patchify(x)?
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32")
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
    Ok(Recon {
        mse: sum / count,
        pixel_mse: pix_sum / count,
        shown,
    })
}

/// Frozen features of every image, `[n * d]`, and `d`.
fn features<B: Backend>(
    model: &VitMae<B>,
    set: &ImageSet,
    device: &B::Device,
) -> Result<(Vec<f32>, usize)> {
    let rows: Vec<usize> = (0..set.len()).collect();
    let mut out = vec![];
    let mut d = 0;
    for chunk in rows.chunks(500) {
        let f = model.features(image_tensor::<B>(set, chunk, device))?;
        d = f.dims()[1];
        out.extend(f.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
    }
    Ok((out, d))
}

/// Logistic regression on standardised features (MAE's linear probe puts a parameter-free
/// BatchNorm before the linear layer: the same thing), trained with AdamW, cosine schedule.
fn linear_probe<B: AutodiffBackend>(
    cfg: &MaeStudyConfig,
    train: (&[f32], &[u8]),
    test: (&[f32], &[u8]),
    d: usize,
    n_classes: usize,
    device: &B::Device,
) -> Result<ProbeReport> {
    let n = train.1.len();
    let mut mean = vec![0.0f64; d];
    let mut sq = vec![0.0f64; d];
    for row in train.0.chunks(d) {
        for (k, &v) in row.iter().enumerate() {
            mean[k] += v as f64;
            sq[k] += (v as f64).powi(2);
        }
    }
    let stats: Vec<(f32, f32)> = (0..d)
        .map(|k| {
            let m = mean[k] / n as f64;
            let var = (sq[k] / n as f64 - m * m).max(0.0);
            (m as f32, (var + 1e-6).sqrt() as f32)
        })
        .collect();
    let standardise = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| (v - stats[i % d].0) / stats[i % d].1)
            .collect()
    };
    let (xtr, xte) = (standardise(train.0), standardise(test.0));
    B::seed(device, cfg.seed);
    let mut head: Linear<B> = LinearConfig::new(d, n_classes).init(device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .init::<B, Linear<B>>();
    let bs = cfg.probe_batch_size.min(n).max(1);
    let per_epoch = (n / bs) as u64;
    let steps = per_epoch * cfg.probe_epochs;
    let mut orders = EpochOrder::default();
    for step in 0..steps {
        let order = orders.get(n, cfg.seed ^ 0x9b0e, step / per_epoch);
        let within = (step % per_epoch) as usize;
        let rows = &order[within * bs..(within + 1) * bs];
        let mut x = Vec::with_capacity(bs * d);
        let mut y = Vec::with_capacity(bs);
        for &r in rows {
            x.extend_from_slice(&xtr[r * d..(r + 1) * d]);
            y.push(train.1[r] as i64);
        }
        let x = Tensor::<B, 2>::from_data(TensorData::new(x, [bs, d]), device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [bs]), device);
        let loss = token_cross_entropy(head.forward(x), y).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &head);
        head = optim.step(
            lr_at(step, steps, cfg.probe_lr, 0, Decay::Cosine, 0.0),
            head,
            grads,
        );
    }
    let head = head.valid();
    let m = test.1.len();
    let x = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(xte, [m, d]), device);
    let predicted: Vec<i64> = head
        .forward(x)
        .argmax(1)
        .reshape([m])
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("i64");
    let mut matrix = ConfusionMatrix::new(n_classes);
    for (&label, p) in test.1.iter().zip(predicted) {
        matrix.add(label as usize, p as usize);
    }
    let report = matrix.report();
    Ok(ProbeReport {
        accuracy: report.accuracy,
        macro_f1: report.macro_f1,
        report,
    })
}

fn probe_model<B: AutodiffBackend>(
    cfg: &MaeStudyConfig,
    model: &VitMae<B::InnerBackend>,
    train: &ImageSet,
    test: &ImageSet,
    n_classes: usize,
    device: &B::Device,
) -> Result<ProbeReport> {
    let (ftr, d) = features(model, train, device)?;
    let (fte, _) = features(model, test, device)?;
    linear_probe::<B>(
        cfg,
        (&ftr, &train.labels),
        (&fte, &test.labels),
        d,
        n_classes,
        device,
    )
}

/// What pretraining one arm returns.
pub struct PretrainedMae<B: AutodiffBackend> {
    /// The trained model.
    pub model: VitMae<B>,
    /// Training loss every `log_every` steps and at the last step.
    pub loss_curve: Vec<(u64, f64)>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Pretrains a fresh ViT-MAE (initialised from `cfg.seed`) on `train` with `arm`'s masks:
/// batch order from `(seed, epoch)`, the mask of image `i` at epoch `e` from
/// `masker.mask(seed, e, i)` (static arms repeat their masks across epochs).
pub fn pretrain_mae<B: AutodiffBackend>(
    cfg: &MaeStudyConfig,
    arm: &MaeArm,
    train: &ImageSet,
    device: &B::Device,
) -> Result<PretrainedMae<B>> {
    let image_size = train.images.rows;
    let model_cfg = cfg.model.vit_mae(image_size, 10);
    let grid = (image_size / cfg.model.patch_size.max(1)) as u32;
    let masker: PatchMasker = PatchMaskingConfig::new(grid, grid, cfg.selection)
        .with_regime(arm.regime)
        .build()?;
    let n = train.len();
    if cfg.batch_size > n {
        return Err(invalid(
            "batch_size",
            cfg.batch_size,
            format!("at most the {n} training images"),
        ));
    }
    B::seed(device, cfg.seed);
    let mut model = model_cfg.init::<B>(device)?;
    let mut optim = AdamWConfig::new()
        .with_beta_2(0.95)
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, VitMae<B>>();
    let per_epoch = (n / cfg.batch_size) as u64;
    let warmup = (cfg.steps as f64 * cfg.warmup_ratio).round() as u64;
    let mut orders = EpochOrder::default();
    let mut masks = vec![PatchMask::default(); cfg.batch_size];
    let mut curve = vec![];
    let start = Instant::now();
    for step in 0..cfg.steps {
        let epoch = step / per_epoch;
        let within = (step % per_epoch) as usize;
        let rows = orders.get(n, cfg.seed, epoch)
            [within * cfg.batch_size..(within + 1) * cfg.batch_size]
            .to_vec();
        for (m, &i) in masks.iter_mut().zip(&rows) {
            masker.mask_into(cfg.seed, epoch, i as u64, m);
        }
        let x = image_tensor::<B>(train, &rows, device);
        let idx = indices::<B>(&masks, masker.n_patches(), device)?;
        let loss = model.forward_mae(x, &idx)?.loss();
        let log = step % cfg.log_every.max(1) == 0 || step + 1 == cfg.steps;
        if log {
            let v = loss.clone().into_scalar().elem::<f64>();
            if !v.is_finite() {
                return Err(invalid(
                    "lr",
                    cfg.lr,
                    format!("a rate at which training stays finite (loss {v} at step {step})"),
                ));
            }
            curve.push((step, v));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = lr_at(step, cfg.steps, cfg.lr, warmup, Decay::Cosine, 0.0);
        model = optim.step(lr, model, grads);
    }
    Ok(PretrainedMae {
        model,
        loss_curve: curve,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs every arm, evaluates, probes, and writes `report.json`, `report.md` and
/// `mae_grid.png` to `out_dir`.
pub fn run_mae_study<B: AutodiffBackend>(
    cfg: &MaeStudyConfig,
    train: &ImageSet,
    test: &ImageSet,
    out_dir: &Path,
    device: &B::Device,
) -> Result<MaeReport> {
    cfg.validate()?;
    let train = cfg
        .train_images
        .map_or_else(|| train.clone(), |n| train.take(n));
    let test = cfg
        .test_images
        .map_or_else(|| test.clone(), |n| test.take(n));
    if train.is_empty() || test.is_empty() {
        return Err(invalid(
            "train_images",
            train.len(),
            "at least one training and one test image",
        ));
    }
    let n_classes = 10;
    if let Some(&l) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= n_classes)
    {
        return Err(invalid("label", l, "a Fashion-MNIST class in 0..10"));
    }
    let image_size = train.images.rows;
    if train.images.cols != image_size
        || test.images.rows != image_size
        || test.images.cols != image_size
    {
        return Err(invalid(
            "images",
            format!(
                "train {}x{}, test {}x{}",
                train.images.rows, train.images.cols, test.images.rows, test.images.cols
            ),
            "square images of one size",
        ));
    }
    let model_cfg = cfg.model.vit_mae(image_size, n_classes);
    model_cfg.validate()?;
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let grid = (image_size / cfg.model.patch_size) as u32;
    let masks = eval_masks(cfg, grid, test.len())?;
    let shown = cfg.grid_images.min(test.len());

    // Baseline: the untrained model (same initialisation as every arm).
    B::seed(device, cfg.seed);
    let init = model_cfg.init::<B>(device)?.valid();
    let init_recon = evaluate_recon(&init, &test, &masks, 0, device)?;
    let random_init_probe = probe_model::<B>(cfg, &init, &train, &test, n_classes, device)?;
    drop(init);

    let mut arms = vec![];
    let mut recon_rows = vec![];
    for arm in &cfg.arms {
        let trained = pretrain_mae::<B>(cfg, arm, &train, device)?;
        let model = trained.model.valid();
        let recon = evaluate_recon(&model, &test, &masks, shown, device)?;
        let probe = probe_model::<B>(cfg, &model, &train, &test, n_classes, device)?;
        recon_rows.push(recon.shown);
        arms.push(MaeArmReport {
            name: arm.name.clone(),
            regime: arm.regime,
            recon_mse_initial: init_recon.mse,
            recon_mse: recon.mse,
            recon_pixel_mse: recon.pixel_mse,
            loss_curve: trained.loss_curve,
            train_seconds: trained.seconds,
            images_per_second: (cfg.steps as usize * cfg.batch_size) as f64
                / trained.seconds.max(1e-9),
            probe,
        });
    }
    let png_path = out_dir.join("mae_grid.png");
    let grid_img = render_grid(&test, &masks, &recon_rows, shown, cfg.model.patch_size);
    write_png(&png_path, &grid_img)?;
    let report = MaeReport {
        config: cfg.clone(),
        train_images: train.len(),
        test_images: test.len(),
        arms,
        random_init_probe,
        random_init_recon_mse: init_recon.mse,
        grid_png: png_path.display().to_string(),
    };
    let json = out_dir.join("report.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).expect("serialisable"),
    )
    .map_err(io_error(&json))?;
    let md = out_dir.join("report.md");
    std::fs::write(&md, mae_table(&report)).map_err(io_error(&md))?;
    Ok(report)
}

/// The results as a markdown table.
pub fn mae_table(r: &MaeReport) -> String {
    let mut s = String::from(
        "| encoder | masked-patch MSE (norm. pixels) | masked-patch MSE (pixels) | probe accuracy | probe macro F1 | pretraining images/s |\n|---|---|---|---|---|---|\n",
    );
    s += &format!(
        "| random init (no pretraining) | {:.4} | - | {:.4} | {:.4} | - |\n",
        r.random_init_recon_mse, r.random_init_probe.accuracy, r.random_init_probe.macro_f1
    );
    for a in &r.arms {
        s += &format!(
            "| {} | {:.4} | {:.5} | {:.4} | {:.4} | {:.0} |\n",
            a.name,
            a.recon_mse,
            a.recon_pixel_mse,
            a.probe.accuracy,
            a.probe.macro_f1,
            a.images_per_second
        );
    }
    s
}

/// A grey picture, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` pixels.
    pub pixels: Vec<u8>,
}

/// Rows: originals, the masked inputs (hidden patches grey), then per arm the reconstruction
/// with the visible patches pasted back (as MAE's figures). One column per test image, each
/// image scaled 3x with a 2-pixel white gutter.
fn render_grid(
    test: &ImageSet,
    masks: &[PatchMask],
    recon: &[Vec<Vec<f32>>],
    shown: usize,
    patch: usize,
) -> GreyImage {
    const SCALE: usize = 3;
    const GAP: usize = 2;
    let side = test.images.rows;
    let g = side / patch;
    let cell = side * SCALE + GAP;
    let rows = 2 + recon.len();
    let (width, height) = (shown * cell + GAP, rows * cell + GAP);
    let mut pixels = vec![255u8; width * height];
    let mut put = |row: usize, col: usize, img: &dyn Fn(usize, usize) -> u8| {
        for y in 0..side * SCALE {
            for x in 0..side * SCALE {
                let (py, px) = (row * cell + GAP + y, col * cell + GAP + x);
                pixels[py * width + px] = img(y / SCALE, x / SCALE);
            }
        }
    };
    for i in 0..shown {
        let orig = test.images.image(i);
        let hidden = masks[i].hidden();
        let is_hidden = |y: usize, x: usize| hidden[(y / patch) * g + x / patch];
        put(0, i, &|y, x| orig[y * side + x]);
        put(1, i, &|y, x| {
            if is_hidden(y, x) {
                96
            } else {
                orig[y * side + x]
            }
        });
        for (a, arm) in recon.iter().enumerate() {
            let patches = &arm[i];
            put(2 + a, i, &|y, x| {
                if is_hidden(y, x) {
                    let (pi, within) =
                        ((y / patch) * g + x / patch, (y % patch) * patch + x % patch);
                    (patches[pi * patch * patch + within] * 255.0)
                        .round()
                        .clamp(0.0, 255.0) as u8
                } else {
                    orig[y * side + x]
                }
            });
        }
    }
    GreyImage {
        width,
        height,
        pixels,
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as PNG chunks use it; bitwise, which
/// is plenty for a few chunks per figure.
fn crc32(chunks: &[&[u8]]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for bytes in chunks {
        for &b in *bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
            }
        }
    }
    !crc
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// An 8-bit greyscale PNG of `img` (PNG 1.2: IHDR, one zlib IDAT of filter-0 scanlines, IEND).
/// Written by hand so that no image crate joins the build: the `png` crate switches on a
/// `miniz_oxide` feature that `flate2` shares with burn, which would rebuild burn.
pub fn png_bytes(img: &GreyImage) -> Vec<u8> {
    use std::io::Write;
    let mut raw = Vec::with_capacity((img.width + 1) * img.height);
    for row in img.pixels.chunks(img.width.max(1)).take(img.height) {
        raw.push(0); // filter type 0 (none)
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).expect("writing to a Vec cannot fail");
    let idat = z.finish().expect("writing to a Vec cannot fail");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(img.width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(img.height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // depth 8, greyscale, deflate, filter 0, no interlace
    let mut out = PNG_SIGNATURE.to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    }
    out
}

/// Writes an 8-bit greyscale PNG (see [`png_bytes`]) atomically.
pub fn write_png(path: &Path, img: &GreyImage) -> Result<()> {
    mask_model::checkpoint::write_atomic(path, &png_bytes(img))?;
    Ok(())
}

/// Reads back an 8-bit greyscale, non-interlaced PNG whose scanlines use filter 0 (what
/// [`png_bytes`] writes), checking the signature and every chunk's CRC; anything else is an
/// error naming what differs. For tests and tools, not a general PNG decoder.
pub fn read_png_grey(bytes: &[u8]) -> std::result::Result<GreyImage, String> {
    use std::io::Read;
    if bytes.len() < 8 || bytes[..8] != PNG_SIGNATURE {
        return Err("not a PNG (bad signature)".into());
    }
    let (mut at, mut header, mut idat) = (8, None, Vec::new());
    loop {
        let take = |at: usize, n: usize| {
            bytes
                .get(at..at + n)
                .ok_or_else(|| format!("truncated at byte {at}"))
        };
        let len = u32::from_be_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize;
        let kind = take(at + 4, 4)?;
        let data = take(at + 8, len)?;
        let crc = u32::from_be_bytes(take(at + 8 + len, 4)?.try_into().expect("4 bytes"));
        if crc != crc32(&[kind, data]) {
            return Err(format!(
                "chunk {} has a bad CRC",
                String::from_utf8_lossy(kind)
            ));
        }
        match kind {
            b"IHDR" if len == 13 => {
                if data[8..13] != [8, 0, 0, 0, 0] {
                    return Err(format!("unsupported IHDR format {:?}", &data[8..13]));
                }
                let w = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
                let h = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes")) as usize;
                header = Some((w, h));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let (width, height) = header.ok_or("no IHDR chunk")?;
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("IDAT does not inflate: {e}"))?;
    if raw.len() != (width + 1) * height {
        return Err(format!(
            "IDAT holds {} bytes, expected {} for {width}x{height}",
            raw.len(),
            (width + 1) * height
        ));
    }
    let mut pixels = Vec::with_capacity(width * height);
    for row in raw.chunks(width + 1) {
        if row[0] != 0 {
            return Err(format!("unsupported scanline filter {}", row[0]));
        }
        pixels.extend_from_slice(&row[1..]);
    }
    Ok(GreyImage {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn png_round_trips_and_crcs_are_checked() {
        // The CRC of the IEND chunk type is the well-known 0xAE426082.
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
        let img = GreyImage {
            width: 5,
            height: 3,
            pixels: (0..15).map(|i| (i * 17) as u8).collect(),
        };
        let bytes = png_bytes(&img);
        let back = read_png_grey(&bytes).unwrap();
        assert_eq!((back.width, back.height, &back.pixels), (5, 3, &img.pixels));
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 20] ^= 1; // inside IDAT
        assert!(read_png_grey(&bad).unwrap_err().contains("bad CRC"));
        assert!(read_png_grey(&bytes[..20])
            .unwrap_err()
            .contains("truncated"));
        assert!(read_png_grey(b"GIF89a..")
            .unwrap_err()
            .contains("signature"));
    }

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn fashion_mnist_subset_is_intact() {
        let raw = |gz: &[u8]| maybe_gunzip(gz.to_vec(), "t").unwrap();
        assert_eq!(
            hex(&raw(TRAIN_IMAGES_GZ)),
            "ed2e37ed5a3a57d212141a69fe0a0de5a7126ffba14ac3f7e76f5f52cc04b1f0"
        );
        assert_eq!(
            hex(&raw(TRAIN_LABELS_GZ)),
            "a69f2dad024ca220a8c4d85f621fdf929042d40c444abde2868903e9220ad517"
        );
        assert_eq!(
            hex(&raw(TEST_IMAGES_GZ)),
            "862035b0a96959b614c9574f4c2b0ae9584ca234813e8d6d7adb7838b12ca46b"
        );
        assert_eq!(
            hex(&raw(TEST_LABELS_GZ)),
            "aa3f574d30afaf0d4d9da084a6f8541771e20693d6a97fae6e9a4953fca8f078"
        );
        let (train, test) = fashion_mnist_subset().unwrap();
        assert_eq!((train.len(), test.len()), (10_000, 2_000));
        assert_eq!((train.images.rows, train.images.cols), (28, 28));
        let mut per_class = [0usize; 10];
        for &l in &train.labels {
            per_class[l as usize] += 1;
        }
        assert_eq!(
            per_class,
            [942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]
        );
    }
}
