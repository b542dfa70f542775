//! Every kernel against the reference kernel on random shapes (lengths that are not multiples of
//! the tile size, B and H > 1) for every built-in mask and combinations, outputs and q/k/v
//! gradients under `Autodiff`.
//!
//! Tolerances (f32): outputs |err| <= 1e-5 + 1e-4 |ref|; gradients |err| <= 1e-4 + 1e-3 |ref|
//! (derivation in conformance.rs).

use crate::common::*;
use burn::backend::Autodiff;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use mask_attn::kernels::{block_sparse, fused, host as host_kernel, reference};
use mask_attn::*;

/// `fused_grads`: also compare the fused kernel's gradients (burn's decomposition). On wgpu they
/// are NaN for rows without a visible key (upstream), so wgpu checks its outputs only.
fn check_case<B: AutodiffBackend>(seed: u64, fused_grads: bool, device: &B::Device) {
    let mut rng = mask_core::MaskRng::for_example(seed, 0, 0, 11);
    let mut pick = |xs: &[usize]| xs[rng.below(xs.len() as u64) as usize];
    let batch = pick(&[1, 2, 3]);
    let heads = pick(&[1, 2, 3]);
    let t = pick(&[1, 5, 17, 33, 50]);
    let d = pick(&[4, 8]);
    let tile = pick(&[4, 8, 16, 32]);
    let shape = [batch, heads, t, d];
    let n = batch * heads * t * d;
    for kind in 0..crate::common::random_masks::KINDS.len() {
        let mask = crate::common::random_masks::make(kind, batch, heads, t, seed);
        let data = |s: u64| normal(n, seed * 100 + s);
        let run = |which: u8| {
            forward_backward::<B>(
                data(1),
                data(2),
                data(3),
                data(4),
                shape,
                shape,
                shape,
                device,
                |q, k, v| match which {
                    0 => {
                        let m = mask_tensor::<B>(&*mask, batch, heads, t, t, device).unwrap();
                        reference::attention(q, k, v, Some(m), None, None)
                    }
                    1 => block_sparse::attention(
                        q,
                        k,
                        v,
                        &*mask,
                        &AttnOptions::default().with_tile(tile),
                        None,
                    )
                    .unwrap(),
                    _ => fused::attention(q, k, v, &*mask, None).unwrap(),
                },
            )
        };
        let expected = run(0);
        for (which, name) in [(1, "block_sparse"), (2, "fused")] {
            let got = run(which);
            let what = format!(
                "seed {seed} {name} mask {} B{batch} H{heads} T{t} D{d} tile {tile}",
                crate::common::random_masks::KINDS[kind]
            );
            assert_close(
                &format!("{what}: output"),
                &got[0],
                &wide(&expected[0]),
                1e-5,
                1e-4,
            );
            if which == 2 && !fused_grads {
                continue;
            }
            for (g, gname) in [(1, "dq"), (2, "dk"), (3, "dv")] {
                assert_close(
                    &format!("{what}: {gname}"),
                    &got[g],
                    &wide(&expected[g]),
                    1e-4,
                    1e-3,
                );
            }
        }
    }
}

/// The host kernel (forward only, per-example tile maps) against the reference on the same
/// random shapes, masks and tile sizes, plus lengths large enough for several key runs.
fn check_host<B: Backend>(seed: u64, device: &B::Device) {
    let mut rng = mask_core::MaskRng::for_example(seed, 0, 0, 12);
    let mut pick = |xs: &[usize]| xs[rng.below(xs.len() as u64) as usize];
    let batch = pick(&[1, 2, 3]);
    let heads = pick(&[1, 2, 3]);
    let t = pick(&[1, 5, 17, 33, 50, 130]);
    let d = pick(&[4, 8, 64]);
    let tile = pick(&[4, 8, 16, 32]);
    let shape = [batch, heads, t, d];
    let n = batch * heads * t * d;
    for kind in 0..crate::common::random_masks::KINDS.len() {
        let mask = crate::common::random_masks::make(kind, batch, heads, t, seed);
        let data = |s: u64| tensor::<B>(normal(n, seed * 100 + s), shape, device);
        let m = mask_tensor::<B>(&*mask, batch, heads, t, t, device).unwrap();
        let expected = host(reference::attention(
            data(1),
            data(2),
            data(3),
            Some(m),
            None,
            None,
        ));
        let opts = AttnOptions::default().with_tile(tile);
        let got = host(host_kernel::attention(data(1), data(2), data(3), &*mask, &opts).unwrap());
        let what = format!(
            "seed {seed} host mask {} B{batch} H{heads} T{t} D{d} tile {tile}",
            crate::common::random_masks::KINDS[kind]
        );
        assert_close(&what, &got, &wide(&expected), 1e-5, 1e-4);
    }
}

#[test]
fn host_kernel_agrees_with_reference_on_random_shapes() {
    for seed in 0..16 {
        check_host::<Cpu>(seed, &Default::default());
        check_host::<burn::backend::Flex>(seed, &Default::default());
    }
}

#[test]
fn ndarray_kernels_agree_with_reference_on_random_shapes() {
    for seed in 0..12 {
        check_case::<Autodiff<Cpu>>(seed, true, &Default::default());
    }
}

#[test]
fn flex_kernels_agree_with_reference_on_random_shapes() {
    for seed in 0..12 {
        check_case::<Autodiff<burn::backend::Flex>>(seed, true, &Default::default());
    }
}

#[cfg(feature = "wgpu-fusion-tests")]
#[test]
fn wgpu_fusion_kernels_agree_with_reference_on_random_shapes() {
    for seed in 0..3 {
        check_case::<Autodiff<Gpu>>(seed, false, &Default::default());
    }
}

#[cfg(feature = "wgpu-tests")]
#[test]
fn wgpu_unfused_kernels_agree_with_reference_on_random_shapes() {
    for seed in 0..3 {
        check_case::<Autodiff<GpuUnfused>>(seed, false, &Default::default());
    }
}
