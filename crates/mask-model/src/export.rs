//! Weights as safetensors with names a PyTorch user recognises.
//!
//! BERT models ([`MlmModel`], [`ClassifierModel`]) use the names of HF `BertForMaskedLM` /
//! `BertForSequenceClassification` (see the table in `docs/model.md`); Linear weights are
//! stored `[out, in]` as in `torch.nn.Linear` (burn stores `[in, out]`). A post-LN model with
//! learned positions loads into HF with `BertForMaskedLM.from_pretrained` (the zero
//! `token_type_embeddings` we write make HF's segment term a no-op). Every other module exports
//! by its burn field path (`encoder.blocks.0.attn.query.weight`), with the same Linear
//! transpose. [`import_hf_bert_mlm`] reads HF BERT weights back (used by the PyTorch
//! conformance test).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::checkpoint::write_atomic;
use crate::classifier::ClassifierModel;
use crate::encoder::TextEncoder;
use crate::error::{ModelError, Result};
use crate::mlm::{MlmHead, MlmModel};

/// Named f32 tensors in export order: `(name, shape, row-major values)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedTensors(pub Vec<(String, Vec<usize>, Vec<f32>)>);

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data().convert::<f32>();
    let shape = data.shape.to_vec();
    (shape, data.to_vec::<f32>().expect("f32 after convert"))
}

/// Row-major `[rows, cols]` to `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

impl NamedTensors {
    fn push<B: Backend, const D: usize>(&mut self, name: String, t: Tensor<B, D>) {
        let (shape, v) = values(t);
        self.0.push((name, shape, v));
    }

    fn linear<B: Backend>(&mut self, prefix: &str, l: &Linear<B>) {
        let (shape, v) = values(l.weight.val()); // [in, out]
        self.0.push((
            format!("{prefix}.weight"),
            vec![shape[1], shape[0]],
            transpose(&v, shape[0], shape[1]),
        ));
        if let Some(b) = &l.bias {
            self.push(format!("{prefix}.bias"), b.val());
        }
    }

    fn layer_norm<B: Backend>(&mut self, prefix: &str, n: &LayerNorm<B>) {
        self.push(format!("{prefix}.weight"), n.gamma.val());
        if let Some(b) = &n.beta {
            self.push(format!("{prefix}.bias"), b.val());
        }
    }

    fn encoder<B: Backend>(&mut self, prefix: &str, e: &TextEncoder<B>) {
        let p = |s: &str| format!("{prefix}.{s}");
        self.push(
            p("embeddings.word_embeddings.weight"),
            e.word_embeddings.weight.val(),
        );
        if let Some(pos) = &e.position_embeddings {
            self.push(p("embeddings.position_embeddings.weight"), pos.weight.val());
        }
        let d = e.d_model();
        self.0.push((
            p("embeddings.token_type_embeddings.weight"),
            vec![2, d],
            vec![0.0; 2 * d],
        ));
        if let Some(n) = &e.embed_norm {
            self.layer_norm(&p("embeddings.LayerNorm"), n);
        }
        for (i, block) in e.transformer.blocks.iter().enumerate() {
            let l = |s: &str| format!("{prefix}.encoder.layer.{i}.{s}");
            self.linear(&l("attention.self.query"), &block.attn.query);
            self.linear(&l("attention.self.key"), &block.attn.key);
            self.linear(&l("attention.self.value"), &block.attn.value);
            self.linear(&l("attention.output.dense"), &block.attn.output);
            self.layer_norm(&l("attention.output.LayerNorm"), &block.attn_norm);
            self.linear(&l("intermediate.dense"), &block.ff_in);
            self.linear(&l("output.dense"), &block.ff_out);
            self.layer_norm(&l("output.LayerNorm"), &block.ff_norm);
        }
        if let Some(n) = &e.transformer.final_norm {
            // Not in HF BERT (post-LN only): a dynmask extension for pre-LN models.
            self.layer_norm(&p("encoder.final_layer_norm"), n);
        }
    }

    fn mlm_head<B: Backend>(&mut self, h: &MlmHead<B>) {
        self.linear("cls.predictions.transform.dense", &h.transform);
        self.layer_norm("cls.predictions.transform.LayerNorm", &h.norm);
        // `cls.predictions.decoder.weight` is tied to the word embeddings and, as in HF's own
        // files, not stored.
        self.push("cls.predictions.bias".into(), h.bias.val());
    }

    /// HF `BertForMaskedLM` names.
    pub fn bert_mlm<B: Backend>(model: &MlmModel<B>) -> Self {
        let mut out = Self::default();
        out.encoder("bert", &model.encoder);
        out.mlm_head(&model.head);
        out
    }

    /// HF `BertForSequenceClassification` names (mean pooling has no `bert.pooler`).
    pub fn bert_classifier<B: Backend>(model: &ClassifierModel<B>) -> Self {
        let mut out = Self::default();
        out.encoder("bert", &model.encoder);
        if let Some(p) = &model.pooler {
            out.linear("bert.pooler.dense", p);
        }
        out.linear("classifier", &model.classifier);
        out
    }

    /// Any module by burn field path (Linear weights transposed to `[out, in]`).
    pub fn by_path<B: Backend, M: Module<B>>(model: &M) -> Self {
        let mut v = PathVisitor::default();
        model.visit(&mut v);
        v.out
    }

    /// Serialises as safetensors (f32, with `metadata`).
    pub fn to_safetensors(&self, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
        let bytes: Vec<Vec<u8>> = self
            .0
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = self
            .0
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| st_error("<memory>", format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| st_error("<memory>", e.to_string()))
    }

    /// Writes a safetensors file atomically.
    pub fn save(&self, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
        write_atomic(path, &self.to_safetensors(metadata)?)
    }
}

fn st_error(path: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Collects float parameters with their burn paths.
#[derive(Default)]
struct PathVisitor {
    stack: Vec<(String, String)>,
    out: NamedTensors,
}

impl<B: Backend> ModuleVisitor<B> for PathVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self
            .stack
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let (shape, v) = values(param.val());
        let in_linear = self
            .stack
            .last()
            .is_some_and(|(n, c)| n == "weight" && c == "Struct:Linear");
        if D == 2 && in_linear {
            let t = transpose(&v, shape[0], shape[1]);
            self.out.0.push((name, vec![shape[1], shape[0]], t));
        } else {
            self.out.0.push((name, shape, v));
        }
    }
}

/// Reads named f32 tensors from safetensors bytes, checking shapes.
struct Reader<'a> {
    st: SafeTensors<'a>,
    path: String,
}

impl Reader<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| st_error(&self.path, format!("tensor `{name}` is missing")))?;
        if t.dtype() != Dtype::F32 {
            return Err(st_error(
                &self.path,
                format!("tensor `{name}` is {:?}, expected F32", t.dtype()),
            ));
        }
        if t.shape() != shape {
            return Err(ModelError::Shape {
                what: format!("tensor `{name}` in {}", self.path),
                expected: format!("{shape:?}"),
                got: format!("{:?}", t.shape()),
            });
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn param<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>> {
        let v = self.get(name, &shape)?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(v, shape),
            device,
        )))
    }

    fn linear<B: Backend>(
        &self,
        prefix: &str,
        l: &mut Linear<B>,
        device: &B::Device,
    ) -> Result<()> {
        let [d_in, d_out] = l.weight.val().dims();
        let v = self.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let w = transpose(&v, d_out, d_in); // [in, out]
        l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device));
        if l.bias.is_some() {
            l.bias = Some(self.param(&format!("{prefix}.bias"), [d_out], device)?);
        }
        Ok(())
    }

    fn layer_norm<B: Backend>(
        &self,
        prefix: &str,
        n: &mut LayerNorm<B>,
        device: &B::Device,
    ) -> Result<()> {
        let [d] = n.gamma.val().dims();
        n.gamma = self.param(&format!("{prefix}.weight"), [d], device)?;
        if n.beta.is_some() {
            n.beta = Some(self.param(&format!("{prefix}.bias"), [d], device)?);
        }
        Ok(())
    }

    fn embedding<B: Backend>(
        &self,
        name: &str,
        e: &mut Embedding<B>,
        device: &B::Device,
    ) -> Result<()> {
        let [n, d] = e.weight.val().dims();
        e.weight = self.param(name, [n, d], device)?;
        Ok(())
    }
}

/// Loads HF `BertForMaskedLM` weights (safetensors bytes) into a post-LN, learned-position
/// [`MlmModel`] of the same sizes. HF's segment embedding row 0 (all-zero `token_type_ids`) is
/// folded into the position table, so outputs match HF's with `token_type_ids = 0`.
pub fn import_hf_bert_mlm<B: Backend>(
    mut model: MlmModel<B>,
    bytes: &[u8],
    path: &str,
    device: &B::Device,
) -> Result<MlmModel<B>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_error(path, e.to_string()))?;
    let r = Reader {
        st,
        path: path.to_string(),
    };
    let e = &mut model.encoder;
    let d = e.d_model();
    r.embedding(
        "bert.embeddings.word_embeddings.weight",
        &mut e.word_embeddings,
        device,
    )?;
    let pos = e
        .position_embeddings
        .as_mut()
        .ok_or_else(|| st_error(path, "HF BERT import needs a model with learned positions"))?;
    let [max_len, _] = pos.weight.val().dims();
    let mut table = r.get("bert.embeddings.position_embeddings.weight", &[max_len, d])?;
    let types =
        r.st.tensor("bert.embeddings.token_type_embeddings.weight")
            .ok()
            .map(|t| t.shape()[0]);
    if let Some(n_types) = types {
        let tt = r.get(
            "bert.embeddings.token_type_embeddings.weight",
            &[n_types, d],
        )?;
        for row in table.chunks_exact_mut(d) {
            row.iter_mut().zip(&tt[..d]).for_each(|(p, t)| *p += t);
        }
    }
    pos.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(table, [max_len, d]),
        device,
    ));
    let norm = e.embed_norm.as_mut().ok_or_else(|| {
        st_error(
            path,
            "HF BERT import needs a post-LN model (embedding LayerNorm)",
        )
    })?;
    r.layer_norm("bert.embeddings.LayerNorm", norm, device)?;
    for (i, block) in e.transformer.blocks.iter_mut().enumerate() {
        let l = |s: &str| format!("bert.encoder.layer.{i}.{s}");
        r.linear(&l("attention.self.query"), &mut block.attn.query, device)?;
        r.linear(&l("attention.self.key"), &mut block.attn.key, device)?;
        r.linear(&l("attention.self.value"), &mut block.attn.value, device)?;
        r.linear(&l("attention.output.dense"), &mut block.attn.output, device)?;
        r.layer_norm(
            &l("attention.output.LayerNorm"),
            &mut block.attn_norm,
            device,
        )?;
        r.linear(&l("intermediate.dense"), &mut block.ff_in, device)?;
        r.linear(&l("output.dense"), &mut block.ff_out, device)?;
        r.layer_norm(&l("output.LayerNorm"), &mut block.ff_norm, device)?;
    }
    let h = &mut model.head;
    r.linear("cls.predictions.transform.dense", &mut h.transform, device)?;
    r.layer_norm("cls.predictions.transform.LayerNorm", &mut h.norm, device)?;
    let [v] = h.bias.val().dims();
    h.bias = r.param("cls.predictions.bias", [v], device)?;
    Ok(model)
}
