//! One MLM training step of `bert-small-peer` (vocab 8192, d_model 256, 4 layers, 4 heads,
//! d_ff 1024) at batch 32 x 128, on each backend (`ndarray/`, `flex/`, and `wgpu/` when
//! `DYNMASK_BENCH_WGPU` is set): forward, masked-LM loss, backward and
//! an AdamW update, dropout 0.1 on. Throughput counts every input token (4,096 per step), as
//! the HuggingFace peer measurement does.
//!
//! Two variants: `masked_positions` (the head runs on the ~15% masked positions only, how
//! `mask-train` trains) and `all_positions` (logits at every position, then the loss at the
//! masked ones: what HF `BertForMaskedLM` computes).
//!
//! Run: `cargo bench --bench model_step`. `iter_custom` syncs the device before reading the clock.

use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, NdArray, Wgpu};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mask_attn::AllowAll;
use mask_core::MaskRng;
use mask_model::*;

const BATCH: usize = 32;
const SEQ: usize = 128;

fn step_bench<B: AutodiffBackend>(c: &mut Criterion, backend: &str) {
    let device = Default::default();
    let config = MlmConfig::new(TextEncoderConfig::preset("bert-small-peer").unwrap());
    let vocab = config.encoder.vocab_size;
    let mut rng = MaskRng::for_example(7, 0, 0, 0);
    let ids: Vec<u32> = (0..BATCH * SEQ)
        .map(|_| 5 + rng.below(vocab as u64 - 5) as u32)
        .collect();
    let labels: Vec<i32> = ids
        .iter()
        .map(|&id| {
            if rng.next_f64() < 0.15 {
                id as i32
            } else {
                -100
            }
        })
        .collect();
    let targets = MaskedTargets::from_labels(&labels, vocab).unwrap();

    let mut group = c.benchmark_group(format!("{backend}/bert_small_peer_step"));
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(40));
    group.warm_up_time(Duration::from_secs(5));
    for (name, all_positions) in [("masked_positions", false), ("all_positions", true)] {
        let mut model = Some(config.init::<B>(&device).unwrap());
        let mut optim = AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, MlmModel<B>>();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let m = model.take().unwrap();
                    let x = ids_tensor::<B>("ids", &ids, BATCH, vocab, &device).unwrap();
                    let (positions, t) = targets.to_tensors::<B>(&device);
                    let logits = if all_positions {
                        let full = m.forward(x, &AllowAll).unwrap(); // [B, T, V]
                        full.reshape([BATCH * SEQ, vocab]).select(0, positions)
                    } else {
                        m.forward_at(x, &AllowAll, positions).unwrap()
                    };
                    let loss = masked_lm_loss(logits, t);
                    let grads = GradientsParams::from_grads(loss.backward(), &m);
                    model = Some(optim.step(1e-4, m, grads));
                }
                B::sync(&device).unwrap();
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    step_bench::<Autodiff<NdArray<f32>>>(c, "ndarray");
    step_bench::<Autodiff<Flex>>(c, "flex");
    if std::env::var("DYNMASK_BENCH_WGPU").is_ok() {
        step_bench::<Autodiff<Wgpu>>(c, "wgpu");
    }
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
