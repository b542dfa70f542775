//! Our side of `scripts/bench_vs_peers.sh`: one measurement per process, printed as one JSON
//! line `{"bench": NAME, "value": x, "unit": ...}`, so that the script can interleave our runs
//! with the PyTorch peers' (`benches/peers/*.py`) run for run. Each measurement matches its
//! peer's workload exactly (shapes, masks, thread count, what is timed):
//!
//! - `mask_generation`: the Bernoulli 15% 80/10/10 `BatchMasker` on 256 x 128 BERT-shaped rows
//!   (vocab 30522, `[CLS] ... [SEP]`, 0-20% padding), one thread, a fresh mask per call
//!   (peer: `collator.py`);
//! - `attention <mask> <len> [fwd|fwd_bwd]`: B4 H8 D64 f32 masked attention, `none`,
//!   `window128` (causal band 0 <= q - k < 128) or `documents4` (four equal documents). Forward
//!   uses the host kernel on flex; forward+backward its autodiff node under `Autodiff<Flex>`
//!   (`host_train`; peer: `sdpa.py`);
//! - `train_step <all|masked>`: one `bert-small-peer` MLM step at 32 x 128 on `Autodiff<Flex>`,
//!   forward, loss at ~15% positions, backward and AdamW, dropout 0.1 (peer:
//!   `hf_bert_step.py`). `all` computes logits at every position as HF does; `masked` runs the
//!   head at the masked positions only, as `mask-train` trains. Attention through the host
//!   kernel's autodiff node (`DYNMASK_PEER_KERNEL=block_sparse`: the burn-ops kernel).
//!
//! `DYNMASK_PEER_BACKEND=ndarray|wgpu` runs the train step (and forward+backward attention) on
//! that backend instead of flex; on wgpu the forward attention uses burn's fused kernel, the GPU
//! fast path (the host kernel is for CPUs).
//!
//! Run: `cargo bench --bench peer_pairs -- attention window128 2048 fwd`. The median of `--reps`
//! timed runs (default 5) after warm-up is printed; figures are comparable only within one run
//! of the script (the machine is noisy).

use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray, Wgpu};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use mask_attn::kernels::{fused, host, host_train};
use mask_attn::*;
use mask_core::{
    BatchContext, BatchMasker, MaskRng, MaskedBatch, MaskingConfig, RateSchedule, Regime,
    SelectionConfig, TokenBatch, VocabSpec,
};
use mask_model::*;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median seconds of `reps` calls after `warm` untimed ones.
fn time(warm: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn emit(bench: &str, value: f64, unit: &str) {
    println!("{{\"bench\": \"{bench}\", \"value\": {value}, \"unit\": \"{unit}\"}}");
}

fn mask_generation(reps: usize) {
    const BATCH: usize = 256;
    const SEQ: usize = 128;
    let mut rng = MaskRng::for_example(1, 2, 3, 4);
    let (mut ids, mut special) = (vec![], vec![]);
    for _ in 0..BATCH {
        let real = SEQ - rng.below((SEQ / 5) as u64) as usize;
        for i in 0..SEQ {
            let (id, sp) = match i {
                0 => (101, true),
                i if i == real - 1 => (102, true),
                i if i >= real => (0, true),
                _ => (1000 + rng.below(29_000) as u32, false),
            };
            ids.push(id);
            special.push(sp);
        }
    }
    let indices: Vec<u64> = (0..BATCH as u64).collect();
    let batch = TokenBatch {
        batch: BATCH,
        seq_len: SEQ,
        ids: &ids,
        special_mask: &special,
        word_ids: None,
        tags: None,
        example_indices: &indices,
    };
    let policy = MaskingConfig::new(VocabSpec::new(30522, 103, vec![0, 100, 101, 102, 103]))
        .with_selection(SelectionConfig::Bernoulli {})
        .with_rate(RateSchedule::constant(0.15))
        .with_regime(Regime::Dynamic {})
        .build()
        .expect("valid masking config");
    let mut masker = BatchMasker::new(policy);
    let mut out = MaskedBatch::default();
    let mut epoch = 0u64;
    // One call is ~0.1 ms: time blocks of 50 calls.
    let secs = time(3, reps.max(20), || {
        for _ in 0..50 {
            epoch += 1;
            masker
                .mask_batch_into(
                    std::hint::black_box(&batch),
                    BatchContext {
                        seed: 42,
                        epoch,
                        step: epoch,
                    },
                    &mut out,
                )
                .expect("valid batch");
        }
    }) / 50.0;
    emit("mask_generation", (BATCH * SEQ) as f64 / secs, "tokens/s");
}

fn attention(mask_name: &str, len: usize, backward: bool, reps: usize) {
    match std::env::var("DYNMASK_PEER_BACKEND").as_deref() {
        Ok("ndarray") => attention_on::<NdArray<f32>>(mask_name, len, backward, reps, false),
        Ok("wgpu") => attention_on::<Wgpu>(mask_name, len, backward, reps, true),
        _ => attention_on::<Flex>(mask_name, len, backward, reps, false),
    }
}

/// `gpu`: forward through burn's fused kernel (a flash kernel on GPU backends) instead of the
/// host kernel.
fn attention_on<Bk: Backend>(mask_name: &str, len: usize, backward: bool, reps: usize, gpu: bool) {
    const B: usize = 4;
    const H: usize = 8;
    const D: usize = 64;
    let mask: Box<dyn AttnMask> = match mask_name {
        "none" => Box::new(AllowAll),
        "window128" => Box::new(SlidingWindow::new(128, true).expect("window >= 1")),
        "documents4" => {
            Box::new(Document::from_lengths(&[len / 4; 4], B).expect("four equal documents"))
        }
        other => panic!("unknown mask {other}: none | window128 | documents4"),
    };
    let n = B * H * len * D;
    let mut rng = MaskRng::for_example(0, 0, len as u64, 0);
    let mut data = || -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect() };
    let (qd, kd, vd) = (data(), data(), data());
    let suffix = if backward { "_bwd" } else { "" };
    let device: Bk::Device = Default::default();
    let secs = if backward {
        let t = |x: &Vec<f32>| {
            Tensor::<Autodiff<Bk>, 4>::from_data(
                TensorData::new(x.clone(), [B, H, len, D]),
                &device,
            )
            .require_grad()
        };
        time(1, reps, || {
            let (q, k, v) = (t(&qd), t(&kd), t(&vd));
            // The host kernel's autodiff node on flex; block-sparse on other backends.
            let out =
                host_train::attention(q, k, v, &*mask, &AttnOptions::default(), None).unwrap();
            let grads = out.sum().backward();
            Autodiff::<Bk>::sync(&device).unwrap();
            std::hint::black_box(grads);
        })
    } else {
        let t = |x: &Vec<f32>| {
            Tensor::<Bk, 4>::from_data(TensorData::new(x.clone(), [B, H, len, D]), &device)
        };
        let (q, k, v) = (t(&qd), t(&kd), t(&vd));
        time(2, reps, || {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            let out = if gpu {
                fused::attention(q, k, v, &*mask, None)
            } else {
                host::attention(q, k, v, &*mask, &AttnOptions::default())
            }
            .unwrap();
            Bk::sync(&device).unwrap();
            std::hint::black_box(out);
        })
    };
    emit(
        &format!("attention_{mask_name}_L{len}{suffix}"),
        secs * 1e3,
        "ms",
    );
}

fn train_step<Bk: AutodiffBackend>(all_positions: bool, reps: usize) {
    const BATCH: usize = 32;
    const SEQ: usize = 128;
    let device = Default::default();
    Bk::seed(&device, 0);
    let mut encoder = TextEncoderConfig::preset("bert-small-peer").unwrap();
    // The host kernel trains on flex through its own autodiff node and falls back to
    // block-sparse on other autodiff backends; `DYNMASK_PEER_KERNEL=block_sparse` measures the
    // burn-ops kernel on flex instead (the lever's before).
    encoder.transformer.kernel = match std::env::var("DYNMASK_PEER_KERNEL").as_deref() {
        Ok("block_sparse") => AttnKernel::BlockSparse,
        _ => AttnKernel::Host,
    };
    let config = MlmConfig::new(encoder);
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
    let mut model = Some(config.init::<Bk>(&device).unwrap());
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .init::<Bk, MlmModel<Bk>>();
    let secs = time(2, reps.max(5), || {
        let m = model.take().unwrap();
        let x = ids_tensor::<Bk>("ids", &ids, BATCH, vocab, &device).unwrap();
        let (positions, t) = targets.to_tensors::<Bk>(&device);
        let logits = if all_positions {
            let full = m.forward(x, &AllowAll).unwrap(); // [B, T, V]
            full.reshape([BATCH * SEQ, vocab]).select(0, positions)
        } else {
            m.forward_at(x, &AllowAll, positions).unwrap()
        };
        let loss = masked_lm_loss(logits, t);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
        Bk::sync(&device).unwrap();
    });
    let name = if all_positions { "all" } else { "masked" };
    emit(
        &format!("train_step_{name}_positions"),
        (BATCH * SEQ) as f64 / secs,
        "tokens/s",
    );
}

fn main() {
    // `cargo bench` appends `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let reps: usize = std::env::var("DYNMASK_PEER_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["mask_generation"] => mask_generation(reps),
        ["attention", mask, len, mode] => attention(
            mask,
            len.parse().expect("length: a positive integer"),
            mode == "fwd_bwd",
            reps,
        ),
        ["train_step", which] => {
            let all = which == "all";
            match std::env::var("DYNMASK_PEER_BACKEND").as_deref() {
                Ok("ndarray") => train_step::<Autodiff<NdArray<f32>>>(all, reps),
                Ok("wgpu") => train_step::<Autodiff<Wgpu>>(all, reps),
                _ => train_step::<Autodiff<Flex>>(all, reps),
            }
        }
        _ => {
            eprintln!(
                "usage: peer_pairs mask_generation | attention <none|window128|documents4> <len> \
                 <fwd|fwd_bwd> | train_step <all|masked>"
            );
            std::process::exit(2);
        }
    }
}
