//! Masked attention kernels, generic over backends: reference versus block-sparse (and the host
//! kernel, forward only), forward and forward+backward, B=4, H=8, D=64, f32, L in {512, 1024, 2048}, masks none / causal /
//! window-128 / token-drop 50% / document x4, plus the block-sparse kernel with every tile
//! forced partial (`dense`: the same kernel with a dense mask) and the tile-map build alone.
//!
//! `iter_custom` syncs the device before reading the clock (wgpu is asynchronous).
//!
//! Run: `cargo bench --bench attention` (all), or narrow it with criterion's filter, e.g.
//! `cargo bench --bench attention -- 'flex/attention_fwd/L2048'`. Groups are prefixed with the
//! backend (`ndarray/`, `flex/`; `wgpu/` when `DYNMASK_BENCH_WGPU=1`, slow on lavapipe), so one
//! run compares backends side by side. `DYNMASK_BENCH_L=2048` restricts lengths.

use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, NdArray, Wgpu};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, TensorData};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mask_attn::kernels::{block_sparse, host, reference};
use mask_attn::*;

const BATCH: usize = 4;
const HEADS: usize = 8;
const HEAD_DIM: usize = 64;

fn lengths() -> Vec<usize> {
    match std::env::var("DYNMASK_BENCH_L") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![512, 1024, 2048],
    }
}

fn masks(l: usize) -> Vec<(&'static str, Box<dyn AttnMask>)> {
    vec![
        ("none", Box::new(AllowAll)),
        ("causal", Box::new(Causal)),
        (
            "window128",
            Box::new(SlidingWindow::new(128, true).unwrap()),
        ),
        (
            "tokendrop50",
            Box::new(RandomKeyDrop::new(0.5, 1, BATCH, HEADS, l, false).unwrap()),
        ),
        (
            "document4",
            Box::new(Document::from_lengths(&[l / 4; 4], BATCH).unwrap()),
        ),
        ("causal_dense", Box::new(AllPartial(Causal))),
        (
            "window128_dense",
            Box::new(AllPartial(SlidingWindow::new(128, true).unwrap())),
        ),
    ]
}

fn qkv<B: Backend>(l: usize, device: &B::Device) -> [Tensor<B, 4>; 3] {
    // Host-generated data so every backend sees the same numbers.
    let n = BATCH * HEADS * l * HEAD_DIM;
    let mut rng = mask_core::MaskRng::for_example(0, 0, l as u64, 0);
    let mut t = || {
        let data: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        Tensor::from_data(TensorData::new(data, [BATCH, HEADS, l, HEAD_DIM]), device)
    };
    [t(), t(), t()]
}

fn run<B: Backend>(
    kernel: &str,
    [q, k, v]: [Tensor<B, 4>; 3],
    mask: &dyn AttnMask,
    device: &B::Device,
) -> Tensor<B, 4> {
    let l = q.dims()[2];
    match kernel {
        "reference" => {
            let m = (!mask.is_allow_all())
                .then(|| mask_tensor::<B>(mask, BATCH, HEADS, l, l, device).unwrap());
            reference::attention(q, k, v, m, None, None)
        }
        "host" => host::attention(q, k, v, mask, &AttnOptions::default()).unwrap(),
        _ => block_sparse::attention(q, k, v, mask, &AttnOptions::default(), None).unwrap(),
    }
}

/// Runs `step` `iters` times and returns the elapsed time, syncing the device before the clock
/// starts and after every step (wgpu queues work asynchronously).
fn timed<B: Backend>(device: &B::Device, iters: u64, mut step: impl FnMut()) -> Duration {
    B::sync(device).unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        step();
        B::sync(device).unwrap();
    }
    start.elapsed()
}

fn bench_forward<B: Backend>(c: &mut Criterion, backend: &str, device: &B::Device) {
    let mut group = c.benchmark_group(format!("{backend}/attention_fwd"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for l in lengths() {
        group.throughput(Throughput::Elements((BATCH * l) as u64));
        let inputs = qkv::<B>(l, device);
        for (name, mask) in masks(l) {
            for kernel in ["reference", "block_sparse", "host"] {
                if kernel == "reference" && name.ends_with("_dense") {
                    continue; // identical to the reference with the plain mask
                }
                let id = BenchmarkId::new(format!("L{l}/{kernel}"), name);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        timed::<B>(device, iters, || {
                            std::hint::black_box(run::<B>(kernel, inputs.clone(), &*mask, device));
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

fn bench_backward<B: AutodiffBackend>(c: &mut Criterion, backend: &str, device: &B::Device) {
    let mut group = c.benchmark_group(format!("{backend}/attention_fwd_bwd"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for l in lengths() {
        group.throughput(Throughput::Elements((BATCH * l) as u64));
        let inputs = qkv::<B>(l, device);
        let dout =
            Tensor::<B, 4>::random([BATCH, HEADS, l, HEAD_DIM], Distribution::Default, device);
        for (name, mask) in masks(l) {
            if name == "tokendrop50" || name == "document4" {
                continue; // forward numbers suffice for these; keeps the run short
            }
            for kernel in ["reference", "block_sparse"] {
                if kernel == "reference" && name.ends_with("_dense") {
                    continue;
                }
                let id = BenchmarkId::new(format!("L{l}/{kernel}"), name);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        timed::<B>(device, iters, || {
                            let [q, k, v] = inputs.clone().map(|t| t.require_grad());
                            let out = run::<B>(kernel, [q, k, v], &*mask, device);
                            std::hint::black_box((out * dout.clone()).sum().backward());
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

fn bench_tile_map(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu/tile_map_build");
    for l in lengths() {
        for (name, mask) in masks(l) {
            group.bench_function(BenchmarkId::new(format!("L{l}"), name), |b| {
                b.iter(|| TileMap::build(&*mask, BATCH, HEADS, l, l, 128, 128).unwrap())
            });
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_tile_map(c);
    let cpu = Default::default();
    bench_forward::<NdArray>(c, "ndarray", &cpu);
    bench_backward::<Autodiff<NdArray>>(c, "ndarray", &cpu);
    bench_forward::<Flex>(c, "flex", &Default::default());
    bench_backward::<Autodiff<Flex>>(c, "flex", &Default::default());
    if std::env::var("DYNMASK_BENCH_WGPU").is_ok() {
        let gpu = Default::default();
        bench_forward::<Wgpu>(c, "wgpu", &gpu);
        bench_backward::<Autodiff<Wgpu>>(c, "wgpu", &gpu);
    }
}

criterion_group!(attention, benches);
criterion_main!(attention);
