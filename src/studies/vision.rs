//! The vision study: pretrain a small ViT-MAE on Fashion-MNIST (the embedded 10k / 2k subset or
//! full IDX files) under static and dynamic patch masking, then score masked-patch
//! reconstruction on the test images under fixed masks and a linear probe on the frozen
//! encoder's features, against two baselines: the same probe on a randomly initialised encoder
//! and on the raw pixels. Each run also reports its memorisation gap: reconstruction of training
//! images under the masks it trained on (its last epoch's) against fresh masks, and the study
//! tests its contrasts with paired per-seed intervals (Holm).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{PatchMask, PatchMaskingConfig, PatchSelectionConfig, Regime};
use mask_data::image::{fashion_mnist_subset, GreyImage, ImageSet};
use mask_data::sampler::BatchSchedule;
use mask_model::config::NormPlacement;
use mask_model::{TransformerConfig, VitMae, VitMaeConfig};
use mask_train::tasks::classification::{ClassificationEval, Features, LinearProbeTask};
use mask_train::tasks::mae::{
    eval_masks, features, reconstruct, MaeEval, MaeTask, PIXEL_MEAN, PIXEL_STD,
};
use mask_train::{CheckpointPolicy, Decay, EvalRecord, Learner, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};

use super::arm::{
    check_contrasts, check_unique_slugs, finished_result, run_dir, seed_major, train_run, RunSpec,
};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::report::{as_written, fmt_mean_std, write_json, write_text};
use super::stats::{contrast_pairs, metric_contrasts, MetricContrast};
use super::{forward, invalid, run_parallel, Existing, Result, Sink, StudyError, StudyEvent};

/// One arm: a name and when masks are redrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchArm {
    /// Row name (its slug names the run directory).
    pub name: String,
    /// Static (`dupe_factor`) or dynamic.
    pub regime: Regime,
}

/// ViT-MAE size (pre-LN, no dropout, as MAE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaeModelSize {
    /// Patch side (divides the image side). Default: 7 (16 patches; 4 visible at 75 %)
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

/// The linear probe's settings: the learner's vocabulary with `epochs` for `steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Passes over the training features. Default: 30
    pub epochs: u64,
    /// Rows per step. Default: 256
    pub batch_size: usize,
    /// Peak learning rate. Default: 0.01
    pub lr: f64,
    /// Warm-up steps. Default: 0
    pub warmup_steps: u64,
    /// Decay. Default: cosine
    pub decay: Decay,
    /// AdamW weight decay. Default: 0
    pub weight_decay: f64,
    /// AdamW epsilon. Default: 1e-5
    pub epsilon: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            lr: 0.01,
            warmup_steps: 0,
            decay: Decay::Cosine,
            weight_decay: 0.0,
            epsilon: 1e-5,
        }
    }
}

impl ProbeConfig {
    /// The learner config for `rows` training rows and seed `seed`.
    pub fn train_config(&self, rows: usize, seed: u64) -> TrainConfig {
        let batch_size = self.batch_size.min(rows).max(1);
        TrainConfig {
            steps: self.epochs * (rows / batch_size) as u64,
            batch_size,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay: self.decay,
            weight_decay: self.weight_decay,
            epsilon: self.epsilon,
            grad_clip: None,
            eval_every: 0,
            seed,
            ..TrainConfig::default()
        }
    }
}

/// A vision study (`kind = "vision"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionStudy {
    /// The study kind: `"vision"`.
    pub kind: String,
    /// Name. Default: mae_fashion_mnist
    pub name: String,
    /// Output directory. Default: runs/mae
    pub out_dir: String,
    /// Arms, all with the same selection. Default: static (k = 1), dynamic
    pub arms: Vec<PatchArm>,
    /// Patch selection. Default: random, 0.75 (MAE)
    pub selection: PatchSelectionConfig,
    /// Model size.
    pub model: MaeModelSize,
    /// IDX files `[train images, train labels, test images, test labels]` (absent: the
    /// embedded subset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<[String; 4]>,
    /// Use at most this many training images (absent: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_images: Option<usize>,
    /// Use at most this many test images (absent: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_images: Option<usize>,
    /// Pretraining settings (`seed` is replaced by each of `seeds`). Default: 1200 steps of 128,
    /// lr 1e-3, 60 warm-up steps then cosine, AdamW beta_2 0.95, eps 1e-5, weight decay 0.05,
    /// no clipping
    pub train: TrainConfig,
    /// Seeds. Default: `[0]`
    pub seeds: Vec<u64>,
    /// Seed of the fixed evaluation masks (the same for every arm). Default: 12345
    pub eval_seed: u64,
    /// Linear probe.
    pub probe: ProbeConfig,
    /// Test images shown in the PNG grid. Default: 8
    pub grid_images: usize,
    /// Write a checkpoint every this many steps (and at the end). Default: 300
    pub checkpoint_every: u64,
    /// Training images (the first this many) scored for the memorisation gap; 0 turns it off.
    /// Default: 2000
    pub memorisation_images: usize,
    /// Paired contrasts `[a, b]` (arm names), each tested on test reconstruction MSE, probe
    /// accuracy and the memorisation gap (a - b per seed). Default: `[]` (every pair)
    pub contrasts: Vec<[String; 2]>,
    /// Runs trained at once, each on a thread of its own (results do not depend on it).
    /// Default: 1
    pub jobs: usize,
}

impl Default for VisionStudy {
    fn default() -> Self {
        Self {
            kind: "vision".into(),
            name: "mae_fashion_mnist".into(),
            out_dir: "runs/mae".into(),
            arms: vec![
                PatchArm {
                    name: "static (k=1)".into(),
                    regime: Regime::fully_static(),
                },
                PatchArm {
                    name: "dynamic".into(),
                    regime: Regime::Dynamic {},
                },
            ],
            selection: PatchSelectionConfig::default(),
            model: MaeModelSize::default(),
            images: None,
            train_images: None,
            test_images: None,
            train: TrainConfig {
                steps: 1200,
                batch_size: 128,
                lr: 1e-3,
                warmup_steps: 60,
                decay: Decay::Cosine,
                weight_decay: 0.05,
                beta_2: 0.95,
                epsilon: 1e-5,
                grad_clip: None,
                eval_every: 0,
                ..TrainConfig::default()
            },
            seeds: vec![0],
            eval_seed: 12345,
            probe: ProbeConfig::default(),
            grid_images: 8,
            checkpoint_every: 300,
            memorisation_images: 2000,
            contrasts: vec![],
            jobs: 1,
        }
    }
}

impl VisionStudy {
    /// The smoke version (seconds): a 2 x 64 encoder, 512 / 256 images, 40 steps. Validate
    /// first: it replaces sizes.
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
        self.train.steps = 40;
        self.train.batch_size = 32;
        self.train.lr = 2e-3;
        self.train.warmup_steps = 2;
        self.probe.epochs = 10;
        self.probe.batch_size = 64;
        self.grid_images = 4;
        self.checkpoint_every = 20;
        self.out_dir = format!("{}-quick", self.out_dir);
        self
    }

    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        super::check_kind(&self.kind, "vision")?;
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one arm"));
        }
        check_unique_slugs(self.arms.iter().map(|a| a.name.as_str()))?;
        for arm in &self.arms {
            arm.regime.validate()?;
        }
        if self.seeds.is_empty() {
            return Err(invalid("seeds", "[]", "at least one seed"));
        }
        self.train.validate()?;
        self.probe
            .train_config(self.probe.batch_size.max(1), 0)
            .validate()?;
        if self.probe.epochs == 0 || self.probe.batch_size == 0 {
            return Err(invalid("probe.epochs / probe.batch_size", 0, "at least 1"));
        }
        for (f, v) in [
            ("train_images", self.train_images),
            ("test_images", self.test_images),
        ] {
            if v == Some(0) {
                return Err(invalid(f, 0, "at least 1 (or absent: all)"));
            }
        }
        if self.checkpoint_every == 0 {
            return Err(invalid("checkpoint_every", 0, "at least 1"));
        }
        check_contrasts(&self.contrasts, &self.arms, |a| &a.name)?;
        if self.jobs == 0 {
            return Err(invalid("jobs", 0, "at least 1"));
        }
        let model = self.model.vit_mae(28, 10);
        model.validate()?;
        Ok(())
    }

    /// The images: the embedded subset or the configured files, cut to the configured sizes.
    pub fn load_images(&self) -> Result<(ImageSet, ImageSet)> {
        let (train, test) = match &self.images {
            Some([ti, tl, vi, vl]) => (
                ImageSet::from_files(Path::new(ti), Path::new(tl))?,
                ImageSet::from_files(Path::new(vi), Path::new(vl))?,
            ),
            None => fashion_mnist_subset()?,
        };
        let cut = |s: ImageSet, n: Option<usize>| n.map_or_else(|| s.clone(), |n| s.take(n));
        Ok((cut(train, self.train_images), cut(test, self.test_images)))
    }

    /// The patch-masking policy of `arm` for `grid x grid` patches.
    pub fn masking(&self, arm: &PatchArm, grid: u32) -> PatchMaskingConfig {
        PatchMaskingConfig::new(grid, grid, self.selection).with_regime(arm.regime)
    }

    /// The arm named `name`.
    pub fn arm(&self, name: &str) -> Result<&PatchArm> {
        super::arm::find_arm(&self.arms, name, |a| &a.name)
    }

    /// The contrasts to test: `contrasts`, or every pair (later arm, earlier arm) when empty.
    pub fn contrast_pairs(&self) -> Vec<[String; 2]> {
        let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        contrast_pairs(&self.contrasts, &names)
    }
}

/// Images and model config shared by the runs.
pub struct VisionData {
    /// Training images.
    pub train: Arc<ImageSet>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// The model.
    pub model: VitMaeConfig,
    /// Patches per side.
    pub grid: u32,
}

impl VisionData {
    /// Loads and checks the images of `study`.
    pub fn prepare(study: &VisionStudy) -> Result<Self> {
        study.validate()?;
        let (train, test) = study.load_images()?;
        if train.is_empty() || test.is_empty() {
            return Err(invalid(
                "images",
                train.len().min(test.len()),
                "at least one each",
            ));
        }
        if let Some(&l) = train.labels.iter().chain(&test.labels).find(|&&l| l >= 10) {
            return Err(invalid("label", l, "a Fashion-MNIST class in 0..10"));
        }
        let side = train.images.rows;
        if train.images.cols != side || test.images.rows != side || test.images.cols != side {
            return Err(invalid(
                "images",
                format!(
                    "train {}x{}, test {}x{}",
                    train.images.rows, train.images.cols, test.images.rows, test.images.cols
                ),
                "square images of one size",
            ));
        }
        let model = study.model.vit_mae(side, 10);
        model.validate()?;
        Ok(Self {
            grid: (side / study.model.patch_size) as u32,
            train: Arc::new(train),
            test: Arc::new(test),
            model,
        })
    }

    /// The MAE task of `arm`.
    pub fn task(&self, study: &VisionStudy, arm: &PatchArm) -> Result<MaeTask> {
        Ok(MaeTask::new(
            self.model.clone(),
            study.masking(arm, self.grid),
            Arc::clone(&self.train),
            Arc::clone(&self.test),
            study.eval_seed,
        )?)
    }
}

/// Result of one arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionRunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Pretraining steps.
    pub history: Vec<StepRecord>,
    /// Evaluations (at least the final one).
    pub evals: Vec<EvalRecord<MaeEval>>,
    /// Linear probe on the frozen encoder.
    pub probe: ClassificationEval,
    /// The memorisation gap (absent when `memorisation_images` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memorisation: Option<Memorisation>,
    /// Wall time of pretraining + probe in this session, seconds (not reproducible).
    pub seconds: f64,
}

/// How much better a run reconstructs training images under the masks it trained on than
/// under fresh ones: a static arm that memorised its masks shows a positive gap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Memorisation {
    /// Training images scored (the first ones).
    pub images: usize,
    /// The training epoch whose masks were used (the last one trained; a static arm's masks
    /// are the same in every epoch of its cycle).
    pub epoch: u64,
    /// Reconstruction under those training masks.
    pub train_masks: MaeEval,
    /// Reconstruction under fresh masks (the evaluation seed's, never trained on).
    pub fresh_masks: MaeEval,
    /// `fresh_masks.recon_mse - train_masks.recon_mse` (normalised pixels).
    pub gap: f64,
}

/// Baselines of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionBaselines {
    /// Seed (initialisation of the random encoder and the probe).
    pub seed: u64,
    /// Reconstruction by the untrained model.
    pub random_init_recon: MaeEval,
    /// Probe on the untrained encoder.
    pub random_init_probe: ClassificationEval,
    /// Probe on the raw pixels.
    pub raw_pixel_probe: ClassificationEval,
}

/// Everything a vision study produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionResults {
    /// The study.
    pub study: VisionStudy,
    /// Training images used.
    pub train_images: usize,
    /// Test images used.
    pub test_images: usize,
    /// Baselines per seed.
    pub baselines: Vec<VisionBaselines>,
    /// One result per arm and seed.
    pub runs: Vec<VisionRunResult>,
    /// The paired contrasts (a - b per seed, Holm across the study's contrasts per metric).
    #[serde(default)]
    pub contrasts: VisionContrasts,
}

/// A vision study's paired contrasts, one list per metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisionContrasts {
    /// Test masked-patch MSE (normalised pixels) under the fixed evaluation masks.
    pub recon_mse: Vec<MetricContrast>,
    /// Linear-probe test accuracy.
    pub probe_accuracy: Vec<MetricContrast>,
    /// The memorisation gap.
    pub memorisation_gap: Vec<MetricContrast>,
}

/// The study's contrasts ([`VisionStudy::contrast_pairs`]) over the seeds both arms ran.
pub fn vision_contrasts(study: &VisionStudy, runs: &[VisionRunResult]) -> VisionContrasts {
    let pairs = study.contrast_pairs();
    let by = |f: &dyn Fn(&VisionRunResult) -> Option<f64>, what: &str| {
        let rows: Vec<(&str, u64, f64)> = runs
            .iter()
            .filter_map(|r| Some((r.arm.as_str(), r.seed, f(r)?)))
            .collect();
        metric_contrasts(&pairs, &rows, what)
    };
    VisionContrasts {
        recon_mse: by(
            &|r| r.evals.last().map(|e| e.metrics.recon_mse),
            "reconstruction MSE",
        ),
        probe_accuracy: by(&|r| Some(r.probe.report.accuracy), "probe accuracy"),
        memorisation_gap: by(&|r| r.memorisation.map(|m| m.gap), "memorisation gap"),
    }
}

/// The memorisation gap of `model`, trained as `arm` with `seed` for `study.train.steps`
/// steps, on the first `study.memorisation_images` training images (`None` when 0).
pub fn memorisation<B: burn::tensor::backend::Backend>(
    study: &VisionStudy,
    data: &VisionData,
    arm: &PatchArm,
    seed: u64,
    model: &VitMae<B>,
    device: &B::Device,
) -> Result<Option<Memorisation>> {
    let n = study.memorisation_images.min(data.train.len());
    if n == 0 {
        return Ok(None);
    }
    let schedule = BatchSchedule::new(data.train.len(), study.train.batch_size, seed)?;
    let epoch = schedule.epoch_of(study.train.steps.saturating_sub(1));
    let masker = study.masking(arm, data.grid).build()?;
    let trained: Vec<PatchMask> = (0..n as u64).map(|i| masker.mask(seed, epoch, i)).collect();
    let plain = PatchMaskingConfig::new(data.grid, data.grid, study.selection);
    let fresh = eval_masks(&plain, study.eval_seed, n)?;
    let images = data.train.take(n);
    let train_masks = reconstruct(model, &images, &trained, 0, device)?.eval;
    let fresh_masks = reconstruct(model, &images, &fresh, 0, device)?.eval;
    Ok(Some(Memorisation {
        images: n,
        epoch,
        train_masks,
        fresh_masks,
        gap: fresh_masks.recon_mse - train_masks.recon_mse,
    }))
}

/// Trains and scores a linear probe on features of `model`'s frozen encoder (or, with `None`,
/// on raw pixels).
pub fn probe<B: AutodiffBackend>(
    study: &VisionStudy,
    data: &VisionData,
    model: Option<&VitMae<B::InnerBackend>>,
    seed: u64,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<ClassificationEval> {
    let feats = |set: &ImageSet| -> Result<Features> {
        let (x, d) = match model {
            Some(m) => features(m, set, device)?,
            None => (
                set.images
                    .pixels
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD)
                    .collect(),
                set.images.rows * set.images.cols,
            ),
        };
        Ok(Features {
            x,
            d,
            labels: set.labels.iter().map(|&l| l as usize).collect(),
        })
    };
    let task = LinearProbeTask::new(feats(&data.train)?, feats(&data.test)?, 10)?;
    let config = study.probe.train_config(data.train.len(), seed);
    let mut learner = Learner::<B, _>::new(task, config, device)?;
    let label = format!("probe / seed {seed}");
    learner.fit(&mut forward(&label, sink))?;
    learner
        .state()
        .evals
        .last()
        .map(|e| e.metrics.clone())
        .ok_or_else(|| invalid("probe.epochs", study.probe.epochs, "at least one step"))
}

/// Trains one arm with `spec.seed` in `<out_dir>/<arm>/seed-<seed>`, on `device`
/// (data-parallel with `peers` too, when any; see `Learner::data_parallel`).
pub fn pretrain<B: AutodiffBackend>(
    study: &VisionStudy,
    data: &VisionData,
    arm: &PatchArm,
    spec: &RunSpec,
    (device, peers): (&B::Device, &[B::Device]),
    sink: Sink<'_>,
) -> Result<Learner<B, MaeTask>> {
    let dir = run_dir(Path::new(&study.out_dir), &arm.name, spec.seed);
    let label = format!("{} / seed {}", arm.name, spec.seed);
    let config = TrainConfig {
        seed: spec.seed,
        ..study.train.clone()
    };
    train_run(
        &dir,
        data.task(study, arm)?,
        config,
        spec,
        &label,
        (device, peers),
        sink,
    )
}

/// Runs the baselines (per seed, in order), then every arm over every seed (`jobs` at a
/// time); writes `results.json`, `report.md`, `curves.svg` and `mae_grid.png` to `out_dir`.
/// `Existing::Rescore` scores finished runs again from their final checkpoints, keeping their
/// training record.
pub fn run_study<B: AutodiffBackend>(
    study: &VisionStudy,
    existing: Existing,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<VisionResults> {
    let data = VisionData::prepare(study)?;
    let out = PathBuf::from(&study.out_dir);
    std::fs::create_dir_all(&out).map_err(|e| StudyError::Output {
        path: out.display().to_string(),
        reason: e.to_string(),
    })?;
    sink(StudyEvent::Note(&format!(
        "{} training / {} test images, {}x{} patches",
        data.train.len(),
        data.test.len(),
        data.grid,
        data.grid
    )));
    let shown = study.grid_images.min(data.test.len());
    let masks = data.task(study, &study.arms[0])?.eval_masks().to_vec();
    let mut baselines = vec![];
    for &seed in &study.seeds {
        <B as burn::tensor::backend::Backend>::seed(device, seed);
        let init = data.model.init::<B>(device)?.valid();
        let random_init_recon = reconstruct(&init, &data.test, &masks, 0, device)?.eval;
        let random_init_probe = probe::<B>(study, &data, Some(&init), seed, device, sink)?;
        let raw_pixel_probe = probe::<B>(study, &data, None, seed, device, sink)?;
        baselines.push(VisionBaselines {
            seed,
            random_init_recon,
            random_init_probe,
            raw_pixel_probe,
        });
    }
    let first_seed = study.seeds[0];
    let items = seed_major(&study.seeds, &study.arms);
    let done = run_parallel(study.jobs, items, sink, |(seed, arm), sink| {
        let dir = run_dir(&out, &arm.name, seed);
        let label = format!("{} / seed {seed}", arm.name);
        let finished = finished_result::<VisionRunResult>(&dir, existing)?;
        let started = Instant::now();
        let spec = RunSpec::existing(
            seed,
            existing,
            CheckpointPolicy::new(study.checkpoint_every, 1)?,
        );
        // Fitting a finished run again does no step.
        let learner = pretrain::<B>(study, &data, arm, &spec, (device, &[]), sink)?;
        let model = learner.model().valid();
        let grid = if seed == first_seed {
            Some(reconstruct(&model, &data.test, &masks, shown, device)?.shown)
        } else {
            None
        };
        let result = match (existing, finished) {
            (Existing::Resume, Some(r)) => {
                sink(StudyEvent::RunFinished {
                    run: &label,
                    reused: true,
                });
                return Ok((r, grid));
            }
            (_, finished) => {
                let memorisation = memorisation(study, &data, arm, seed, &model, device)?;
                let r = match finished {
                    // Re-scored: the probe and gap again, the training record kept.
                    Some(old) => VisionRunResult {
                        probe: probe::<B>(study, &data, Some(&model), seed, device, sink)?,
                        memorisation,
                        ..old
                    },
                    None => VisionRunResult {
                        arm: arm.name.clone(),
                        seed,
                        history: learner.state().history.clone(),
                        evals: learner.state().evals.clone(),
                        probe: probe::<B>(study, &data, Some(&model), seed, device, sink)?,
                        memorisation,
                        seconds: started.elapsed().as_secs_f64(),
                    },
                };
                write_json(&dir.join("result.json"), &r)?;
                sink(StudyEvent::RunFinished {
                    run: &label,
                    reused: false,
                });
                r
            }
        };
        Ok((as_written(result)?, grid))
    })?;
    let mut runs = vec![];
    let mut grid_rows: Vec<Vec<Vec<f32>>> = vec![];
    for (r, grid) in done {
        grid_rows.extend(grid);
        runs.push(r);
    }
    let results = VisionResults {
        study: study.clone(),
        train_images: data.train.len(),
        test_images: data.test.len(),
        baselines,
        contrasts: vision_contrasts(study, &runs),
        runs,
    };
    write_json(&out.join("results.json"), &results)?;
    write_text(&out.join("report.md"), &results_table(&results))?;
    plot_panels(&out.join("curves.svg"), &panels(&results))?;
    render_grid(
        &data.test,
        &masks,
        &grid_rows,
        shown,
        study.model.patch_size,
    )
    .write_png(&out.join("mae_grid.png"))?;
    Ok(results)
}

/// The training-loss curves, one line per arm (mean over seeds, 16-step moving average).
pub fn panels(results: &VisionResults) -> Vec<Panel> {
    let arms: Vec<&str> = results.study.arms.iter().map(|a| a.name.as_str()).collect();
    let loss =
        |r: &VisionRunResult| smoothed(&r.history.iter().map(|h| h.loss).collect::<Vec<_>>(), 16);
    vec![Panel {
        title: "MAE training loss (16-step mean)".into(),
        x_label: "step".into(),
        y_label: "masked-patch MSE".into(),
        curves: arm_curves(&arms, &results.runs, |r| &r.arm, loss),
    }]
}

/// The results as Markdown: reconstruction and probe per encoder beside the baselines, the
/// memorisation gap per arm (mean ± std over seeds), then the paired contrasts.
pub fn results_table(r: &VisionResults) -> String {
    let mut s = String::from(
        "| encoder | masked-patch MSE (norm. pixels) | masked-patch MSE (pixels) | probe accuracy (%) | probe macro F1 (%) |\n|---|---|---|---|---|\n",
    );
    let b = |f: fn(&VisionBaselines) -> f64| r.baselines.iter().map(f).collect::<Vec<_>>();
    s += &format!(
        "| raw pixels (no encoder) | - | - | {} | {} |\n",
        fmt_mean_std(&b(|x| x.raw_pixel_probe.report.accuracy), 100.0, 1),
        fmt_mean_std(&b(|x| x.raw_pixel_probe.report.macro_f1), 100.0, 1),
    );
    s += &format!(
        "| random init (no pretraining) | {} | {} | {} | {} |\n",
        fmt_mean_std(&b(|x| x.random_init_recon.recon_mse), 1.0, 4),
        fmt_mean_std(&b(|x| x.random_init_recon.recon_pixel_mse), 1.0, 5),
        fmt_mean_std(&b(|x| x.random_init_probe.report.accuracy), 100.0, 1),
        fmt_mean_std(&b(|x| x.random_init_probe.report.macro_f1), 100.0, 1),
    );
    let of_arm =
        |name: &str| -> Vec<&VisionRunResult> { r.runs.iter().filter(|x| x.arm == name).collect() };
    for arm in &r.study.arms {
        let runs = of_arm(&arm.name);
        let last = |f: fn(&MaeEval) -> f64| {
            runs.iter()
                .filter_map(|x| x.evals.last().map(|e| f(&e.metrics)))
                .collect::<Vec<_>>()
        };
        let p = |f: fn(&ClassificationEval) -> f64| {
            runs.iter().map(|x| f(&x.probe)).collect::<Vec<_>>()
        };
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            arm.name,
            fmt_mean_std(&last(|e| e.recon_mse), 1.0, 4),
            fmt_mean_std(&last(|e| e.recon_pixel_mse), 1.0, 5),
            fmt_mean_std(&p(|c| c.report.accuracy), 100.0, 1),
            fmt_mean_std(&p(|c| c.report.macro_f1), 100.0, 1),
        );
    }
    if r.runs.iter().any(|x| x.memorisation.is_some()) {
        s += "\nMemorisation gap: masked-patch MSE (normalised pixels) on training images under the masks of the last training epoch vs fresh masks (gap = fresh - trained; positive = the run reconstructs its own masks better).\n\n| arm | images | trained masks | fresh masks | gap |\n|---|---|---|---|---|\n";
        for arm in &r.study.arms {
            let m: Vec<Memorisation> = of_arm(&arm.name)
                .iter()
                .filter_map(|x| x.memorisation)
                .collect();
            let Some(first) = m.first() else { continue };
            let v = |f: fn(&Memorisation) -> f64| m.iter().map(f).collect::<Vec<_>>();
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                arm.name,
                first.images,
                fmt_mean_std(&v(|x| x.train_masks.recon_mse), 1.0, 4),
                fmt_mean_std(&v(|x| x.fresh_masks.recon_mse), 1.0, 4),
                fmt_mean_std(&v(|x| x.gap), 1.0, 4),
            );
        }
    }
    let c = &r.contrasts;
    let rows: Vec<(&str, &MetricContrast, f64, usize)> = [
        ("test reconstruction MSE", &c.recon_mse, 1.0, 4),
        ("probe accuracy (points)", &c.probe_accuracy, 100.0, 2),
        ("memorisation gap", &c.memorisation_gap, 1.0, 4),
    ]
    .into_iter()
    .flat_map(|(what, list, k, d)| list.iter().map(move |m| (what, m, k, d)))
    .collect();
    if !rows.is_empty() {
        s += "\nPaired contrasts (a - b per seed, 95% t-interval, Holm across the study's contrasts of each metric):\n\n| contrast | metric | mean | 95% interval | Holm p | reading |\n|---|---|---|---|---|---|\n";
        for (what, m, k, d) in rows {
            s += &format!(
                "| {} - {} | {what} | {:+.d$} | [{:+.d$}, {:+.d$}] | {:.3} | {} |\n",
                m.a,
                m.b,
                m.seeds.mean * k,
                m.seeds.lo * k,
                m.seeds.hi * k,
                m.holm_p,
                m.verdict
            );
        }
    }
    s
}

/// Rows: originals, the masked inputs (hidden patches grey), then per arm the reconstruction
/// with the visible patches pasted back (as MAE's figures). One column per test image, each
/// image scaled 3x with a 2-pixel white gutter.
pub fn render_grid(
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
