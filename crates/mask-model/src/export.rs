//! Weights as safetensors with names a PyTorch user recognises, through burn-store.
//!
//! BERT models ([`MlmModel`], [`ClassifierModel`]) use the names of HF `BertForMaskedLM` /
//! `BertForSequenceClassification` (the table in `docs/model.md`); Linear weights are stored
//! `[out, in]` as in `torch.nn.Linear` (burn stores `[in, out]`). A post-LN model with learned
//! positions loads into HF with `BertForMaskedLM.from_pretrained` (`dynmask export` writes the
//! folder). Every other module exports by its burn field path
//! (`encoder.blocks.0.attn.query.weight`), with the same Linear layout.
//!
//! What burn-store does, and what stays written here:
//! - burn-store walks the module (`ModuleSnapshot::collect`), converts layouts and LayerNorm
//!   names (`BurnToPyTorchAdapter`: Linear weights transposed, `gamma`/`beta` ->
//!   `weight`/`bias`) and renames paths (`KeyRemapper`, from the table [`HF_BERT_NAMES`]); on
//!   import, `SafetensorsStore` with the inverse renaming and `PyTorchToBurnAdapter` loads the
//!   weights into the model.
//! - Written here: the all-zero `token_type_embeddings` that HF BERT expects and our encoder has
//!   no parameter for (added on export; on import, its row 0 is folded into the position table),
//!   the serialisation of that extended list with the `safetensors` crate (burn-store's store
//!   saves a module's own parameters only), and errors that name the HF tensor at fault.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{
    ApplyResult, BurnToPyTorchAdapter, ChainAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::checkpoint::write_atomic;
use crate::classifier::ClassifierModel;
use crate::config::{NormPlacement, PositionEncoding, TextEncoderConfig};
use crate::error::{ModelError, Result};
use crate::mlm::MlmModel;

/// Named f32 tensors in export order: `(name, shape, row-major values)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedTensors(pub Vec<(String, Vec<usize>, Vec<f32>)>);

/// burn path prefix -> HF BERT name prefix (`{N}`: the layer index), after
/// `BurnToPyTorchAdapter` has renamed LayerNorm `gamma`/`beta` to `weight`/`bias`.
pub const HF_BERT_NAMES: &[(&str, &str)] = &[
    (
        "encoder.word_embeddings.",
        "bert.embeddings.word_embeddings.",
    ),
    (
        "encoder.position_embeddings.",
        "bert.embeddings.position_embeddings.",
    ),
    ("encoder.embed_norm.", "bert.embeddings.LayerNorm."),
    (
        "encoder.transformer.blocks.{N}.attn.query.",
        "bert.encoder.layer.{N}.attention.self.query.",
    ),
    (
        "encoder.transformer.blocks.{N}.attn.key.",
        "bert.encoder.layer.{N}.attention.self.key.",
    ),
    (
        "encoder.transformer.blocks.{N}.attn.value.",
        "bert.encoder.layer.{N}.attention.self.value.",
    ),
    (
        "encoder.transformer.blocks.{N}.attn.output.",
        "bert.encoder.layer.{N}.attention.output.dense.",
    ),
    (
        "encoder.transformer.blocks.{N}.attn_norm.",
        "bert.encoder.layer.{N}.attention.output.LayerNorm.",
    ),
    (
        "encoder.transformer.blocks.{N}.ff_in.",
        "bert.encoder.layer.{N}.intermediate.dense.",
    ),
    (
        "encoder.transformer.blocks.{N}.ff_out.",
        "bert.encoder.layer.{N}.output.dense.",
    ),
    (
        "encoder.transformer.blocks.{N}.ff_norm.",
        "bert.encoder.layer.{N}.output.LayerNorm.",
    ),
    // Not in HF BERT (post-LN only): a dynmask extension for pre-LN models.
    (
        "encoder.transformer.final_norm.",
        "bert.encoder.final_layer_norm.",
    ),
    // BertForMaskedLM's head; `cls.predictions.decoder.weight` is tied to the word embeddings
    // and, as in HF's own files, not stored.
    ("head.transform.", "cls.predictions.transform.dense."),
    ("head.norm.", "cls.predictions.transform.LayerNorm."),
    ("head.bias", "cls.predictions.bias"),
    // BertForSequenceClassification's head (mean pooling has no pooler).
    ("pooler.", "bert.pooler.dense."),
];

/// HF's segment table: two all-zero rows, so HF's `token_type_ids = 0` term is a no-op.
const TOKEN_TYPES: &str = "bert.embeddings.token_type_embeddings.weight";

/// A `KeyRemapper` from each `from` prefix to its `to` prefix. Patterns are anchored at the
/// start, and no output of one pattern starts with another's input (`bert.`/`cls.` vs burn
/// paths), so the remapper's apply-every-pattern loop renames each name at most once.
fn prefix_remapper(pairs: impl Iterator<Item = (&'static str, &'static str)>) -> KeyRemapper {
    let pattern = |p: &str| format!("^{}", p.replace('.', r"\.").replace("{N}", r"(\d+)"));
    let replacement = |p: &str| p.replace("{N}", "${1}");
    KeyRemapper::from_patterns(
        pairs
            .map(|(from, to)| (pattern(from), replacement(to)))
            .collect(),
    )
    .expect("the name table holds valid patterns")
}

fn to_hf() -> KeyRemapper {
    prefix_remapper(HF_BERT_NAMES.iter().copied())
}

fn from_hf() -> KeyRemapper {
    prefix_remapper(HF_BERT_NAMES.iter().map(|&(burn, hf)| (hf, burn)))
}

/// The HF name of a burn path (for errors).
fn hf_name(burn_path: &str) -> String {
    let adapted = burn_path
        .strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| burn_path.strip_suffix(".beta").map(|p| format!("{p}.bias")))
        .unwrap_or_else(|| burn_path.to_string());
    to_hf()
        .to_regex_pairs()
        .iter()
        .find(|(re, _)| re.is_match(&adapted))
        .map(|(re, to)| re.replace(&adapted, to.as_str()).into_owned())
        .unwrap_or(adapted)
}

fn snapshot_values(s: &TensorSnapshot) -> (Vec<usize>, Vec<f32>) {
    let data = s
        .to_data()
        .expect("module parameters are in memory")
        .convert::<f32>();
    let shape = data.shape.to_vec();
    (shape, data.to_vec::<f32>().expect("f32 after convert"))
}

impl NamedTensors {
    /// Every float parameter of `model` through burn-store, in PyTorch layout, renamed by
    /// `remapper` (if any).
    fn collect<B: Backend, M: Module<B>>(model: &M, remapper: Option<KeyRemapper>) -> Self {
        let snapshots = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
        let snapshots = match remapper {
            Some(r) => r.remap(snapshots).0,
            None => snapshots,
        };
        Self(
            snapshots
                .iter()
                .map(|s| {
                    let (shape, values) = snapshot_values(s);
                    (s.full_path(), shape, values)
                })
                .collect(),
        )
    }

    fn with_token_types(mut self, d_model: usize) -> Self {
        // Readers look tensors up by name; where it sits in the list does not matter.
        let zeros = vec![0.0; 2 * d_model];
        self.0
            .push((TOKEN_TYPES.to_string(), vec![2, d_model], zeros));
        self
    }

    /// HF `BertForMaskedLM` names.
    pub fn bert_mlm<B: Backend>(model: &MlmModel<B>) -> Self {
        Self::bert(model, model.encoder.d_model())
    }

    /// HF `BertForSequenceClassification` names (mean pooling has no `bert.pooler`).
    pub fn bert_classifier<B: Backend>(model: &ClassifierModel<B>) -> Self {
        Self::bert(model, model.encoder.d_model())
    }

    /// HF BERT names for any model with a BERT encoder of width `d_model` (the two typed
    /// entry points above keep the public API to the models HF can load).
    fn bert<B: Backend, M: Module<B>>(model: &M, d_model: usize) -> Self {
        Self::collect(model, Some(to_hf())).with_token_types(d_model)
    }

    /// Any module by burn field path, in PyTorch layout (Linear weights `[out, in]`,
    /// LayerNorm `weight`/`bias`).
    pub fn by_path<B: Backend, M: Module<B>>(model: &M) -> Self {
        Self::collect(model, None)
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

/// Casts loaded float tensors to the model's float type: burn-store applies a file's f32 data as
/// f32 tensors, which an f64 model would then mix with its own f64 ones.
#[derive(Debug, Clone)]
struct CastTo(DType);

impl ModuleAdapter for CastTo {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let target = self.0;
        if snapshot.dtype == target || !snapshot.dtype.is_float() {
            return snapshot.clone();
        }
        let data = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            std::rc::Rc::new(move || Ok(data()?.convert_dtype(target))),
            target,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Turns burn-store's report into our errors: a missing tensor or a shape mismatch, named by
/// its HF name.
fn check_applied(result: &ApplyResult, path: &str) -> Result<()> {
    if let Some(e) = result.errors.first() {
        return Err(match e {
            burn_store::ApplyError::ShapeMismatch {
                path: p,
                expected,
                found,
            } => ModelError::Shape {
                what: format!("tensor `{}` in {path}", hf_name(p)),
                expected: format!("{expected:?}"),
                got: format!("{found:?}"),
            },
            other => st_error(path, other.to_string()),
        });
    }
    if let Some((missing, _)) = result.missing.first() {
        return Err(st_error(
            path,
            format!("tensor `{}` is missing", hf_name(missing)),
        ));
    }
    Ok(())
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
    // Tensors of the model (a file may hold others, e.g. inputs and gradients in a fixture).
    for name in st
        .names()
        .into_iter()
        .filter(|n| n.starts_with("bert.") || n.starts_with("cls."))
    {
        let dtype = st.tensor(name).map(|t| t.dtype()).ok();
        if dtype != Some(Dtype::F32) {
            return Err(st_error(
                path,
                format!("tensor `{name}` is {dtype:?}, expected F32"),
            ));
        }
    }
    let e = &model.encoder;
    if e.position_embeddings.is_none() {
        return Err(st_error(
            path,
            "HF BERT import needs a model with learned positions",
        ));
    }
    if e.embed_norm.is_none() {
        return Err(st_error(
            path,
            "HF BERT import needs a post-LN model (embedding LayerNorm)",
        ));
    }
    let d = e.d_model();
    let dtype = e.word_embeddings.weight.val().dtype();
    // burn-store: HF names -> burn paths, PyTorch layout -> burn layout, into the model. The
    // segment table has no parameter here and stays unused; it is folded below.
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()))
        .remap(from_hf())
        .with_from_adapter(ChainAdapter::new(PyTorchToBurnAdapter, CastTo(dtype)))
        .allow_partial(true)
        .validate(false);
    let applied = model
        .load_from(&mut store)
        .map_err(|e| st_error(path, e.to_string()))?;
    check_applied(&applied, path)?;
    if let Ok(tt) = st.tensor(TOKEN_TYPES) {
        let (shape, data) = (tt.shape().to_vec(), tt.data());
        if shape.len() != 2 || shape[1] != d || shape[0] == 0 {
            return Err(ModelError::Shape {
                what: format!("tensor `{TOKEN_TYPES}` in {path}"),
                expected: format!("[n_types, {d}]"),
                got: format!("{shape:?}"),
            });
        }
        let row0: Vec<f32> = data[..4 * d]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let pos = model
            .encoder
            .position_embeddings
            .as_mut()
            .expect("checked above");
        let table = pos.weight.val();
        let [max_len, _] = table.dims();
        // Added in the model's float type (f32 here, f64 in the float64 conformance test).
        let row = Tensor::<B, 2>::from_data(
            TensorData::new(row0, [1, d]).convert_dtype(table.dtype()),
            device,
        );
        // Through host data: the parameter must be a fresh leaf, not the result of an op.
        let folded = (table + row.expand([max_len, d])).into_data();
        pos.weight = burn::module::Param::from_tensor(Tensor::from_data(folded, device));
    }
    Ok(model)
}

/// The `config.json` of HF `BertForMaskedLM` for a model built from `config`, or a typed error
/// naming the first field HF BERT cannot represent (it has learned absolute positions and
/// post-LN blocks; a rotary or pre-LN model would load without error and compute something
/// else).
pub fn hf_bert_config(config: &TextEncoderConfig, pad_token_id: u32) -> Result<serde_json::Value> {
    let t = &config.transformer;
    // The config's own spelling (`rotary`, `pre_ln`).
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    if config.position != PositionEncoding::Learned {
        return Err(ModelError::InvalidConfig {
            field: "position",
            value: name(serde_json::json!(config.position)),
            expected: "learned: HF BERT has learned absolute positions".into(),
        });
    }
    if t.norm != NormPlacement::PostLn {
        return Err(ModelError::InvalidConfig {
            field: "norm",
            value: name(serde_json::json!(t.norm)),
            expected: "post_ln: HF BERT normalises after each sub-layer".into(),
        });
    }
    Ok(serde_json::json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": t.d_model,
        "num_hidden_layers": t.n_layers,
        "num_attention_heads": t.n_heads,
        "intermediate_size": t.d_ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": t.dropout,
        "attention_probs_dropout_prob": t.attn_dropout,
        "max_position_embeddings": config.max_len,
        "type_vocab_size": 2,
        "initializer_range": t.init_std,
        "layer_norm_eps": t.layer_norm_eps,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": true,
    }))
}
