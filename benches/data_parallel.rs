//! Data-parallel training (issue 15): the learner's masked-LM step on one peer against two
//! peers (threads sharing the one CPU device, burn-collective's local all-reduce), on each CPU
//! backend (`ndarray/`, `flex/`). Both cases train the same global batch of 32 Austen paragraphs
//! of at most 128 tokens with a 4-layer encoder of width 256 (4 heads, d_ff 1024, WordPiece
//! vocabulary 4096, dropout 0.1); throughput counts every real input token.
//!
//! On a machine with C cores a CPU backend already spreads one peer's matrix products over the
//! cores, so two peers mainly overlap the single-threaded parts of the step (element-wise ops,
//! the optimizer) and add one all-reduce of every gradient per step: read the ratio as what a
//! second peer buys on this machine, not as GPU scaling.
//!
//! Run: `cargo bench --bench data_parallel`. Each iteration is one step; a sample is one
//! `fit_until` session (the peers start once per sample, counted in its time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mask_core::{MaskingConfig, SelectorResources, VocabSpec};
use mask_data::{text, TextTokenizer, TokenizerConfig};
use mask_model::{MlmConfig, TextEncoderConfig, TransformerConfig};
use mask_train::tasks::mlm::{EvalSet, MlmTask};
use mask_train::{Learner, ParallelOptions, TrainConfig};

const BATCH: usize = 32;
const MAX_LEN: usize = 128;

fn task() -> (MlmTask, usize) {
    let texts: Vec<String> = text::austen_paragraphs()
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .take(2048)
        .collect();
    let config = TokenizerConfig {
        vocab_size: 4096,
        ..TokenizerConfig::default()
    };
    let tok = TextTokenizer::train(&texts, &config).unwrap();
    let docs = Arc::new(tok.encode_batch(&texts, MAX_LEN).unwrap());
    let tokens_per_batch = docs.iter().map(|d| d.ids.len()).sum::<usize>() * BATCH / docs.len();
    let vocab = VocabSpec::new(tok.vocab_size() as u32, tok.mask_id, tok.special_ids());
    let eval_policy = MaskingConfig::new(vocab.clone()).build().unwrap();
    let eval = EvalSet::new(&docs[..8], eval_policy, tok.pad_id, 8, 1).unwrap();
    let encoder = TextEncoderConfig::new(TransformerConfig::new(256, 4, 4, 1024), tok.vocab_size())
        .with_max_len(MAX_LEN);
    let task = MlmTask::new(
        MlmConfig::new(encoder),
        MaskingConfig::new(vocab),
        &SelectorResources::default(),
        docs,
        Arc::new(eval),
        &tok,
    )
    .unwrap();
    (task, tokens_per_batch)
}

fn peers_bench<B: AutodiffBackend>(c: &mut Criterion, backend: &str, setup: &(MlmTask, usize)) {
    let device: B::Device = Default::default();
    let (task, tokens) = setup;
    let mut group = c.benchmark_group(format!("{backend}/mlm_step_data_parallel"));
    group.throughput(Throughput::Elements(*tokens as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.warm_up_time(Duration::from_secs(5));
    for peers in [1usize, 2] {
        let config = TrainConfig {
            steps: u64::MAX / 2,
            batch_size: BATCH,
            eval_every: 0,
            ..TrainConfig::default()
        };
        let mut learner = Learner::<B, MlmTask>::new(task.clone(), config, &device)
            .unwrap()
            .data_parallel(vec![device.clone(); peers - 1], ParallelOptions::default())
            .unwrap();
        group.bench_function(format!("peers_{peers}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let until = learner.step_count() + iters;
                learner.fit_until(until, &mut |_| {}).unwrap();
                B::sync(&device).unwrap();
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let setup = task();
    peers_bench::<Autodiff<NdArray<f32>>>(c, "ndarray", &setup);
    peers_bench::<Autodiff<Flex>>(c, "flex", &setup);
}

criterion_group!(data_parallel, benches);
criterion_main!(data_parallel);
