//! What every study shares about its arms: names, run directories, and how a run directory
//! that already holds state is treated.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use mask_train::run::CheckpointFile;
use mask_train::{
    CheckpointPolicy, Learner, NodeOptions, ParallelOptions, ResumeOptions, RunDir, TrainConfig,
    TrainTask,
};
use serde::de::DeserializeOwned;

use super::{forward, Existing, Result, Sink, StudyError, StudyEvent};

/// The directory name of an arm: lower-case ASCII letters and digits, every other run of
/// characters one `-` (`"static k=1"` -> `static-k-1`).
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "arm".into()
    } else {
        out
    }
}

/// Refuses two arms whose names map to the same directory (or are equal), naming both.
pub fn check_unique_slugs<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen: Vec<(String, &str)> = vec![];
    for name in names {
        let s = slug(name);
        if let Some((_, first)) = seen.iter().find(|(t, _)| *t == s) {
            return Err(StudyError::DuplicateArm {
                first: first.to_string(),
                second: name.to_string(),
                slug: s,
            });
        }
        seen.push((s, name));
    }
    Ok(())
}

/// The arm of `arms` named `name` (`name_of` reads an arm's name), or an error listing them.
pub fn find_arm<'a, A>(arms: &'a [A], name: &str, name_of: impl Fn(&A) -> &str) -> Result<&'a A> {
    arms.iter().find(|a| name_of(a) == name).ok_or_else(|| {
        let known: Vec<&str> = arms.iter().map(&name_of).collect();
        super::invalid(
            "arm",
            name,
            format!("one of the study's arms: {}", known.join(", ")),
        )
    })
}

/// Checks a study's declared `contrasts`: each names two different arms of `arms`.
pub fn check_contrasts<A>(
    contrasts: &[[String; 2]],
    arms: &[A],
    name_of: impl Fn(&A) -> &str + Copy,
) -> Result<()> {
    for [a, b] in contrasts {
        find_arm(arms, a, name_of)?;
        find_arm(arms, b, name_of)?;
        if a == b {
            return Err(super::invalid(
                "contrasts",
                format!("[{a}, {b}]"),
                "two different arms",
            ));
        }
    }
    Ok(())
}

/// `<out_dir>/<arm slug>/seed-<seed>`.
pub fn run_dir(out_dir: &Path, arm: &str, seed: u64) -> PathBuf {
    out_dir.join(slug(arm)).join(format!("seed-{seed}"))
}

/// How a run proceeds given what its directory holds.
#[derive(Debug)]
pub enum RunPlan<R> {
    /// Start from scratch in an empty directory.
    New(RunDir),
    /// Continue from this checkpoint.
    Resume(RunDir, CheckpointFile),
    /// Already finished: its result.
    Finished(RunDir, R),
}

/// Opens a run directory and decides, under `existing`, whether the run starts, resumes or is
/// reused; a directory with state under [`Existing::Refuse`] is an error naming it.
pub fn plan_run<R: DeserializeOwned>(dir: &Path, existing: Existing) -> Result<RunPlan<R>> {
    let run = RunDir::open(dir)?;
    match existing {
        Existing::Fresh => {
            run.clear()?;
            Ok(RunPlan::New(run))
        }
        Existing::Refuse => {
            run.ensure_empty()?;
            Ok(RunPlan::New(run))
        }
        Existing::Resume | Existing::Rescore => {
            let result = run.result_path();
            if result.exists() {
                let text = std::fs::read_to_string(&result).map_err(|e| StudyError::Output {
                    path: result.display().to_string(),
                    reason: e.to_string(),
                })?;
                let r = serde_json::from_str(&text).map_err(|e| StudyError::Output {
                    path: result.display().to_string(),
                    reason: format!("not a result of this study: {e}"),
                })?;
                return Ok(RunPlan::Finished(run, r));
            }
            Ok(match run.latest_checkpoint()? {
                Some(c) => RunPlan::Resume(run, c),
                None => {
                    run.clear()?; // a log without a checkpoint holds nothing to continue
                    RunPlan::New(run)
                }
            })
        }
    }
}

/// The result of the run in `dir` when it has finished and `existing` reuses
/// ([`Existing::Resume`]) or re-scores ([`Existing::Rescore`]) finished runs; `None` otherwise.
pub fn finished_result<R: DeserializeOwned>(dir: &Path, existing: Existing) -> Result<Option<R>> {
    Ok(match existing {
        Existing::Resume | Existing::Rescore => match plan_run::<R>(dir, existing)? {
            RunPlan::Finished(_, r) => Some(r),
            _ => None,
        },
        _ => None,
    })
}

/// Under [`Existing::Resume`], takes a finished run's result to reuse as it is and reports it to
/// `sink` as `label`; `None` (leaving `finished` for re-scoring) under any other policy.
pub fn reuse<R>(
    finished: &mut Option<R>,
    existing: Existing,
    label: &str,
    sink: Sink<'_>,
) -> Option<R> {
    if existing != Existing::Resume {
        return None;
    }
    let r = finished.take()?;
    sink(StudyEvent::RunFinished {
        run: label,
        reused: true,
    });
    Some(r)
}

/// How a single run starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Under a policy for an existing run directory.
    Existing(Existing),
    /// From this checkpoint (into the run's directory), optionally accepting another
    /// `train.steps` (`extend`).
    From {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// Accept another `train.steps`.
        extend: bool,
    },
}

/// Which run of a study, and how it starts and checkpoints.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The seed.
    pub seed: u64,
    /// How it starts.
    pub start: Start,
    /// Checkpoint cadence and retention.
    pub policy: CheckpointPolicy,
    /// Train across nodes (processes) too: see `mask_train::NodeOptions`.
    pub nodes: Option<NodeOptions>,
}

impl RunSpec {
    /// A single-node run of `seed` that starts under `existing` (new, resume, rescore).
    pub fn existing(seed: u64, existing: Existing, policy: CheckpointPolicy) -> Self {
        Self {
            seed,
            start: Start::Existing(existing),
            policy,
            nodes: None,
        }
    }
}

/// Every `(seed, arm)` run of a study, seed-major: all arms of the first seed, then all of the
/// next. Runs start in this order, so an interrupted study holds whole seeds, which paired
/// contrasts need.
pub fn seed_major<'a, A>(seeds: &[u64], arms: &'a [A]) -> Vec<(u64, &'a A)> {
    seeds
        .iter()
        .flat_map(|&seed| arms.iter().map(move |arm| (seed, arm)))
        .collect()
}

/// Starts, resumes or reloads (when finished) the run of `task` in `dir` as `spec` says, then
/// fits it to `config.steps` on `device` (and data-parallel on `peers` as well, when any),
/// reporting to `sink` as `label`.
pub fn train_run<B: AutodiffBackend, T: TrainTask<B>>(
    dir: &Path,
    task: T,
    config: TrainConfig,
    spec: &RunSpec,
    label: &str,
    (device, peers): (&B::Device, &[B::Device]),
    sink: Sink<'_>,
) -> Result<Learner<B, T>> {
    let resume = |task, ckpt: &Path, extend| {
        Learner::resume(
            task,
            config.clone(),
            ckpt,
            ResumeOptions {
                allow_extend: extend,
            },
            device,
        )
    };
    let mut learner = match &spec.start {
        Start::From { checkpoint, extend } => {
            resume(task, checkpoint, *extend)?.attach(RunDir::open(dir)?, spec.policy)?
        }
        Start::Existing(existing) => match plan_run::<serde_json::Value>(dir, *existing)? {
            RunPlan::New(run) => {
                Learner::new(task, config.clone(), device)?.attach(run, spec.policy)?
            }
            RunPlan::Resume(run, ckpt) => {
                resume(task, &ckpt.path, false)?.attach(run, spec.policy)?
            }
            // Finished: reload its newest checkpoint (fitting it again does no step).
            RunPlan::Finished(run, _) => {
                let ckpt = run.latest_checkpoint()?.ok_or_else(|| StudyError::Output {
                    path: run.root().display().to_string(),
                    reason: "a finished run without a checkpoint".into(),
                })?;
                resume(task, &ckpt.path, false)?.attach(run, spec.policy)?
            }
        },
    };
    if !peers.is_empty() || spec.nodes.is_some() {
        let options = ParallelOptions {
            nodes: spec.nodes.clone(),
            ..ParallelOptions::default()
        };
        learner = learner.data_parallel(peers.to_vec(), options)?;
    }
    learner.fit(&mut forward(label, sink))?;
    Ok(learner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_listed_seed_major() {
        let runs = seed_major(&[7, 3], &["a", "b", "c"]);
        let got: Vec<(u64, &str)> = runs.into_iter().map(|(s, a)| (s, *a)).collect();
        assert_eq!(
            got,
            [(7, "a"), (7, "b"), (7, "c"), (3, "a"), (3, "b"), (3, "c")]
        );
        assert!(seed_major::<u8>(&[1], &[]).is_empty());
    }

    #[test]
    fn slugs_are_lower_case_words_joined_by_dashes() {
        assert_eq!(slug("static k=1"), "static-k-1");
        assert_eq!(slug("Dynamic 40%"), "dynamic-40");
        assert_eq!(slug("decay 30%->15%"), "decay-30-15");
        assert_eq!(slug("=="), "arm");
    }

    /// Regression (run-state issue, finding 6): duplicate names merged result rows, and
    /// `static k=1` / `static k_1` wrote the same log file, losing the first arm's log.
    #[test]
    fn colliding_arm_names_are_refused_naming_both() {
        assert!(check_unique_slugs(["static k=1", "static k=4", "dynamic"]).is_ok());
        let e = check_unique_slugs(["static k=1", "dynamic", "static k_1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`static k=1`") && e.contains("`static k_1`") && e.contains("static-k-1"),
            "{e}"
        );
        assert!(check_unique_slugs(["a", "a"]).is_err());
    }
}
