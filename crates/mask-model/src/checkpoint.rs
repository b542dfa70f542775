//! Checkpoints: a small sectioned container (magic, named sections, SHA-256 trailer) written
//! atomically (temp file in the same directory, fsync, rename, fsync of the directory), holding
//! the model kind, its config as JSON and burn's named-MessagePack record of the parameters.
//! Loading rebuilds the model from the caller's config and refuses a checkpoint whose stored
//! config differs, naming the first differing field. `mask-train` adds optimizer, scheduler
//! and policy sections to the same container.
//!
//! Layout: `b"DYNMASK\x01"`, `u32` section count, then per section `u32` name length, name,
//! `u64` payload length, payload; then the SHA-256 of everything before it. Integers are
//! little-endian.

use std::fs;
use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};

const MAGIC: &[u8; 8] = b"DYNMASK\x01";
const KIND: &str = "dynmask.kind";
const CONFIG: &str = "dynmask.config";
const MODEL: &str = "model";

/// Named byte sections with an integrity check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    sections: Vec<(String, Vec<u8>)>,
}

fn corrupt(path: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a section.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        match self.sections.iter_mut().find(|(n, _)| n == name) {
            Some((_, b)) => *b = bytes,
            None => self.sections.push((name.to_string(), bytes)),
        }
    }

    /// A section's bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// A section's bytes, or an error naming the missing section.
    pub fn require(&self, name: &str, path: &str) -> Result<&[u8]> {
        self.get(name)
            .ok_or_else(|| corrupt(path, format!("section `{name}` is missing")))
    }

    /// Section names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(n, _)| n.as_str())
    }

    /// Serialises the container with its checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend((self.sections.len() as u32).to_le_bytes());
        for (name, bytes) in &self.sections {
            out.extend((name.len() as u32).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend((bytes.len() as u64).to_le_bytes());
            out.extend(bytes);
        }
        let digest = Sha256::digest(&out);
        out.extend(digest);
        out
    }

    /// Parses and verifies bytes written by [`to_bytes`](Self::to_bytes); `path` names the
    /// source in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self> {
        if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt(
                path,
                "not a dynmask checkpoint (bad magic or too short)",
            ));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt(
                path,
                "checksum mismatch: the file is truncated or corrupt",
            ));
        }
        let mut at = MAGIC.len();
        let mut take = |n: usize| -> Result<&[u8]> {
            let slice = body
                .get(at..at + n)
                .ok_or_else(|| corrupt(path, "section table runs past the end"))?;
            at += n;
            Ok(slice)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let mut sections = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let name_len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            let name = String::from_utf8(take(name_len)?.to_vec())
                .map_err(|_| corrupt(path, "section name is not UTF-8"))?;
            let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
            sections.push((name, take(len)?.to_vec()));
        }
        Ok(Self { sections })
    }

    /// Writes the container to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    /// Reads and verifies a container file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

/// Writes `bytes` to `path` atomically ([`mask_attn::mask_core::io::write_atomic`]: temp file,
/// fsync, rename, directory fsync; a failed write leaves no temp file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    mask_attn::mask_core::io::write_atomic(path, bytes).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A model config that can rebuild its model; the checkpoint functions are generic over it.
///
/// Implemented by every model config of this crate. A checkpoint round trip, and the refusal of
/// a checkpoint written for another config:
///
/// ```
/// use burn::backend::NdArray;
/// use mask_model::{load_checkpoint, save_checkpoint, MlmConfig, TextEncoderConfig, TransformerConfig};
///
/// type B = NdArray<f32>;
/// let device = Default::default();
/// let config = MlmConfig::new(TextEncoderConfig::new(TransformerConfig::new(16, 2, 1, 32), 50));
/// let model = config.init::<B>(&device)?;
/// let path = std::env::temp_dir().join(format!("mask-model-doc-{}.dynmask", std::process::id()));
/// save_checkpoint::<B, _>(&model, &config, &path)?;
/// let loaded = load_checkpoint::<B, _>(&config, &path, &device)?;
/// assert_eq!(loaded.head.bias.val().into_data(), model.head.bias.val().into_data());
///
/// let wider = MlmConfig::new(TextEncoderConfig::new(TransformerConfig::new(32, 2, 1, 32), 50));
/// assert!(load_checkpoint::<B, _>(&wider, &path, &device).is_err()); // another config: refused
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), mask_model::ModelError>(())
/// ```
pub trait ModelConfig: Serialize + DeserializeOwned + Clone {
    /// Kind tag stored in checkpoints (`"mlm"`, `"classifier"`, ...).
    const KIND: &'static str;
    /// The model this config builds.
    type Model<B: Backend>: Module<B>;
    /// Builds a freshly initialised model.
    fn build<B: Backend>(&self, device: &B::Device) -> Result<Self::Model<B>>;
}

macro_rules! model_config {
    ($config:ty, $kind:literal, $model:ident) => {
        impl ModelConfig for $config {
            const KIND: &'static str = $kind;
            type Model<B: Backend> = crate::$model<B>;
            fn build<B: Backend>(&self, device: &B::Device) -> Result<Self::Model<B>> {
                self.init(device)
            }
        }
    };
}
model_config!(crate::MlmConfig, "mlm", MlmModel);
model_config!(crate::ClassifierConfig, "classifier", ClassifierModel);
model_config!(crate::CausalLmConfig, "causal_lm", CausalLmModel);
model_config!(crate::VitMaeConfig, "vit_mae", VitMae);
model_config!(crate::Bert4RecConfig, "bert4rec", Bert4Rec);
model_config!(
    crate::TokenClassifierConfig,
    "token_classifier",
    TokenClassifierModel
);

/// burn's named-MessagePack record of a module's parameters.
pub fn record_bytes<B: Backend, M: Module<B>>(model: M) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(model.into_record(), ())
        .map_err(|e| corrupt("<memory>", format!("cannot record the model: {e}")))
}

/// Loads a record written by [`record_bytes`] into `model` (built with the same config).
pub fn load_record_bytes<B: Backend, M: Module<B>>(
    model: M,
    bytes: &[u8],
    path: &str,
    device: &B::Device,
) -> Result<M> {
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes.to_vec(), device)
        .map_err(|e| corrupt(path, format!("cannot decode the parameters: {e}")))?;
    Ok(model.load_record(record))
}

/// The kind and config sections of a model, plus its record.
pub fn model_container<B: Backend, C: ModelConfig>(
    model: &C::Model<B>,
    config: &C,
) -> Result<Container> {
    let mut c = Container::new();
    c.insert(KIND, C::KIND.as_bytes().to_vec());
    let json = serde_json::to_vec(config)
        .map_err(|e| corrupt("<memory>", format!("cannot serialise the config: {e}")))?;
    c.insert(CONFIG, json);
    // A clone of a module with uninitialised lazy parameters would draw new values.
    crate::init::materialize(model);
    c.insert(MODEL, record_bytes(model.clone())?);
    Ok(c)
}

/// Saves `model` and its `config` to `path` atomically.
pub fn save_checkpoint<B: Backend, C: ModelConfig>(
    model: &C::Model<B>,
    config: &C,
    path: &Path,
) -> Result<()> {
    model_container::<B, C>(model, config)?.write(path)
}

/// The config stored in a checkpoint container (for tools that load without knowing it).
pub fn stored_config<C: ModelConfig>(container: &Container, path: &str) -> Result<C> {
    let kind = container.require(KIND, path)?;
    if kind != C::KIND.as_bytes() {
        return Err(ModelError::ConfigMismatch {
            path: path.to_string(),
            field: "kind".into(),
            found: String::from_utf8_lossy(kind).into_owned(),
            expected: C::KIND.to_string(),
        });
    }
    serde_json::from_slice(container.require(CONFIG, path)?)
        .map_err(|e| corrupt(path, format!("stored config is malformed: {e}")))
}

/// Rebuilds the model from `config` and loads the container's parameters, refusing a
/// container written for another kind or config.
pub fn model_from_container<B: Backend, C: ModelConfig>(
    container: &Container,
    config: &C,
    path: &str,
    device: &B::Device,
) -> Result<C::Model<B>> {
    let stored: C = stored_config(container, path)?;
    let (found, expected) = (to_value(&stored)?, to_value(config)?);
    if let Some((field, f, e)) = first_difference("", &found, &expected) {
        return Err(ModelError::ConfigMismatch {
            path: path.to_string(),
            field,
            found: f,
            expected: e,
        });
    }
    let model = config.build::<B>(device)?;
    load_record_bytes(model, container.require(MODEL, path)?, path, device)
}

/// Loads a checkpoint written by [`save_checkpoint`] for a model built from `config`.
pub fn load_checkpoint<B: Backend, C: ModelConfig>(
    config: &C,
    path: &Path,
    device: &B::Device,
) -> Result<C::Model<B>> {
    let container = Container::read(path)?;
    model_from_container::<B, C>(&container, config, &path.display().to_string(), device)
}

fn to_value<C: Serialize>(config: &C) -> Result<Value> {
    serde_json::to_value(config).map_err(|e| corrupt("<memory>", format!("config: {e}")))
}

/// The first leaf where two JSON values differ: `(dotted path, found, expected)`.
pub fn first_difference(
    path: &str,
    found: &Value,
    expected: &Value,
) -> Option<(String, String, String)> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (found, expected) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) => first_difference(&join(k), x, y),
                (x, y) => Some((
                    join(k),
                    x.map_or("absent".into(), Value::to_string),
                    y.map_or("absent".into(), Value::to_string),
                )),
            })
        }
        _ if found == expected => None,
        _ => Some((
            if path.is_empty() {
                "<root>".into()
            } else {
                path.to_string()
            },
            found.to_string(),
            expected.to_string(),
        )),
    }
}
