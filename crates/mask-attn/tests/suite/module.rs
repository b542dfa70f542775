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

/// On `Autodiff<Flex>` the module's projections run through the fused affine maps: its output
/// and gradients equal those of the same weights through burn's `Linear` around the same
/// kernel (a swapped projection, a wrong stride or a lost gradient would not).
#[test]
fn flex_projections_match_burns_linear() {
    type FlexTrain = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    let (batch, t, d_model, h) = (2, 19, 32, 4);
    let module: MaskedSelfAttention<FlexTrain> = MaskedSelfAttentionConfig::new(d_model, h)
        .with_dropout(0.0)
        .with_tile(8)
        .with_kernel(AttnKernel::Host)
        .init(&device)
        .unwrap();
    let mask = And::new(vec![
        Box::new(KeyPadding::from_lengths(&[19, 11], 19).unwrap()),
        Box::new(Causal),
    ])
    .unwrap();
    let data = |seed| {
        burn::tensor::TensorData::new(normal(batch * t * d_model, seed), [batch, t, d_model])
    };
    let input = Tensor::<FlexTrain, 3>::from_data(data(3), &device);
    let weights = Tensor::<FlexTrain, 3>::from_data(data(4), &device);
    // Materialise the lazily initialised parameters before both runs read them.
    module.forward(input.clone(), &mask).unwrap();
    let by_burn = |x: Tensor<FlexTrain, 3>| {
        let split = |p: Tensor<FlexTrain, 3>| p.reshape([batch, t, h, d_model / h]).swap_dims(1, 2);
        let (q, k, v) = (
            split(module.query.forward(x.clone())),
            split(module.key.forward(x.clone())),
            split(module.value.forward(x)),
        );
        let options = AttnOptions::default().with_tile(8);
        let ctx = masked_attention(AttnKernel::Host, q, k, v, &mask, &options, None).unwrap();
        module
            .output
            .forward(ctx.swap_dims(1, 2).reshape([batch, t, d_model]))
    };
    let mut runs = vec![];
    for fused in [true, false] {
        let x = input.clone().require_grad();
        let y = if fused {
            module.forward(x.clone(), &mask).unwrap()
        } else {
            by_burn(x.clone())
        };
        let grads = (y.clone() * weights.clone()).sum().backward();
        let mut values = vec![host(y), host(x.grad(&grads).unwrap())];
        for layer in [&module.query, &module.key, &module.value, &module.output] {
            values.push(host(layer.weight.val().grad(&grads).unwrap()));
            values.push(host(
                layer.bias.as_ref().unwrap().val().grad(&grads).unwrap(),
            ));
        }
        runs.push(values);
    }
    let names = [
        "output", "dx", "dWq", "dbq", "dWk", "dbk", "dWv", "dbv", "dWo", "dbo",
    ];
    for (name, (fused, burn)) in names.iter().zip(runs[0].iter().zip(&runs[1])) {
        assert_close(name, fused, &wide(burn), 1e-5, 1e-4);
    }
}
