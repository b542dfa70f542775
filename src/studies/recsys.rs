//! The recommendation study: BERT4Rec (Sun et al. 2019) under static and dynamic Cloze masking
//! on MovieLens, scored by the leave-one-out protocol (HR@k and NDCG@k of each user's held-out
//! item against sampled negatives, the same lists for every arm), beside a popularity baseline.
//!
//! Protocol:
//! - training sample of a user: the last `max_len` items of the training prefix, Cloze-masked
//!   with the arm's regime;
//! - validation: history = training prefix, target = second-to-last item (what the learner's
//!   evaluations report); test: history = prefix + validation item, target = last item;
//! - negatives: `n_negatives` uniform non-interacted items per user from `negative_seed`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use mask_core::{ItemMaskingConfig, Regime};
use mask_data::movielens::{
    item_counts, last_items, leave_one_out, parse_movielens, read_movielens, sample_negatives,
    synthetic_u_data, Interactions, LooSplit,
};
use mask_model::Bert4RecConfig;
use mask_train::metrics::rank_metrics;
use mask_train::tasks::bert4rec::{evaluate_ranking, Bert4RecTask, RankingEval};
use mask_train::{CheckpointPolicy, EvalRecord, Learner, RankMetrics, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};

use super::arm::{check_unique_slugs, plan_run, run_dir, train_run, RunPlan, RunSpec, Start};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::report::{fmt_mean_std, write_json, write_text};
use super::{invalid, Existing, Result, Sink, StudyEvent};

/// One arm: a name and its regime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemArm {
    /// Row name (its slug names the run directory).
    pub name: String,
    /// Static (with `dupe_factor`) or dynamic.
    pub regime: Regime,
}

/// A recommendation study (`kind = "recsys"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecStudy {
    /// The study kind: `"recsys"`.
    pub kind: String,
    /// Name. Default: bert4rec_movielens
    pub name: String,
    /// Output directory. Default: runs/bert4rec
    pub out_dir: String,
    /// The MovieLens `u.data` file (fetch it with `scripts/fetch_movielens.sh`). A smoke run
    /// (`--quick`) uses a synthetic file of the same shape when it is absent. Default:
    /// data/movielens/ml-100k/u.data
    pub data: String,
    /// Arms. Default: static (dupe_factor 10, BERT4Rec's) and dynamic
    pub arms: Vec<ItemArm>,
    /// Cloze masking probability (BERT4Rec's MovieLens setting). Default: 0.2
    pub mask_prob: f64,
    /// Longest item sequence (training window and evaluation history + mask). Default: 50
    pub max_len: usize,
    /// Width. Default: 64
    pub d_model: usize,
    /// Heads. Default: 2
    pub n_heads: usize,
    /// Blocks. Default: 2
    pub n_layers: usize,
    /// Feed-forward width. Default: 256
    pub d_ff: usize,
    /// Dropout. Default: 0.1
    pub dropout: f64,
    /// Training settings (`seed` is replaced by each of `seeds`). Default: 600 steps of 64
    /// users, lr 1e-3, 100 warm-up steps, linear decay, clip 5
    pub train: TrainConfig,
    /// Seeds. Default: `[0]`
    pub seeds: Vec<u64>,
    /// Seed of the negative samples. Default: 12345
    pub negative_seed: u64,
    /// Sampled negatives per user. Default: 100
    pub n_negatives: usize,
    /// Cut-off k of HR@k and NDCG@k. Default: 10
    pub k: usize,
    /// Users per evaluation batch. Default: 128
    pub eval_batch_size: usize,
    /// Write a checkpoint every this many steps (and at the end). Default: 200
    pub checkpoint_every: u64,
}

impl Default for RecStudy {
    fn default() -> Self {
        Self {
            kind: "recsys".into(),
            name: "bert4rec_movielens".into(),
            out_dir: "runs/bert4rec".into(),
            data: "data/movielens/ml-100k/u.data".into(),
            arms: vec![
                ItemArm {
                    name: "static (k=10)".into(),
                    regime: Regime::Static { dupe_factor: 10 },
                },
                ItemArm {
                    name: "dynamic".into(),
                    regime: Regime::Dynamic {},
                },
            ],
            mask_prob: 0.2,
            max_len: 50,
            d_model: 64,
            n_heads: 2,
            n_layers: 2,
            d_ff: 256,
            dropout: 0.1,
            train: TrainConfig {
                steps: 600,
                batch_size: 64,
                lr: 1e-3,
                warmup_steps: 100,
                grad_clip: Some(5.0),
                eval_every: 0,
                ..TrainConfig::default()
            },
            seeds: vec![0],
            negative_seed: 12345,
            n_negatives: 100,
            k: 10,
            eval_batch_size: 128,
            checkpoint_every: 200,
        }
    }
}

impl RecStudy {
    /// The smoke version (seconds): short sequences, a one-block model, 300 steps of 16
    /// sequences. Validate first: it replaces sizes.
    pub fn quick(mut self) -> Self {
        self.max_len = 20;
        self.train.steps = 300;
        self.train.batch_size = 16;
        self.train.warmup_steps = 5;
        self.train.lr = 3e-3;
        self.d_model = 32;
        self.n_layers = 1;
        self.d_ff = 64;
        self.checkpoint_every = 150;
        self.out_dir = format!("{}-quick", self.out_dir);
        self
    }

    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        super::check_kind(&self.kind, "recsys")?;
        if self.arms.is_empty() {
            return Err(invalid("arms", "[]", "at least one arm"));
        }
        check_unique_slugs(self.arms.iter().map(|a| a.name.as_str()))?;
        for a in &self.arms {
            a.regime.validate()?;
        }
        if !(self.mask_prob.is_finite() && self.mask_prob > 0.0 && self.mask_prob <= 1.0) {
            return Err(invalid("mask_prob", self.mask_prob, "in (0, 1]"));
        }
        if self.max_len < 2 {
            return Err(invalid("max_len", self.max_len, "at least 2"));
        }
        if self.seeds.is_empty() {
            return Err(invalid("seeds", "[]", "at least one seed"));
        }
        self.train.validate()?;
        for (f, v) in [
            ("n_negatives", self.n_negatives),
            ("k", self.k),
            ("eval_batch_size", self.eval_batch_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
            ("d_ff", self.d_ff),
        ] {
            if v == 0 {
                return Err(invalid(f, 0, "at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(invalid(
                "d_model",
                self.d_model,
                format!("a multiple of n_heads ({})", self.n_heads),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "in [0, 1)"));
        }
        if self.checkpoint_every == 0 {
            return Err(invalid("checkpoint_every", 0, "at least 1"));
        }
        Ok(())
    }

    /// The model config for `n_items` items.
    pub fn model(&self, n_items: usize) -> Bert4RecConfig {
        Bert4RecConfig::new(n_items)
            .with_max_len(self.max_len)
            .with_d_model(self.d_model)
            .with_n_heads(self.n_heads)
            .with_n_layers(self.n_layers)
            .with_d_ff(self.d_ff)
            .with_dropout(self.dropout)
    }

    /// The arm named `name`.
    pub fn arm(&self, name: &str) -> Result<&ItemArm> {
        super::arm::find_arm(&self.arms, name, |a| &a.name)
    }
}

/// Data shared by the runs: interactions, split, samples and candidate lists.
pub struct RecData {
    /// Where the interactions came from: a path, or `synthetic`.
    pub source: String,
    /// The interactions.
    pub data: Interactions,
    /// The leave-one-out split.
    pub split: LooSplit,
    /// Training sequences, one per kept user.
    pub samples: Arc<Vec<Vec<u32>>>,
    /// Validation ranking (history = training prefix).
    pub valid: Arc<RankingEval>,
    /// Test ranking (history = prefix + validation item).
    pub test: RankingEval,
    /// The model config.
    pub model: Bert4RecConfig,
}

impl RecData {
    /// Reads the interactions (with `synthetic_if_absent`, the synthetic file replaces a missing
    /// one) and prepares the split and candidates.
    pub fn prepare(study: &RecStudy, synthetic_if_absent: bool) -> Result<Self> {
        study.validate()?;
        let path = Path::new(&study.data);
        let (data, source) = if !path.exists() && synthetic_if_absent {
            (
                parse_movielens(&synthetic_u_data(), "synthetic")?,
                "synthetic".to_string(),
            )
        } else {
            (read_movielens(path)?, study.data.clone())
        };
        let split = leave_one_out(&data);
        if split.users.is_empty() {
            return Err(invalid(
                "data",
                format!("{} users", data.sequences.len()),
                "at least one user with 3 or more interactions",
            ));
        }
        let negatives = sample_negatives(&data, &split, study.n_negatives, study.negative_seed);
        let cands = |target: fn(&mask_data::movielens::UserSplit) -> u32| -> Vec<Vec<u32>> {
            split
                .users
                .iter()
                .zip(&negatives)
                .map(|(u, n)| {
                    std::iter::once(target(u))
                        .chain(n.iter().copied())
                        .collect()
                })
                .collect()
        };
        let valid = RankingEval {
            histories: split.users.iter().map(|u| u.train.clone()).collect(),
            candidates: cands(|u| u.valid),
            k: study.k,
        };
        let test = RankingEval {
            histories: split
                .users
                .iter()
                .map(|u| [&u.train[..], &[u.valid]].concat())
                .collect(),
            candidates: cands(|u| u.test),
            k: study.k,
        };
        let samples = split
            .users
            .iter()
            .map(|u| last_items(&u.train, study.max_len).to_vec())
            .collect();
        Ok(Self {
            source,
            model: study.model(data.n_items),
            data,
            split,
            samples: Arc::new(samples),
            valid: Arc::new(valid),
            test,
        })
    }

    /// The popularity baseline on `eval` (score = training count of the item).
    pub fn popularity(&self, eval: &RankingEval) -> Result<RankMetrics> {
        let counts = item_counts(&self.split, self.data.n_items);
        let scores: Vec<Vec<f32>> = eval
            .candidates
            .iter()
            .map(|c| c.iter().map(|&i| counts[i as usize] as f32).collect())
            .collect();
        rank_metrics(eval.k, &scores).ok_or_else(|| invalid("candidates", "[]", "non-empty lists"))
    }

    /// The BERT4Rec task of `arm`.
    pub fn task(&self, study: &RecStudy, arm: &ItemArm) -> Result<Bert4RecTask> {
        let masking = ItemMaskingConfig::new(self.data.n_items as u32)
            .with_mask_prob(study.mask_prob)
            .with_regime(arm.regime);
        Ok(Bert4RecTask::new(
            self.model.clone(),
            masking,
            Arc::clone(&self.samples),
            Arc::clone(&self.valid),
            study.eval_batch_size,
        )?)
    }
}

/// Result of one arm and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecRunResult {
    /// Arm name.
    pub arm: String,
    /// Seed.
    pub seed: u64,
    /// Training steps.
    pub history: Vec<StepRecord>,
    /// Validation evaluations.
    pub evals: Vec<EvalRecord<RankMetrics>>,
    /// Test HR@k / NDCG@k.
    pub test: RankMetrics,
    /// Wall time, seconds (not reproducible).
    pub seconds: f64,
}

/// Everything a recommendation study produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecResults {
    /// The study.
    pub study: RecStudy,
    /// `synthetic`, or the interactions file.
    pub source: String,
    /// Users kept.
    pub users: usize,
    /// Users dropped (< 3 interactions).
    pub dropped_users: usize,
    /// Items.
    pub n_items: usize,
    /// Interactions.
    pub interactions: usize,
    /// Popularity baseline, test.
    pub popularity_test: RankMetrics,
    /// Popularity baseline, validation.
    pub popularity_valid: RankMetrics,
    /// One result per arm and seed.
    pub runs: Vec<RecRunResult>,
}

/// Trains one arm with `spec.seed` in `<out_dir>/<arm>/seed-<seed>`, on `device`
/// (data-parallel with `peers` too, when any; see `Learner::data_parallel`).
pub fn pretrain<B: AutodiffBackend>(
    study: &RecStudy,
    data: &RecData,
    arm: &ItemArm,
    spec: &RunSpec,
    (device, peers): (&B::Device, &[B::Device]),
    sink: Sink<'_>,
) -> Result<Learner<B, Bert4RecTask>> {
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

/// Runs every arm over every seed; writes `results.json`, `report.md` and `curves.svg`.
pub fn run_study<B: AutodiffBackend>(
    study: &RecStudy,
    synthetic_if_absent: bool,
    existing: Existing,
    device: &B::Device,
    sink: Sink<'_>,
) -> Result<RecResults> {
    let data = RecData::prepare(study, synthetic_if_absent)?;
    let out = PathBuf::from(&study.out_dir);
    sink(StudyEvent::Note(&format!(
        "{}: {} users ({} dropped), {} items, {} interactions",
        data.source,
        data.split.users.len(),
        data.split.dropped_users,
        data.data.n_items,
        data.data.n_interactions()
    )));
    let mut runs = vec![];
    for &seed in &study.seeds {
        for arm in &study.arms {
            let dir = run_dir(&out, &arm.name, seed);
            let label = format!("{} / seed {seed}", arm.name);
            if existing == Existing::Resume {
                if let RunPlan::Finished(_, r) = plan_run::<RecRunResult>(&dir, existing)? {
                    sink(StudyEvent::RunFinished {
                        run: &label,
                        reused: true,
                    });
                    runs.push(r);
                    continue;
                }
            }
            let started = Instant::now();
            let spec = RunSpec {
                seed,
                start: Start::Existing(existing),
                policy: CheckpointPolicy::new(study.checkpoint_every, 1)?,
                nodes: None,
            };
            let learner = pretrain::<B>(study, &data, arm, &spec, (device, &[]), sink)?;
            let test = evaluate_ranking(
                &learner.model().valid(),
                &data.model,
                &data.test,
                study.eval_batch_size,
                device,
            )?;
            let r = RecRunResult {
                arm: arm.name.clone(),
                seed,
                history: learner.state().history.clone(),
                evals: learner.state().evals.clone(),
                test,
                seconds: started.elapsed().as_secs_f64(),
            };
            write_json(&dir.join("result.json"), &r)?;
            sink(StudyEvent::RunFinished {
                run: &label,
                reused: false,
            });
            runs.push(r);
        }
    }
    let results = RecResults {
        study: study.clone(),
        source: data.source.clone(),
        users: data.split.users.len(),
        dropped_users: data.split.dropped_users,
        n_items: data.data.n_items,
        interactions: data.data.n_interactions(),
        popularity_test: data.popularity(&data.test)?,
        popularity_valid: data.popularity(&data.valid)?,
        runs,
    };
    write_json(&out.join("results.json"), &results)?;
    write_text(&out.join("report.md"), &results_table(&results))?;
    plot_panels(&out.join("curves.svg"), &panels(&results))?;
    Ok(results)
}

/// The training-loss curves, one line per arm (mean over seeds, 16-step moving average).
pub fn panels(results: &RecResults) -> Vec<Panel> {
    let arms: Vec<&str> = results.study.arms.iter().map(|a| a.name.as_str()).collect();
    let loss =
        |r: &RecRunResult| smoothed(&r.history.iter().map(|h| h.loss).collect::<Vec<_>>(), 16);
    vec![Panel {
        title: "BERT4Rec Cloze loss (16-step mean)".into(),
        x_label: "step".into(),
        y_label: "loss (nats)".into(),
        curves: arm_curves(&arms, &results.runs, |r| &r.arm, loss),
    }]
}

/// The results as a Markdown table (mean ± std over seeds).
pub fn results_table(r: &RecResults) -> String {
    let k = r.study.k;
    let mut s = format!(
        "| arm | test HR@{k} | test NDCG@{k} | valid HR@{k} | valid NDCG@{k} | final train loss |\n|---|---|---|---|---|---|\n"
    );
    for arm in &r.study.arms {
        let runs: Vec<&RecRunResult> = r.runs.iter().filter(|x| x.arm == arm.name).collect();
        let v = |f: fn(&RecRunResult) -> f64| runs.iter().map(|x| f(x)).collect::<Vec<_>>();
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            arm.name,
            fmt_mean_std(&v(|x| x.test.hr), 1.0, 4),
            fmt_mean_std(&v(|x| x.test.ndcg), 1.0, 4),
            fmt_mean_std(&v(|x| x.evals.last().map_or(0.0, |e| e.metrics.hr)), 1.0, 4),
            fmt_mean_std(
                &v(|x| x.evals.last().map_or(0.0, |e| e.metrics.ndcg)),
                1.0,
                4
            ),
            fmt_mean_std(
                &v(|x| {
                    let tail = (x.history.len() / 10).max(1);
                    x.history[x.history.len() - tail..]
                        .iter()
                        .map(|h| h.loss)
                        .sum::<f64>()
                        / tail as f64
                }),
                1.0,
                3
            ),
        );
    }
    s += &format!(
        "| popularity | {:.4} | {:.4} | {:.4} | {:.4} | - |\n",
        r.popularity_test.hr,
        r.popularity_test.ndcg,
        r.popularity_valid.hr,
        r.popularity_valid.ndcg
    );
    s += &format!(
        "\n{}: {} users ({} dropped with < 3 interactions), {} items, {} interactions; {} negatives per user; {} steps of {} sequences, max_len {}.\n",
        r.source,
        r.users,
        r.dropped_users,
        r.n_items,
        r.interactions,
        r.study.n_negatives,
        r.study.train.steps,
        r.study.train.batch_size,
        r.study.max_len
    );
    s
}
