//! The multi-task learner: one task equals the single-task MLM run bit for bit, a three-task
//! UniLM-style run (MLM, prefix-LM with word dropout, POS tagging) resumes exactly, the
//! schedules draw tasks at their shares, targets are where the definitions put them, and bad
//! settings are refused naming the task and field.

use std::sync::Arc;

use mask_core::{CorruptionConfig, MaskingConfig, RateSchedule, SelectorResources};
use mask_data::{pos, Encoded, TextTokenizer};
use mask_model::mask_attn::AttnMaskConfig;
use mask_model::MlmConfig;
use mask_train::tasks::multitask::{
    eval_rows, MultiTask, MultiTaskConfig, Objective, PrefixRule, TaskData, TaskSchedule, TaskSpec,
};
use mask_train::{Learner, TrainConfig, TrainTask};

use crate::common::*;

fn spec(name: &str, objective: Objective, attention: AttnMaskConfig) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        objective,
        weight: 1.0,
        attention,
        masking: None,
    }
}

fn config(tok: &TextTokenizer, tasks: Vec<TaskSpec>, schedule: TaskSchedule) -> MultiTaskConfig {
    MultiTaskConfig {
        encoder: tiny_encoder(tok.vocab_size()),
        tasks,
        schedule,
        share_lm_head: true,
        tagger_dropout: 0.1,
    }
}

fn split(docs: &Arc<Vec<Encoded>>, eval: usize) -> TaskData {
    TaskData {
        train: Arc::new(docs[eval..].to_vec()),
        eval: Arc::new(docs[..eval].to_vec()),
    }
}

/// Austen paragraphs and tagged Brown sentences under one 300-token tokenizer.
fn unilm_setup() -> (TextTokenizer, Arc<Vec<Encoded>>, Arc<Vec<Encoded>>) {
    let texts = corpus(64);
    let sents: Vec<(Vec<String>, Vec<u16>)> = pos::sentences()
        .unwrap()
        .into_iter()
        .take(64)
        .map(|s| (s.words, s.classes))
        .collect();
    let mut all = texts.clone();
    all.extend(sents.iter().map(|(w, _)| w.join(" ")));
    let tok = tokenizer(&all);
    let docs = tok.encode_batch(&texts, 24).unwrap();
    let other = pos::CLASSES.len() as u16 - 1;
    let tagged = tok.encode_tagged(&sents, other, 24).unwrap();
    (tok, Arc::new(docs), Arc::new(tagged))
}

fn unilm_task(schedule: TaskSchedule) -> MultiTask {
    let (tok, docs, tagged) = unilm_setup();
    let vocab = mask_core::VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    // Word dropout: 10% of the words replaced by [MASK] (the input only; targets stay).
    let dropout = MaskingConfig::new(vocab.clone())
        .with_rate(RateSchedule::Constant { mask_prob: 0.1 })
        .with_corruption(CorruptionConfig {
            mask_replace_prob: 1.0,
            random_replace_prob: 0.0,
            ..CorruptionConfig::default()
        });
    let tasks = vec![
        TaskSpec {
            masking: Some(MaskingConfig::new(vocab)),
            ..spec("mlm", Objective::Mlm {}, AttnMaskConfig::None {})
        },
        TaskSpec {
            masking: Some(dropout),
            weight: 0.5,
            ..spec(
                "seq2seq",
                Objective::NextToken {
                    prefix: PrefixRule::Uniform,
                },
                AttnMaskConfig::PrefixLm { prefix_len: None },
            )
        },
        spec(
            "pos",
            Objective::Tagging {
                n_classes: pos::CLASSES.len(),
            },
            AttnMaskConfig::None {},
        ),
    ];
    MultiTask::new(
        config(&tok, tasks, schedule),
        vec![split(&docs, 16), split(&docs, 16), split(&tagged, 16)],
        &SelectorResources::default(),
        &tok,
    )
    .unwrap()
}

/// A one-task run draws the MLM task's batches with the run seed, starts from the MLM model's
/// weights and does the same arithmetic: equal losses and bit-identical parameters.
#[test]
fn one_mlm_task_trains_exactly_as_the_mlm_task() {
    let _s = serial();
    let (tok, docs, vocab) = text_setup(64, 24);
    let masking = MaskingConfig::new(vocab);
    let single = mlm_task(&tok, &docs, masking.clone(), &Default::default());
    let multi = MultiTask::new(
        config(
            &tok,
            vec![TaskSpec {
                masking: Some(masking),
                ..spec("mlm", Objective::Mlm {}, AttnMaskConfig::None {})
            }],
            TaskSchedule::Proportional {},
        ),
        vec![TaskData {
            train: Arc::clone(&docs),
            eval: Arc::new(docs[..16].to_vec()),
        }],
        &Default::default(),
        &tok,
    )
    .unwrap();
    assert_eq!(
        MlmConfig::new(tiny_encoder(tok.vocab_size()))
            .encoder
            .vocab_size,
        multi.config().encoder.vocab_size
    );
    let device = Default::default();
    let train = tiny_train(12);
    let mut a = Learner::<B, _>::new(single, train.clone(), &device).unwrap();
    a.fit(&mut |_| {}).unwrap();
    let mut b = Learner::<B, _>::new(multi, train, &device).unwrap();
    b.fit(&mut |_| {}).unwrap();
    let la: Vec<f64> = a.state().history.iter().map(|h| h.loss).collect();
    let lb: Vec<f64> = b.state().history.iter().map(|h| h.loss).collect();
    assert_eq!(la, lb);
    assert!(b.state().history.iter().all(|h| h.task == Some(0)));
    assert!(a.state().history.iter().all(|h| h.task.is_none()));
    assert_eq!(param_bytes(a.model()), param_bytes(b.model()));
}

/// The acceptance test of the multi-task issue: three objectives with their own masks, heads
/// and weights, sampled by temperature, resume exactly (digests, losses, evaluations,
/// parameters), and every task trains.
#[test]
fn a_unilm_style_run_resumes_exactly() {
    let _s = serial();
    let task = unilm_task(TaskSchedule::Temperature { temperature: 2.0 });
    assert_eq!(task.heads().len(), 3);
    let config = TrainConfig {
        eval_every: 8,
        ..tiny_train(24)
    };
    let mut learner =
        Learner::<B, _>::new(task.clone(), config.clone(), &Default::default()).unwrap();
    learner.fit(&mut |_| {}).unwrap();
    let tasks: Vec<u32> = learner
        .state()
        .history
        .iter()
        .map(|h| h.task.unwrap())
        .collect();
    for k in 0..3 {
        assert!(tasks.contains(&k), "task {k} never trained: {tasks:?}");
    }
    let eval = &learner.state().evals.last().unwrap().metrics;
    let names: Vec<&str> = eval.tasks.iter().map(|t| t.task.as_str()).collect();
    assert_eq!(names, ["mlm", "seq2seq", "pos"]);
    assert!(eval.tasks.iter().all(|t| t.items > 0 && t.loss.is_finite()));
    assert_resume_exact(task, config, 7, &temp_dir("resume-multitask"));
}

/// Which task a step trains: round robin in turn; fixed shares and temperatures at their
/// probabilities within 5 standard errors over 6,000 steps (binomial SE sqrt(p(1-p)/n), about
/// 0.006 here, so a share off by 0.03 fails); batches are a pure function of the step, whatever
/// the task asked before.
#[test]
fn schedules_draw_tasks_at_their_shares_and_batches_are_pure() {
    let rr = unilm_task(TaskSchedule::RoundRobin {});
    assert!((0..30).all(|s| rr.task_at(3, s) == (s % 3) as usize));
    let n = 6000u64;
    let shares = |task: &MultiTask| {
        let mut c = [0f64; 3];
        (0..n).for_each(|s| c[task.task_at(5, s)] += 1.0);
        c.map(|x| x / n as f64)
    };
    let close = |got: [f64; 3], want: [f64; 3]| {
        for (g, p) in got.iter().zip(want) {
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((g - p).abs() <= 5.0 * se + 1e-12, "{got:?} vs {want:?}");
        }
    };
    let fixed = unilm_task(TaskSchedule::Fixed {
        shares: vec![2.0, 1.0, 1.0],
    });
    close(shares(&fixed), [0.5, 0.25, 0.25]);
    // Temperature 2 over 48 / 48 / 48 training documents: uniform.
    let temp = unilm_task(TaskSchedule::Temperature { temperature: 2.0 });
    close(shares(&temp), [1.0 / 3.0; 3]);
    let mut seq = fixed.clone();
    let digests: Vec<u64> = (0..40)
        .map(|s| {
            let b = TrainTask::<B>::batch(&mut seq, 9, s, 8).unwrap();
            TrainTask::<B>::describe(&seq, &b).digest
        })
        .collect();
    let mut jumpy = fixed;
    for s in [39u64, 3, 17, 0, 25] {
        let b = TrainTask::<B>::batch(&mut jumpy, 9, s, 8).unwrap();
        assert_eq!(
            TrainTask::<B>::describe(&jumpy, &b).digest,
            digests[s as usize],
            "step {s}"
        );
    }
}

/// By hand: rows of 6 and 4 tokens (T = 6) under the evaluation prefix (half): row 0's prefix
/// is 3, so positions 2, 3, 4 predict tokens 3, 4, 5; row 1's is 2, so flat positions 7, 8
/// predict its tokens 2 and 3. Without a prefix every position but the last predicts.
#[test]
fn next_token_targets_follow_the_prefix() {
    let doc = |ids: Vec<u32>| Encoded {
        special_mask: vec![false; ids.len()],
        word_ids: (0..ids.len() as u32).map(Some).collect(),
        tags: None,
        ids,
    };
    let docs = vec![doc(vec![10, 11, 12, 13, 14, 15]), doc(vec![20, 21, 22, 23])];
    let half = Objective::NextToken {
        prefix: PrefixRule::Half,
    };
    let rows = &eval_rows(&half, &docs, None, 0).unwrap()[0];
    assert_eq!(rows.prefix, vec![3, 2]);
    assert_eq!(rows.positions, vec![2, 3, 4, 7, 8]);
    assert_eq!(rows.targets, vec![13, 14, 15, 22, 23]);
    let none = Objective::NextToken {
        prefix: PrefixRule::None,
    };
    let rows = &eval_rows(&none, &docs, None, 0).unwrap()[0];
    assert_eq!(rows.positions, vec![0, 1, 2, 3, 4, 6, 7, 8]);
    assert_eq!(rows.targets, vec![11, 12, 13, 14, 15, 21, 22, 23]);
    // Uniform prefixes lie in 1..len in training and are the half in evaluation.
    assert!((0..200).all(|u| (1..6).contains(&PrefixRule::Uniform.prefix(6, Some(u)))));
    assert_eq!(PrefixRule::Uniform.prefix(6, None), 3);
}

#[test]
fn bad_settings_are_refused_naming_task_and_field() {
    let (tok, docs, vocab) = text_setup(40, 24);
    let data = || vec![split(&docs, 8)];
    let build = |tasks: Vec<TaskSpec>, schedule: TaskSchedule, data: Vec<TaskData>| {
        MultiTask::new(
            config(&tok, tasks, schedule),
            data,
            &Default::default(),
            &tok,
        )
        .unwrap_err()
        .to_string()
    };
    let lm = |attention| {
        spec(
            "lm",
            Objective::NextToken {
                prefix: PrefixRule::None,
            },
            attention,
        )
    };
    // Bidirectional attention lets each position see the token it predicts.
    let e = build(
        vec![lm(AttnMaskConfig::None {})],
        TaskSchedule::RoundRobin {},
        data(),
    );
    assert!(
        e.contains("attention") && e.contains("`lm`") && e.contains("sees 1"),
        "{e}"
    );
    // A prefix-LM mask with a prefix the task does not have leaks nothing: accepted.
    let ok = MultiTask::new(
        config(
            &tok,
            vec![lm(AttnMaskConfig::Causal {})],
            TaskSchedule::RoundRobin {},
        ),
        data(),
        &Default::default(),
        &tok,
    );
    assert!(ok.is_ok());
    let e = build(
        vec![spec("cloze", Objective::Mlm {}, AttnMaskConfig::None {})],
        TaskSchedule::RoundRobin {},
        data(),
    );
    assert!(e.contains("masking") && e.contains("`cloze`"), "{e}");
    let e = build(
        vec![lm(AttnMaskConfig::Causal {})],
        TaskSchedule::Fixed {
            shares: vec![1.0, 1.0],
        },
        data(),
    );
    assert!(
        e.contains("schedule.shares") && e.contains("2 shares"),
        "{e}"
    );
    let e = build(
        vec![lm(AttnMaskConfig::Causal {})],
        TaskSchedule::Temperature { temperature: 0.0 },
        data(),
    );
    assert!(e.contains("schedule.temperature"), "{e}");
    let e = build(
        vec![spec(
            "pos",
            Objective::Tagging { n_classes: 7 },
            AttnMaskConfig::None {},
        )],
        TaskSchedule::RoundRobin {},
        data(),
    );
    assert!(e.contains("tags") && e.contains("`pos`"), "{e}");
    let e = build(
        vec![TaskSpec {
            weight: -1.0,
            ..lm(AttnMaskConfig::Causal {})
        }],
        TaskSchedule::RoundRobin {},
        data(),
    );
    assert!(e.contains("weight") && e.contains("-1"), "{e}");
    let e = build(
        vec![lm(AttnMaskConfig::Causal {})],
        TaskSchedule::RoundRobin {},
        vec![],
    );
    assert!(e.contains("data"), "{e}");
    let _ = vocab;
}
