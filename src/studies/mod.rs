//! Studies: comparisons of masking arms over seeds, each arm-seed pair one run of the
//! `mask-train` [`Learner`](mask_train::Learner) in a directory of its own. A study TOML names
//! its kind (`kind = "text"`, `"vision"`, `"recsys"` or `"multitask"`); [`load_study`] reads any of them.
//!
//! ```text
//! <out_dir>/
//!   tokenizer-<digest>.json        (text) the tokenizer, named by corpus and settings
//!   <arm slug>/seed-<n>/           one run: config.json, checkpoints/, log.jsonl, result.json
//!   results.json, report.md        the study's results and table
//!   curves.svg                     learning curves
//! ```

pub mod arm;
pub mod multitask;
pub mod plot;
pub mod probe;
pub mod recsys;
pub mod report;
pub mod stats;
pub mod text;
pub mod vision;

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use arm::{check_unique_slugs, slug};

/// What can go wrong in a study (beyond the engine's and the data's own errors).
#[derive(Debug, Error)]
pub enum StudyError {
    /// The engine failed (config, data, non-finite values, checkpoints, ...).
    #[error(transparent)]
    Train(#[from] mask_train::TrainError),
    /// Reading data failed.
    #[error(transparent)]
    Data(#[from] mask_data::DataError),
    /// The study file is unreadable or invalid.
    #[error("study `{path}`: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Two arms would share a run directory.
    #[error(
        "arms `{first}` and `{second}` both map to the run directory `{slug}`: rename one \
         (arm names must differ in letters or digits)"
    )]
    DuplicateArm {
        /// The first arm's name.
        first: String,
        /// The second arm's name.
        second: String,
        /// The shared slug.
        slug: String,
    },
    /// A results file or figure could not be written or read.
    #[error("`{path}`: {reason}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<mask_model::ModelError> for StudyError {
    fn from(e: mask_model::ModelError) -> Self {
        Self::Train(e.into())
    }
}

impl From<mask_core::MaskError> for StudyError {
    fn from(e: mask_core::MaskError) -> Self {
        Self::Train(e.into())
    }
}

/// Result alias of the studies.
pub type Result<T> = std::result::Result<T, StudyError>;

/// An [`mask_train::TrainError::InvalidConfig`] as a study error.
pub fn invalid(field: &'static str, value: impl ToString, expected: impl ToString) -> StudyError {
    mask_train::error::invalid(field, value, expected).into()
}

/// `Option<usize>` as a count or the word `"all"` (TOML has no null; the word keeps a study and
/// its copy in `results.json` round-tripping exactly). Use with
/// `#[serde(with = "count_or_all")]`.
pub mod count_or_all {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Count(usize),
        Word(String),
    }

    /// Serialises `None` as `"all"`.
    pub fn serialize<S: Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n as u64),
            None => s.serialize_str("all"),
        }
    }

    /// Reads a count or `"all"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Count(n) => Ok(Some(n)),
            Repr::Word(w) if w == "all" => Ok(None),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a count or \"all\", found \"{w}\""
            ))),
        }
    }
}

/// Any study, by its `kind`.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Study {
    /// Masked-LM pretraining on text, then fine-tuning (`kind = "text"`).
    Text(text::TextStudy),
    /// MAE pretraining on images, then a linear probe (`kind = "vision"`).
    Vision(vision::VisionStudy),
    /// BERT4Rec on interaction sequences (`kind = "recsys"`).
    Recsys(recsys::RecStudy),
    /// Several objectives on one shared encoder (`kind = "multitask"`).
    Multitask(multitask::MultitaskStudy),
}

impl Study {
    /// The study's output directory.
    pub fn out_dir(&self) -> &str {
        match self {
            Study::Text(s) => &s.out_dir,
            Study::Vision(s) => &s.out_dir,
            Study::Recsys(s) => &s.out_dir,
            Study::Multitask(s) => &s.out_dir,
        }
    }

    /// Checks every setting of every section, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        match self {
            Study::Text(s) => s.validate(),
            Study::Vision(s) => s.validate(),
            Study::Recsys(s) => s.validate(),
            Study::Multitask(s) => s.validate(),
        }
    }

    /// Parses a study TOML: its `kind` picks the type, then the whole text is read as that
    /// type, so errors keep their line and field.
    pub fn from_toml(text: &str) -> std::result::Result<Study, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let parse = |e: toml::de::Error| e.to_string();
        match table.get("kind").map(|k| k.as_str()) {
            Some(Some("text")) => toml::from_str(text).map(Study::Text).map_err(parse),
            Some(Some("vision")) => toml::from_str(text).map(Study::Vision).map_err(parse),
            Some(Some("recsys")) => toml::from_str(text).map(Study::Recsys).map_err(parse),
            Some(Some("multitask")) => toml::from_str(text).map(Study::Multitask).map_err(parse),
            Some(other) => Err(format!(
                "`kind` = {} is not a study kind: expected \"text\", \"vision\", \"recsys\" or \"multitask\"",
                other.map_or_else(|| table["kind"].to_string(), |s| format!("\"{s}\""))
            )),
            None => Err(
                "no `kind`: expected kind = \"text\", \"vision\", \"recsys\" or \"multitask\""
                    .into(),
            ),
        }
    }
}

/// Reads and validates a study TOML (any kind).
pub fn load_study(path: &Path) -> Result<Study> {
    let err = |reason: String| StudyError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let study = Study::from_toml(&text).map_err(err)?;
    study.validate()?;
    Ok(study)
}

/// The `kind` field of a study struct: present in its TOML and JSON, checked on validation.
pub(crate) fn check_kind(kind: &str, expected: &str) -> Result<()> {
    if kind != expected {
        return Err(invalid(
            "kind",
            kind,
            format!("\"{expected}\" for this study type"),
        ));
    }
    Ok(())
}

/// How a study treats run directories that already hold state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Existing {
    /// Refuse to touch them (the default: nothing is overwritten silently).
    #[default]
    Refuse,
    /// Continue them: a finished run's result is reused, an unfinished one resumes from its
    /// newest checkpoint (same settings required).
    Resume,
    /// Delete their state and start over.
    Fresh,
    /// As `Resume`, but a finished text run is scored again under the study's current held-out
    /// protocol from its newest checkpoint; its training record (steps, evaluations, wall
    /// time) is kept. For when the protocol or a mask it draws changed, not the training.
    Rescore,
}

/// What a study reports as it goes; the binary renders it.
#[derive(Debug, Clone, Copy)]
pub enum StudyEvent<'a> {
    /// A setup phase, e.g. "tokenizer trained (4096 tokens)".
    Note(&'a str),
    /// A run starts or resumes.
    RunStarted {
        /// `arm / seed n`.
        run: &'a str,
        /// Steps already done.
        done: u64,
        /// Total steps.
        steps: u64,
    },
    /// A training step finished.
    Step {
        /// The run.
        run: &'a str,
        /// Its record.
        record: &'a mask_train::StepRecord,
        /// Its timing.
        timing: mask_train::StepTiming,
    },
    /// An evaluation finished.
    Eval {
        /// The run.
        run: &'a str,
        /// Steps done.
        step: u64,
        /// The task's score (lower is better).
        score: f64,
    },
    /// A run finished (or was reused from its result file).
    RunFinished {
        /// The run.
        run: &'a str,
        /// Whether its result was read rather than computed.
        reused: bool,
    },
}

/// Where study events go.
pub type Sink<'a> = &'a mut dyn FnMut(StudyEvent<'_>);

/// Forwards a learner's events to a study sink, tagged with the run's name.
pub(crate) fn forward<'s, M>(
    run: &'s str,
    sink: &'s mut dyn FnMut(StudyEvent<'_>),
) -> impl FnMut(&mask_train::LearnerEvent<'_, M>) + 's {
    move |e| match e {
        mask_train::LearnerEvent::Started { step, steps, .. } => sink(StudyEvent::RunStarted {
            run,
            done: *step,
            steps: *steps,
        }),
        mask_train::LearnerEvent::Step { record, timing } => sink(StudyEvent::Step {
            run,
            record,
            timing: *timing,
        }),
        mask_train::LearnerEvent::Eval(r) => sink(StudyEvent::Eval {
            run,
            step: r.step,
            score: r.score,
        }),
        _ => {}
    }
}

/// A [`StudyEvent`] that owns its data, to cross from a worker thread to the sink's thread.
enum OwnedEvent {
    Note(String),
    RunStarted(String, u64, u64),
    Step(String, mask_train::StepRecord, mask_train::StepTiming),
    Eval(String, u64, f64),
    RunFinished(String, bool),
}

impl OwnedEvent {
    fn from(e: StudyEvent<'_>) -> Self {
        match e {
            StudyEvent::Note(t) => Self::Note(t.into()),
            StudyEvent::RunStarted { run, done, steps } => {
                Self::RunStarted(run.into(), done, steps)
            }
            StudyEvent::Step {
                run,
                record,
                timing,
            } => Self::Step(run.into(), record.clone(), timing),
            StudyEvent::Eval { run, step, score } => Self::Eval(run.into(), step, score),
            StudyEvent::RunFinished { run, reused } => Self::RunFinished(run.into(), reused),
        }
    }

    fn emit(&self, sink: Sink<'_>) {
        sink(match self {
            Self::Note(t) => StudyEvent::Note(t),
            Self::RunStarted(run, done, steps) => StudyEvent::RunStarted {
                run,
                done: *done,
                steps: *steps,
            },
            Self::Step(run, record, timing) => StudyEvent::Step {
                run,
                record,
                timing: *timing,
            },
            Self::Eval(run, step, score) => StudyEvent::Eval {
                run,
                step: *step,
                score: *score,
            },
            Self::RunFinished(run, reused) => StudyEvent::RunFinished {
                run,
                reused: *reused,
            },
        })
    }
}

/// Runs `work` on every item, `jobs` at a time on threads of their own, and returns the
/// results in the items' order. Events reach `sink` on the calling thread. After a failure no
/// new item starts; the first failure (in item order) is returned once the running ones end.
/// With `jobs = 1` everything runs on the calling thread, in order.
pub(crate) fn run_parallel<J: Send, T: Send>(
    jobs: usize,
    items: Vec<J>,
    sink: Sink<'_>,
    work: impl Fn(J, Sink<'_>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Mutex};
    if jobs <= 1 || items.len() <= 1 {
        return items.into_iter().map(|j| work(j, &mut *sink)).collect();
    }
    enum Message<T> {
        Event(OwnedEvent),
        Done(usize, Result<T>),
    }
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Message<T>>();
    let mut done: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(n) {
            let (tx, queue, failed, work) = (tx.clone(), &queue, &failed, &work);
            scope.spawn(move || loop {
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some((i, item)) = next else { break };
                let mut forward = |e: StudyEvent<'_>| {
                    let _ = tx.send(Message::Event(OwnedEvent::from(e)));
                };
                // Each run gets a one-thread rayon pool of its own: its kernels' parallel parts
                // run inline on this thread instead of queueing on the global pool behind the
                // other runs' (no oversubscription: `jobs` threads in all). Measured on 2 cores
                // with 3 runs, throughput per run was about the same either way (2.0-2.4k
                // tokens/s); the point is that each run's work stays on its own thread.
                let r = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(pool) => pool.install(|| work(item, &mut forward)),
                    Err(_) => work(item, &mut forward),
                };
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                let _ = tx.send(Message::Done(i, r));
            });
        }
        drop(tx);
        for m in rx {
            match m {
                Message::Event(e) => e.emit(&mut *sink),
                Message::Done(i, r) => done[i] = Some(r),
            }
        }
    });
    if let Some(e) = done.iter_mut().find_map(|r| match r {
        Some(Err(_)) => r.take().and_then(|r| r.err()),
        _ => None,
    }) {
        return Err(e);
    }
    Ok(done
        .into_iter()
        .map_while(|r| r.and_then(|r| r.ok()))
        .collect())
}

/// The memory allowed to one run: 80% of the machine's available memory (Linux
/// `/proc/meminfo`), or 8 GiB where that cannot be read.
pub fn memory_limit_bytes() -> u64 {
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    avail.map_or(8 << 30, |a| a / 5 * 4)
}

/// Bytes a training step of a Transformer needs, roughly: activations kept for the backward
/// pass (per layer: attention scores and probabilities `B H T^2`, about 12 `B T d` for the
/// projections, norms and residuals, `2 B T d_ff` for the feed-forward), the logits `B T V`
/// twice, and parameters with gradients and two Adam moments (`4 x`), all f32.
#[allow(clippy::too_many_arguments)]
pub fn transformer_step_bytes(
    batch: usize,
    seq: usize,
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
    d_ff: usize,
    vocab: usize,
) -> u64 {
    let (b, t, d, h, l, f, v) = (
        batch as u64,
        seq as u64,
        d_model as u64,
        n_heads as u64,
        n_layers as u64,
        d_ff as u64,
        vocab as u64,
    );
    let per_layer = 2 * b * h * t * t + 12 * b * t * d + 2 * b * t * f;
    let params = v * d + t * d + l * (4 * d * d + 2 * d * f);
    4 * (l * per_layer + 2 * b * t * v + 4 * params)
}

/// Refuses a step that would not fit in memory, with the estimate in the message.
pub fn check_fits(what: &str, bytes: u64, hint: &str) -> Result<()> {
    let limit = memory_limit_bytes();
    if bytes > limit {
        return Err(mask_train::TrainError::TooLarge {
            what: what.to_string(),
            needed_mib: bytes >> 20,
            limit_mib: limit >> 20,
            hint: hint.to_string(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Study {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name);
        load_study(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn shipped_configs_parse_validate_and_equal_their_defaults() {
        assert_eq!(
            shipped("static_vs_dynamic.toml"),
            Study::Text(text::TextStudy::default())
        );
        assert_eq!(
            shipped("mae_fashion_mnist.toml"),
            Study::Vision(vision::VisionStudy::default())
        );
        assert_eq!(
            shipped("bert4rec_movielens.toml"),
            Study::Recsys(recsys::RecStudy::default())
        );
        let Study::Text(long) = shipped("static_vs_dynamic_long.toml") else {
            panic!("the long main job is not a text study")
        };
        assert_eq!(
            (long.seeds.len(), long.arms.len(), long.train_docs),
            (3, 3, None)
        );
        assert_eq!(long.model, text::TextStudy::default().model);
        // The anchor designs: five seeds, the main job's model and protocol, one declared
        // contrast each.
        for (name, arms, seeds, contrasts) in [
            (
                "anchor_roberta.toml",
                &["static k=10", "dynamic"][..],
                &[0, 1, 2, 3, 4][..],
                1,
            ),
            (
                "anchor_ankner.toml",
                &["constant 15%", "decay 30%->15%"],
                &[0, 1, 2, 3, 4],
                1,
            ),
            (
                "anchor_span.toml",
                &["token", "whole-word", "span", "PMI-span"],
                &[0, 1, 2],
                4,
            ),
            (
                "anchor_wettig.toml",
                &["15%", "40%", "40% corrupt / 15% predict", "15% x2.7 steps"],
                &[0, 1, 2],
                4,
            ),
        ] {
            let Study::Text(s) = shipped(name) else {
                panic!("{name} is not a text study")
            };
            let names: Vec<&str> = s.arms.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, arms, "{name}");
            assert_eq!(s.seeds, seeds, "{name}");
            assert_eq!(s.contrast_pairs().len(), contrasts, "{name}");
            assert!(s.pos_probe.enabled, "{name}");
            assert_eq!(s.model, text::TextStudy::default().model, "{name}");
            assert_eq!(
                s.eval_masks,
                text::TextStudy::default().eval_masks,
                "{name}"
            );
        }
        // Wettig's controls: 15% of the tokens predicted at 40% corruption; 15% trained for as
        // many predictions as 40% (683 x 0.15 = 256 x 0.40 = 102.4 per token position).
        let Study::Text(w) = shipped("anchor_wettig.toml") else {
            panic!("anchor_wettig.toml is not a text study")
        };
        let (subset, longer) = (&w.arms[2], &w.arms[3]);
        let rate = subset.rate.rate_at(0) * subset.corruption.predict_prob;
        assert!((rate - 0.15).abs() < 1e-12, "{rate}");
        assert_eq!((w.train_config(longer, 0).steps, w.train.steps), (683, 256));
        let predictions =
            |arm: &text::ArmConfig| w.train_config(arm, 0).steps as f64 * arm.rate.rate_at(0);
        assert!((predictions(longer) - predictions(&w.arms[1])).abs() < 0.1);
        // The MAE anchor: 100 epochs of 2,000 images, the default model, every training image
        // scored for memorisation.
        let Study::Vision(mae) = shipped("anchor_mae.toml") else {
            panic!("anchor_mae.toml is not a vision study")
        };
        assert_eq!(
            (mae.seeds.len(), mae.train_images, mae.memorisation_images),
            (3, Some(2000), 2000)
        );
        assert_eq!(mae.train.steps * mae.train.batch_size as u64, 100 * 2000);
        assert_eq!(2000 % mae.train.batch_size, 0, "no partial batch dropped");
        assert_eq!(mae.model, vision::VisionStudy::default().model);
        assert_eq!(mae.contrast_pairs().len(), 1);
        // The BERT4Rec anchor: the default study's model and schedule, three arms, full ranking.
        let Study::Recsys(rec) = shipped("anchor_bert4rec.toml") else {
            panic!("anchor_bert4rec.toml is not a recsys study")
        };
        let names: Vec<&str> = rec.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["static (k=1)", "static (k=10)", "dynamic"]);
        assert_eq!((rec.seeds.len(), rec.contrast_pairs().len()), (3, 3));
        assert!(rec.full_ranking);
        let base = recsys::RecStudy::default();
        assert_eq!(
            (
                rec.max_len,
                rec.d_model,
                rec.n_heads,
                rec.n_layers,
                rec.d_ff
            ),
            (
                base.max_len,
                base.d_model,
                base.n_heads,
                base.n_layers,
                base.d_ff
            )
        );
        assert_eq!((rec.mask_prob, rec.dropout), (base.mask_prob, base.dropout));
        assert_eq!(rec.train, base.train);
        for name in ["masking_study.toml", "masking_study_reduced.toml"] {
            let Study::Text(s) = shipped(name) else {
                panic!("{name} is not a text study")
            };
            assert_eq!(s.seeds.len(), 3, "{name}");
            let names: Vec<&str> = s.arms.iter().map(|a| a.name.as_str()).collect();
            for want in [
                "static k=1",
                "static k=10",
                "dynamic 15%",
                "dynamic 40%",
                "decay 30%->15%",
                "whole-word",
                "span",
                "PMI-span",
                "loss-aware",
                "learned",
            ] {
                assert!(names.contains(&want), "{name}: no arm {want}");
            }
        }
    }

    #[test]
    fn the_kind_picks_the_type_and_errors_name_it() {
        assert!(Study::from_toml("kind = \"audio\"")
            .unwrap_err()
            .contains("\"audio\""));
        assert!(Study::from_toml("name = \"x\"")
            .unwrap_err()
            .contains("no `kind`"));
        assert!(Study::from_toml("kind = 3")
            .unwrap_err()
            .contains("`kind` = 3"));
        let s = Study::from_toml("kind = \"vision\"").unwrap();
        assert_eq!(s, Study::Vision(vision::VisionStudy::default()));
        let t = text::TextStudy {
            kind: "vision".into(),
            ..Default::default()
        };
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`kind` = vision"));
    }

    #[test]
    fn limits_and_clipping_round_trip_through_json_without_nulls() {
        let mut t = text::TextStudy {
            train_docs: None,
            ..Default::default()
        };
        t.finetune.grad_clip = None;
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["train_docs"], "all");
        assert_eq!(json["finetune"]["grad_clip"], "off");
        assert!(report::find_null(&json, "").is_none());
        assert_eq!(serde_json::from_value::<text::TextStudy>(json).unwrap(), t);
    }

    /// Runs on threads: results in item order whatever finishes first, every event forwarded,
    /// the same results as one at a time; after a failure nothing new starts and the error is
    /// returned.
    #[test]
    fn parallel_runs_keep_order_forward_events_and_stop_after_a_failure() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut seen = vec![];
        let work = |i: u64, sink: Sink<'_>| {
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_millis(20 - 2 * i));
            sink(StudyEvent::Note(&format!("item {i}")));
            Ok(i * 10)
        };
        let mut sink = |e: StudyEvent<'_>| {
            if let StudyEvent::Note(t) = e {
                seen.push(t.to_string())
            }
        };
        let out = run_parallel(3, (0..8).collect(), &mut sink, work).unwrap();
        assert_eq!(out, (0..8).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(
            out,
            run_parallel(1, (0..8).collect(), &mut |_| {}, work).unwrap()
        );
        seen.sort();
        assert_eq!(
            seen,
            (0..8).map(|i| format!("item {i}")).collect::<Vec<_>>()
        );
        let started = AtomicUsize::new(0);
        let err = run_parallel(2, (0..50u64).collect(), &mut |_| {}, |i, _| {
            started.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            if i == 3 {
                Err(invalid("item", i, "not 3"))
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("`item` = 3"), "{err}");
        let n = started.load(Ordering::SeqCst);
        assert!(
            (4..=6).contains(&n),
            "{n} items started after item 3 failed"
        );
    }

    #[test]
    fn the_memory_estimate_grows_with_the_square_of_the_length() {
        let short = transformer_step_bytes(32, 64, 128, 2, 2, 512, 4096);
        let long = transformer_step_bytes(32, 100_000, 128, 2, 2, 512, 4096);
        assert!(short < 256 << 20, "{short}");
        assert!(long > 1 << 40, "{long}");
        assert!(check_fits("x", long, "lower max_len")
            .unwrap_err()
            .to_string()
            .contains("MiB"));
    }
}
