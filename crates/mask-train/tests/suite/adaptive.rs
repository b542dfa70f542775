//! Adaptive masking through the learner: the per-token losses reach the policy, its masks move
//! away from uniform, the rate holds, its state is checkpointed and a resumed run continues
//! bit for bit; a checkpoint without (or with corrupt) state is refused.

use std::path::PathBuf;
use std::sync::Arc;

use crate::common::*;
use mask_core::{MaskingConfig, SelectionConfig, SelectorResources, TokenStats};
use mask_model::checkpoint::Container;
use mask_train::tasks::mlm::MASKING_STATE;
use mask_train::{Learner, ResumeOptions, TrainConfig, TrainError};

fn train(steps: u64) -> TrainConfig {
    TrainConfig {
        seed: 5,
        ..tiny_train(steps)
    }
}

fn adaptive_selections() -> [(&'static str, SelectionConfig); 2] {
    [
        (
            "loss_aware",
            SelectionConfig::LossAware {
                ema_decay: 0.9,
                temperature: 1.0,
                uniform_mix: 0.2,
            },
        ),
        (
            "learned",
            SelectionConfig::Learned {
                embed_dim: 8,
                hidden: 16,
                learning_rate: 0.05,
                temperature: 1.0,
                uniform_mix: 0.2,
                init_seed: 3,
            },
        ),
    ]
}

#[test]
fn adaptive_policies_learn_from_losses_and_resume_exactly() {
    let _s = serial();
    let (tok, docs, vocab) = text_setup(64, 24);
    let device = Default::default();
    let stats = TokenStats::from_docs(vocab.vocab_size, docs.iter().map(|d| d.ids.as_slice()));
    let res = SelectorResources {
        token_stats: Some(Arc::new(stats.unwrap())),
        ..SelectorResources::default()
    };
    let plain = {
        let task = mlm_task(&tok, &docs, MaskingConfig::new(vocab.clone()), &res);
        let mut l = Learner::<B, _>::new(task, train(16), &device).unwrap();
        l.fit(&mut |_| {}).unwrap();
        l.state().history.clone()
    };
    for (name, selection) in adaptive_selections() {
        let task = mlm_task(
            &tok,
            &docs,
            MaskingConfig::new(vocab.clone()).with_selection(selection),
            &res,
        );
        assert!(<_ as mask_train::TrainTask<B>>::is_adaptive(&task));
        let dir = temp_dir(name);
        let fresh = dir.join("fresh.dynmask");
        Learner::<B, _>::new(task.clone(), train(16), &device)
            .unwrap()
            .save(&fresh)
            .unwrap();
        let _ = assert_resume_exact(task.clone(), train(16), 7, &dir);
        let mut a = Learner::<B, _>::new(task, train(16), &device).unwrap();
        a.fit(&mut |_| {}).unwrap();
        let end = dir.join("end.dynmask");
        a.save(&end).unwrap();
        let state = |p: &PathBuf| {
            Container::read(p)
                .unwrap()
                .get(MASKING_STATE)
                .unwrap_or_else(|| panic!("{name}: no {MASKING_STATE} in {}", p.display()))
                .to_vec()
        };
        // The policy learned something: its state moved.
        assert_ne!(state(&fresh), state(&end), "{name}: state never changed");
        // Adaptive masks are not the plain Bernoulli masks once the policy has feedback.
        let history = &a.state().history;
        let differ = history
            .iter()
            .zip(&plain)
            .filter(|(x, y)| x.digest != y.digest)
            .count();
        assert!(differ >= 8, "{name}: only {differ} of 16 steps differ");
        // The rate holds. Each example masks the floor or the ceiling of its budget 0.15 m
        // (proportional sampling), unbiased, so the total over n = 128 examples has variance at
        // most n / 4: 6 sd of the rate is 6 sqrt(n / 4) / maskable.
        let (masked, maskable): (usize, usize) = history
            .iter()
            .fold((0, 0), |(m, n), r| (m + r.items, n + r.tokens - 2 * 8));
        let rate = masked as f64 / maskable as f64;
        let bound = 6.0 * (128.0f64 / 4.0).sqrt() / maskable as f64;
        assert!(
            (rate - 0.15).abs() < bound,
            "{name}: rate {rate}, bound {bound}"
        );
    }
}

#[test]
fn resume_refuses_an_adaptive_checkpoint_without_its_state() {
    let _s = serial();
    let (tok, docs, vocab) = text_setup(32, 16);
    let device = Default::default();
    let (_, selection) = adaptive_selections()[0];
    let task = mlm_task(
        &tok,
        &docs,
        MaskingConfig::new(vocab).with_selection(selection),
        &SelectorResources::default(),
    );
    let mut l = Learner::<B, _>::new(task.clone(), train(3), &device).unwrap();
    l.fit(&mut |_| {}).unwrap();
    let dir = temp_dir("nostate");
    let path = dir.join("ckpt");
    l.save(&path).unwrap();
    let full = Container::read(&path).unwrap();
    type Edit<'a> = &'a dyn Fn(&str, &[u8]) -> Option<Vec<u8>>;
    let rewrite = |name: &str, f: Edit| {
        let mut c = Container::default();
        for s in full.names() {
            if let Some(bytes) = f(s, full.get(s).unwrap()) {
                c.insert(s, bytes);
            }
        }
        let p = dir.join(name);
        c.write(&p).unwrap();
        p
    };
    let resume = |p: &PathBuf| {
        Learner::<B, _>::resume(task.clone(), train(3), p, ResumeOptions::default(), &device)
    };
    let stripped = rewrite("stripped", &|s, b| (s != MASKING_STATE).then(|| b.to_vec()));
    let err = resume(&stripped).err().unwrap();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(err.to_string().contains(MASKING_STATE), "{err}");
    // A corrupt state is refused with the policy's reason, not a panic.
    let corrupt = rewrite("corrupt", &|s, b| {
        Some(if s == MASKING_STATE {
            b[..b.len() / 2].to_vec()
        } else {
            b.to_vec()
        })
    });
    let err = resume(&corrupt).err().unwrap();
    assert!(err.to_string().contains("masking state"), "{err}");
    assert!(resume(&path).is_ok());
}
