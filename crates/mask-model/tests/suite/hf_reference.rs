//! The PyTorch reference (tests/data/make_bert_reference.py) and helpers shared by the
//! float32 conformance tests in the suite and the float64 test binary.

#![allow(dead_code)]

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use mask_attn::{AttnKernel, KeyPadding};
use mask_model::*;
use safetensors::SafeTensors;

use crate::common::*;

pub const REFERENCE: &[u8] = include_bytes!("../data/bert_reference.safetensors");

pub fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn ints(st: &SafeTensors, name: &str) -> Vec<i64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Our gradients of `sum(logits * dout)` for six parameters (tied embeddings, attention, exact
/// GELU, layer norm, head), in torch's layout, as `(name, values)`.
pub fn our_gradients<A: AutodiffBackend>(
    kernel: AttnKernel,
    dtype: DType,
) -> Vec<(&'static str, Vec<f64>)> {
    let st = SafeTensors::deserialize(REFERENCE).unwrap();
    let ids_flat: Vec<u32> = ints(&st, "input.ids").iter().map(|&i| i as u32).collect();
    let lengths: Vec<usize> = ints(&st, "input.lengths")
        .iter()
        .map(|&l| l as usize)
        .collect();
    let device = Default::default();
    let mut enc = tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0);
    enc.transformer.kernel = kernel;
    let model = MlmConfig::new(enc).init::<A>(&device).unwrap();
    let model = import_hf_bert_mlm(model, REFERENCE, "bert_reference", &device).unwrap();
    let x = ids_tensor::<A>("input_ids", &ids_flat, 2, VOCAB, &device).unwrap();
    let mask = KeyPadding::from_lengths(&lengths, 12).unwrap();
    let dout = Tensor::<A, 3>::from_data(
        TensorData::new(floats(&st, "grad.dout"), [2, 12, VOCAB]),
        &device,
    );
    let logits = model.forward(x, &mask).unwrap();
    // burn keys a device's default dtypes by device type, so NdArray<f32> and NdArray<f64> in
    // one process share them (the first to run wins): check the model really runs in `dtype`.
    assert_eq!(
        logits.dtype(),
        dtype,
        "the model did not run in the expected dtype"
    );
    let grads = (logits * dout).sum().backward();
    fn read<A: AutodiffBackend, const D: usize>(
        p: &burn::module::Param<Tensor<A, D>>,
        grads: &A::Gradients,
    ) -> Vec<f64> {
        let g = p.val().grad(grads).unwrap();
        g.into_data().convert::<f64>().to_vec::<f64>().unwrap()
    }
    // burn Linear weights are [in, out]; torch's [out, in].
    let t = |v: Vec<f64>, rows: usize, cols: usize| {
        let mut out = vec![0.0; v.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[c * rows + r] = v[r * cols + c];
            }
        }
        out
    };
    let b0 = &model.encoder.transformer.blocks[0];
    let b1 = &model.encoder.transformer.blocks[1];
    vec![
        (
            "bert.embeddings.word_embeddings.weight",
            read(&model.encoder.word_embeddings.weight, &grads),
        ),
        (
            "bert.encoder.layer.0.attention.self.query.weight",
            t(read(&b0.attn.query.weight, &grads), 32, 32),
        ),
        (
            "bert.encoder.layer.0.intermediate.dense.weight",
            t(read(&b0.ff_in.weight, &grads), 32, 64),
        ),
        (
            "bert.encoder.layer.1.output.LayerNorm.weight",
            read(&b1.ff_norm.gamma, &grads),
        ),
        (
            "cls.predictions.transform.dense.weight",
            t(read(&model.head.transform.weight, &grads), 32, 32),
        ),
        ("cls.predictions.bias", read(&model.head.bias, &grads)),
    ]
}

/// Max |ours - torch| over a gradient, and torch's max |x|. HF's word embedding has
/// `padding_idx = 0`: its lookup path sends no gradient to the pad row (the tied decoder path
/// still does). Ours has no padding_idx (in training, pad rows' outputs never reach the loss),
/// so row 0 is left out of that comparison.
pub fn compare(name: &str, mut got: Vec<f64>, mut want: Vec<f64>) -> (f64, f64) {
    if name == "bert.embeddings.word_embeddings.weight" {
        got.drain(..32);
        want.drain(..32);
    }
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    (diff, want.iter().fold(0.0, |m, x| m.max(x.abs())))
}

pub fn doubles(st: &SafeTensors, name: &str) -> Vec<f64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The reference batch: flat ids `[2 * 12]`, lengths and HF's logits `[2, 12, V]`.
pub fn reference_batch() -> (Vec<u32>, Vec<usize>, Vec<f32>) {
    let st = SafeTensors::deserialize(REFERENCE).unwrap();
    (
        ints(&st, "input.ids").iter().map(|&i| i as u32).collect(),
        ints(&st, "input.lengths")
            .iter()
            .map(|&l| l as usize)
            .collect(),
        floats(&st, "output.logits"),
    )
}
