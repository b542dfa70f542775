//! The recommendation study: BERT4Rec (Sun et al. 2019) under static and dynamic Cloze masking
//! on MovieLens, scored by the leave-one-out protocol (HR@k and NDCG@k of each user's held-out
//! item against sampled negatives, the same lists for every arm), beside a popularity baseline.
//!
//! Protocol:
//! - training sample of a user: the last `max_len` items of the training prefix, Cloze-masked
//!   with the arm's regime;
//! - validation: history = training prefix, target = second-to-last item (what the learner's
//!   evaluations report); test: history = prefix + validation item, target = last item;
//! - negatives: `n_negatives` uniform non-interacted items per user from `negative_seed`;
//! - full ranking (`full_ranking`): the target against every item the user never interacted
//!   with (no sampling), beside the sampled figures;
//! - paired statistics: per-seed paired t-intervals of test HR@k / NDCG@k (Holm across the
//!   study's contrasts), and McNemar's exact test on per-user test hits for each seed.

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
use mask_train::metrics::{hit_ndcg_at, rank_counts, rank_metrics};
use mask_train::tasks::bert4rec::{score_histories, Bert4RecTask, RankingEval};
use mask_train::{CheckpointPolicy, EvalRecord, Learner, RankMetrics, StepRecord, TrainConfig};
use serde::{Deserialize, Serialize};

use super::arm::{
    check_contrasts, check_unique_slugs, finished_result, reuse, run_dir, seed_major, train_run,
    RunSpec,
};
use super::plot::{arm_curves, plot_panels, smoothed, Panel};
use super::report::{as_written, fmt_mean_std, write_json, write_text};
use super::stats::{contrast_pairs, holm, mcnemar_exact, metric_contrasts, MetricContrast};
use super::{invalid, run_parallel, Existing, Result, Sink, StudyEvent};

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
    /// Also rank each test target against every item its user never interacted with
    /// (full-ranking HR@k / NDCG@k, no sampled negatives). Default: true
    pub full_ranking: bool,
    /// Paired contrasts `[a, b]` (arm names) tested on test HR@k / NDCG@k (a - b) and by
    /// McNemar's test on per-user hits. Default: `[]` (every pair)
    pub contrasts: Vec<[String; 2]>,
    /// Runs trained at once, each on a thread of its own (results do not depend on it).
    /// Default: 1
    pub jobs: usize,
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
            full_ranking: true,
            contrasts: vec![],
            jobs: 1,
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
        check_contrasts(&self.contrasts, &self.arms, |a| &a.name)?;
        if self.jobs == 0 {
            return Err(invalid("jobs", 0, "at least 1"));
        }
        Ok(())
    }

    /// The contrasts to test: `contrasts`, or every pair (later arm, earlier arm) when empty.
    pub fn contrast_pairs(&self) -> Vec<[String; 2]> {
        let names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        contrast_pairs(&self.contrasts, &names)
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
    /// Full test ranking: the same histories, the target against every item the user never
    /// interacted with (when the study asks for it).
    pub test_full: Option<RankingEval>,
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
        let test_full = study.full_ranking.then(|| RankingEval {
            histories: test.histories.clone(),
            candidates: full_candidates(&data, &split),
            k: study.k,
        });
        Ok(Self {
            test_full,
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
        Ok(ranked(eval.k, &scores)?.0)
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

/// Per user of `split`: the test target, then every item the user never interacted with (the
/// full-ranking candidates; the sampled negatives are a subset of them).
pub fn full_candidates(data: &Interactions, split: &LooSplit) -> Vec<Vec<u32>> {
    split
        .users
        .iter()
        .map(|u| {
            let mut seen = vec![false; data.n_items + 1];
            for &i in &data.sequences[u.user] {
                seen[i as usize] = true;
            }
            std::iter::once(u.test)
                .chain((1..=data.n_items as u32).filter(|&i| !seen[i as usize]))
                .collect()
        })
        .collect()
}

/// HR@k / NDCG@k of per-user scores `[target, negatives...]`, and each user's hit as `1` or
/// `0` (the expected hit over tied orders, rounded: a tie straddling the cut-off counts as a
/// hit when at least half of its orders are), for McNemar's test.
pub fn ranked(k: usize, scores: &[Vec<f32>]) -> Result<(RankMetrics, Vec<u8>)> {
    let metrics =
        rank_metrics(k, scores).ok_or_else(|| invalid("candidates", "[]", "non-empty lists"))?;
    let hits = scores
        .iter()
        .map(|s| {
            let (higher, tied) = rank_counts(s[0], &s[1..]);
            u8::from(hit_ndcg_at(k, higher, tied).0 >= 0.5)
        })
        .collect();
    Ok((metrics, hits))
}

/// Scores `model` on `eval`: HR@k / NDCG@k and per-user hits.
fn evaluate<B: burn::tensor::backend::Backend>(
    model: &mask_model::Bert4Rec<B>,
    data: &RecData,
    eval: &RankingEval,
    batch_size: usize,
    device: &B::Device,
) -> Result<(RankMetrics, Vec<u8>)> {
    let scores = score_histories(
        model,
        &data.model,
        &eval.histories,
        &eval.candidates,
        batch_size,
        device,
    )?;
    ranked(eval.k, &scores)
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
    /// Per-user test hits (sampled candidates), `1` or `0` in the split's user order.
    #[serde(default)]
    pub test_hits: Vec<u8>,
    /// Full-ranking test HR@k / NDCG@k (when the study ranks fully).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_full: Option<RankMetrics>,
    /// Per-user full-ranking test hits (empty without full ranking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_full_hits: Vec<u8>,
    /// Wall time, seconds (not reproducible).
    pub seconds: f64,
}

/// McNemar's exact test of two arms under one seed on per-user test hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// First arm.
    pub a: String,
    /// Second arm.
    pub b: String,
    /// Seed.
    pub seed: u64,
    /// `sampled` or `full` ranking.
    pub ranking: String,
    /// Users only `a` hits.
    pub a_only: u64,
    /// Users only `b` hits.
    pub b_only: u64,
    /// Two-sided exact p-value.
    pub p: f64,
    /// Holm-adjusted across every (contrast, seed) test of the same ranking.
    pub holm_p: f64,
}

/// The paired statistics of a recommendation study's contrasts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecContrasts {
    /// Test HR@k (sampled), a - b per seed.
    pub hr: Vec<MetricContrast>,
    /// Test NDCG@k (sampled).
    pub ndcg: Vec<MetricContrast>,
    /// Full-ranking test HR@k.
    pub full_hr: Vec<MetricContrast>,
    /// Full-ranking test NDCG@k.
    pub full_ndcg: Vec<MetricContrast>,
    /// McNemar per contrast, seed and ranking.
    pub mcnemar: Vec<McNemar>,
}

/// The study's contrasts ([`RecStudy::contrast_pairs`]) over the seeds both arms ran.
pub fn rec_contrasts(study: &RecStudy, runs: &[RecRunResult]) -> RecContrasts {
    let pairs = study.contrast_pairs();
    let k = study.k;
    let rows = |f: &dyn Fn(&RecRunResult) -> Option<f64>| -> Vec<(&str, u64, f64)> {
        runs.iter()
            .filter_map(|r| Some((r.arm.as_str(), r.seed, f(r)?)))
            .collect()
    };
    let by = |f: &dyn Fn(&RecRunResult) -> Option<f64>, what: &str| {
        metric_contrasts(&pairs, &rows(f), what)
    };
    let mut mcnemar = vec![];
    for ranking in ["sampled", "full"] {
        fn hits<'r>(r: &'r RecRunResult, ranking: &str) -> &'r [u8] {
            if ranking == "sampled" {
                &r.test_hits
            } else {
                &r.test_full_hits
            }
        }
        let mut tests = vec![];
        for [a, b] in &pairs {
            for ra in runs.iter().filter(|r| &r.arm == a) {
                let Some(rb) = runs.iter().find(|r| &r.arm == b && r.seed == ra.seed) else {
                    continue;
                };
                let (ha, hb) = (hits(ra, ranking), hits(rb, ranking));
                if ha.is_empty() || ha.len() != hb.len() {
                    continue;
                }
                let a_only = ha.iter().zip(hb).filter(|(x, y)| **x > **y).count() as u64;
                let b_only = ha.iter().zip(hb).filter(|(x, y)| **x < **y).count() as u64;
                tests.push(McNemar {
                    a: a.clone(),
                    b: b.clone(),
                    seed: ra.seed,
                    ranking: ranking.into(),
                    a_only,
                    b_only,
                    p: mcnemar_exact(a_only, b_only),
                    holm_p: 1.0,
                });
            }
        }
        let adjusted = holm(&tests.iter().map(|t| t.p).collect::<Vec<_>>());
        for (t, h) in tests.iter_mut().zip(adjusted) {
            t.holm_p = h;
        }
        mcnemar.extend(tests);
    }
    RecContrasts {
        hr: by(&|r| Some(r.test.hr), &format!("HR@{k}")),
        ndcg: by(&|r| Some(r.test.ndcg), &format!("NDCG@{k}")),
        full_hr: by(&|r| r.test_full.map(|m| m.hr), &format!("full HR@{k}")),
        full_ndcg: by(&|r| r.test_full.map(|m| m.ndcg), &format!("full NDCG@{k}")),
        mcnemar,
    }
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
    /// Popularity baseline, full-ranking test (when the study ranks fully).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_full: Option<RankMetrics>,
    /// One result per arm and seed.
    pub runs: Vec<RecRunResult>,
    /// The paired contrasts.
    #[serde(default)]
    pub contrasts: RecContrasts,
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

/// Runs every arm over every seed (`jobs` at a time); writes `results.json`, `report.md` and
/// `curves.svg`. `Existing::Rescore` scores finished runs again from their final checkpoints,
/// keeping their training record.
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
    let items = seed_major(&study.seeds, &study.arms);
    let runs = run_parallel(study.jobs, items, sink, |(seed, arm), sink| {
        let dir = run_dir(&out, &arm.name, seed);
        let label = format!("{} / seed {seed}", arm.name);
        let mut finished = finished_result::<RecRunResult>(&dir, existing)?;
        if let Some(r) = reuse(&mut finished, existing, &label, sink) {
            return Ok(r);
        }
        let started = Instant::now();
        let spec = RunSpec::existing(
            seed,
            existing,
            CheckpointPolicy::new(study.checkpoint_every, 1)?,
        );
        // Fitting a finished run again does no step.
        let learner = pretrain::<B>(study, &data, arm, &spec, (device, &[]), sink)?;
        let model = learner.model().valid();
        let (test, test_hits) = evaluate(&model, &data, &data.test, study.eval_batch_size, device)?;
        let (test_full, test_full_hits) = match &data.test_full {
            Some(eval) => {
                let (m, h) = evaluate(&model, &data, eval, study.eval_batch_size, device)?;
                (Some(m), h)
            }
            None => (None, vec![]),
        };
        let scored = RecRunResult {
            arm: arm.name.clone(),
            seed,
            history: learner.state().history.clone(),
            evals: learner.state().evals.clone(),
            test,
            test_hits,
            test_full,
            test_full_hits,
            seconds: started.elapsed().as_secs_f64(),
        };
        let r = match finished {
            Some(old) => RecRunResult {
                history: old.history,
                evals: old.evals,
                seconds: old.seconds,
                ..scored
            },
            None => scored,
        };
        write_json(&dir.join("result.json"), &r)?;
        sink(StudyEvent::RunFinished {
            run: &label,
            reused: false,
        });
        as_written(r)
    })?;
    let results = RecResults {
        study: study.clone(),
        source: data.source.clone(),
        users: data.split.users.len(),
        dropped_users: data.split.dropped_users,
        n_items: data.data.n_items,
        interactions: data.data.n_interactions(),
        popularity_test: data.popularity(&data.test)?,
        popularity_valid: data.popularity(&data.valid)?,
        popularity_full: match &data.test_full {
            Some(eval) => Some(data.popularity(eval)?),
            None => None,
        },
        contrasts: rec_contrasts(study, &runs),
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

/// The results as Markdown: per arm test and validation HR@k / NDCG@k (sampled) and full-ranking
/// test figures (mean ± std over seeds), the popularity baseline's row, then the paired
/// contrasts and McNemar's tests.
pub fn results_table(r: &RecResults) -> String {
    let k = r.study.k;
    let full = r.popularity_full.is_some();
    let mut s = format!("| arm | test HR@{k} | test NDCG@{k} | valid HR@{k} | valid NDCG@{k} |");
    if full {
        s += &format!(" full HR@{k} | full NDCG@{k} |");
    }
    s += " final train loss |\n|---|---|---|---|---|";
    s += if full { "---|---|---|\n" } else { "---|\n" };
    for arm in &r.study.arms {
        let runs: Vec<&RecRunResult> = r.runs.iter().filter(|x| x.arm == arm.name).collect();
        let v = |f: &dyn Fn(&RecRunResult) -> f64| runs.iter().map(|x| f(x)).collect::<Vec<_>>();
        let last = |f: fn(&RankMetrics) -> f64| {
            v(&|x: &RecRunResult| x.evals.last().map_or(0.0, |e| f(&e.metrics)))
        };
        s += &format!(
            "| {} | {} | {} | {} | {} |",
            arm.name,
            fmt_mean_std(&v(&|x| x.test.hr), 1.0, 4),
            fmt_mean_std(&v(&|x| x.test.ndcg), 1.0, 4),
            fmt_mean_std(&last(|m| m.hr), 1.0, 4),
            fmt_mean_std(&last(|m| m.ndcg), 1.0, 4),
        );
        if full {
            s += &format!(
                " {} | {} |",
                fmt_mean_std(&v(&|x| x.test_full.map_or(f64::NAN, |m| m.hr)), 1.0, 4),
                fmt_mean_std(&v(&|x| x.test_full.map_or(f64::NAN, |m| m.ndcg)), 1.0, 4),
            );
        }
        let tail_loss = |x: &RecRunResult| {
            let tail = (x.history.len() / 10).max(1);
            x.history[x.history.len().saturating_sub(tail)..]
                .iter()
                .map(|h| h.loss)
                .sum::<f64>()
                / tail as f64
        };
        s += &format!(" {} |\n", fmt_mean_std(&v(&tail_loss), 1.0, 3));
    }
    s += &format!(
        "| popularity | {:.4} | {:.4} | {:.4} | {:.4} |",
        r.popularity_test.hr,
        r.popularity_test.ndcg,
        r.popularity_valid.hr,
        r.popularity_valid.ndcg
    );
    if let Some(p) = r.popularity_full {
        s += &format!(" {:.4} | {:.4} |", p.hr, p.ndcg);
    }
    s += " - |\n";
    s += &format!(
        "\n{}: {} users ({} dropped with < 3 interactions), {} items, {} interactions; {} negatives per user; {} steps of {} sequences, max_len {}; {} seed(s).\n",
        r.source,
        r.users,
        r.dropped_users,
        r.n_items,
        r.interactions,
        r.study.n_negatives,
        r.study.train.steps,
        r.study.train.batch_size,
        r.study.max_len,
        r.study.seeds.len(),
    );
    let c = &r.contrasts;
    if c.hr.is_empty() {
        return s;
    }
    s += "\nPaired contrasts (a - b per seed, 95% t-interval, Holm across the study's contrasts):\n\n| contrast | metric | mean | 95% interval | Holm p | reading |\n|---|---|---|---|---|---|\n";
    for (metric, list) in [
        (format!("test HR@{k}"), &c.hr),
        (format!("test NDCG@{k}"), &c.ndcg),
        (format!("full HR@{k}"), &c.full_hr),
        (format!("full NDCG@{k}"), &c.full_ndcg),
    ] {
        for m in list {
            s += &format!(
                "| {} - {} | {metric} | {:+.4} | [{:+.4}, {:+.4}] | {:.3} | {} |\n",
                m.a, m.b, m.seeds.mean, m.seeds.lo, m.seeds.hi, m.holm_p, m.verdict
            );
        }
    }
    if !c.mcnemar.is_empty() {
        s += "\nMcNemar's exact test on per-user test hits (Holm across all tests of one ranking):\n\n| contrast | seed | ranking | only a hits | only b hits | p | Holm p |\n|---|---|---|---|---|---|---|\n";
        for m in &c.mcnemar {
            s += &format!(
                "| {} - {} | {} | {} | {} | {} | {:.4} | {:.4} |\n",
                m.a, m.b, m.seed, m.ranking, m.a_only, m.b_only, m.p, m.holm_p
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items 10-50 get dense ids 1-5: user 1 rates 10 20 30 40 (ids 1-4), user 2 rates 50 10
    /// 20 (ids 5, 1, 2). User 1's test target is d (4) and it never saw 5; user 2's
    /// target is b (2) and it never saw 3 or 4.
    #[test]
    fn full_candidates_are_the_target_then_every_unseen_item() {
        let text = "1 10 5 1\n1 20 5 2\n1 30 5 3\n1 40 5 4\n2 50 5 1\n2 10 5 2\n2 20 5 3\n";
        let data = parse_movielens(text, "hand").unwrap();
        let split = leave_one_out(&data);
        assert_eq!(data.n_items, 5);
        assert_eq!(
            full_candidates(&data, &split),
            vec![vec![4, 5], vec![2, 3, 4]]
        );
    }

    /// k = 2. User 0: target 0.9 above both negatives (hit); user 1: two negatives above
    /// (miss); user 2: one above and one tied: ranks 1 and 2 equally likely, expected hit 1/2
    /// (a hit when rounded); user 3: NaN target (miss).
    #[test]
    fn per_user_hits_match_the_metrics() {
        let scores = vec![
            vec![0.9, 0.1, 0.2],
            vec![0.1, 0.5, 0.6],
            vec![0.5, 0.7, 0.5],
            vec![f32::NAN, 0.1, 0.2],
        ];
        let (m, hits) = ranked(2, &scores).unwrap();
        assert_eq!(hits, vec![1, 0, 1, 0]);
        assert!(
            (m.hr - (1.0 + 0.0 + 0.5 + 0.0) / 4.0).abs() < 1e-12,
            "{m:?}"
        );
        assert!(ranked(2, &[vec![]]).is_err());
    }

    fn run(arm: &str, seed: u64, hr: f64, hits: &[u8]) -> RecRunResult {
        let m = RankMetrics {
            hr,
            ndcg: hr / 2.0,
            users: hits.len(),
        };
        RecRunResult {
            arm: arm.into(),
            seed,
            history: vec![],
            evals: vec![],
            test: m,
            test_hits: hits.to_vec(),
            test_full: None,
            test_full_hits: vec![],
            seconds: 0.0,
        }
    }

    /// Seed 0: a hits users 0-7, b users 6-9: a only 6, b only 2 -> p = 2 x P(X <= 2 | 8) =
    /// 2 x 37/256. Seed 1: identical hits -> p = 1. Holm over the two: sorted 0.289 x 2,
    /// then 1. HR contrasts pair by seed; no full ranking, no full contrasts or tests.
    #[test]
    fn contrasts_count_discordant_users_per_seed() {
        let study = RecStudy {
            arms: vec![
                ItemArm {
                    name: "b".into(),
                    regime: Regime::Static { dupe_factor: 1 },
                },
                ItemArm {
                    name: "a".into(),
                    regime: Regime::Dynamic {},
                },
            ],
            ..RecStudy::default()
        };
        let a0 = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
        let b0 = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1];
        let runs = vec![
            run("a", 0, 0.8, &a0),
            run("b", 0, 0.4, &b0),
            run("a", 1, 0.7, &b0),
            run("b", 1, 0.4, &b0),
        ];
        let c = rec_contrasts(&study, &runs);
        assert_eq!(c.mcnemar.len(), 2);
        let (m0, m1) = (&c.mcnemar[0], &c.mcnemar[1]);
        assert_eq!((m0.a.as_str(), m0.b.as_str()), ("a", "b"));
        assert_eq!((m0.seed, m0.a_only, m0.b_only), (0, 6, 2));
        let p0 = 2.0 * 37.0 / 256.0;
        assert!((m0.p - p0).abs() < 1e-10, "{m0:?}");
        assert!((m0.holm_p - 2.0 * p0).abs() < 1e-10, "{m0:?}");
        assert_eq!((m1.a_only, m1.b_only, m1.p, m1.holm_p), (0, 0, 1.0, 1.0));
        assert_eq!(c.hr.len(), 1);
        assert_eq!(c.hr[0].seeds.n, 2);
        assert!((c.hr[0].seeds.mean - 0.35).abs() < 1e-12);
        assert!(c.full_hr.is_empty() && c.full_ndcg.is_empty());
    }

    #[test]
    fn contrasts_and_jobs_are_checked_by_field() {
        let bad = RecStudy {
            contrasts: vec![["dynamic".into(), "nope".into()]],
            ..RecStudy::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("nope"));
        let same = RecStudy {
            contrasts: vec![["dynamic".into(), "dynamic".into()]],
            ..RecStudy::default()
        };
        assert!(same
            .validate()
            .unwrap_err()
            .to_string()
            .contains("contrasts"));
        let jobs = RecStudy {
            jobs: 0,
            ..RecStudy::default()
        };
        assert!(jobs.validate().unwrap_err().to_string().contains("jobs"));
    }
}
