//! `MaskedSelfAttention`: shapes, kernels agree, token exclusion removes influence, bad configs
//! are refused.

use crate::common::*;
use burn::prelude::*;
use mask_attn::*;

fn x(batch: usize, t: usize, d: usize, seed: u64) -> Tensor<Cpu, 3> {
    Tensor::from_data(
        burn::tensor::TensorData::new(normal(batch * t * d, seed), [batch, t, d]),
        &Default::default(),
    )
}

#[test]
fn kernels_agree_inside_the_module() {
    let device = Default::default();
    let base = MaskedSelfAttentionConfig::new(32, 4)
        .with_dropout(0.0)
        .with_tile(8);
    let module: MaskedSelfAttention<Cpu> = base.init(&device).unwrap();
    let input = x(2, 19, 32, 1);
    let mask = And::new(vec![
        Box::new(KeyPadding::from_lengths(&[19, 11], 19).unwrap()),
        Box::new(Causal),
    ])
    .unwrap();
    // burn initialises parameters lazily: clone only after a first forward, or each clone
    // would draw its own weights.
    module.forward(input.clone(), &mask).unwrap();
    let mut outs = vec![];
    for kernel in [
        AttnKernel::Reference,
        AttnKernel::BlockSparse,
        AttnKernel::Fused,
    ] {
        let m = MaskedSelfAttention {
            kernel,
            ..module.clone()
        };
        let y = m.forward(input.clone(), &mask).unwrap();
        assert_eq!(y.dims(), [2, 19, 32]);
        outs.push(host(y));
    }
    assert_close(
        "block_sparse vs reference",
        &outs[1],
        &wide(&outs[0]),
        1e-5,
        1e-4,
    );
    assert_close("fused vs reference", &outs[2], &wide(&outs[0]), 1e-5, 1e-4);
}

#[test]
fn excluded_tokens_have_no_influence() {
    let device = Default::default();
    let module: MaskedSelfAttention<Cpu> = MaskedSelfAttentionConfig::new(16, 2)
        .with_dropout(0.0)
        .init(&device)
        .unwrap();
    let t = 10;
    let excluded: Vec<bool> = (0..t).map(|i| i == 3 || i == 7).collect();
    let mask = TokenExclusion::new(&excluded, 1, t).unwrap();
    let a = x(1, t, 16, 5);
    // Change the excluded positions' inputs completely.
    let mut data = host(a.clone());
    for i in [3, 7] {
        for d in 0..16 {
            data[i * 16 + d] += 10.0;
        }
    }
    let b = Tensor::<Cpu, 3>::from_data(burn::tensor::TensorData::new(data, [1, t, 16]), &device);
    let ya = host(module.forward(a, &mask).unwrap());
    let yb = host(module.forward(b, &mask).unwrap());
    for i in (0..t).filter(|i| !excluded[*i]) {
        for d in 0..16 {
            assert_eq!(ya[i * 16 + d], yb[i * 16 + d], "position {i} changed");
        }
    }
    assert!(ya.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_module_configs_are_refused() {
    let device = Default::default();
    let err = MaskedSelfAttentionConfig::new(30, 4)
        .init::<Cpu>(&device)
        .unwrap_err();
    assert!(err.to_string().contains("n_heads"), "{err}");
    let err = MaskedSelfAttentionConfig::new(32, 4)
        .with_dropout(1.0)
        .init::<Cpu>(&device)
        .unwrap_err();
    assert!(err.to_string().contains("dropout"), "{err}");
    let module: MaskedSelfAttention<Cpu> =
        MaskedSelfAttentionConfig::new(32, 4).init(&device).unwrap();
    let pad = KeyPadding::from_lengths(&[3], 5).unwrap();
    let err = module.forward(x(1, 6, 32, 0), &pad).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
}
