//! # mask-train
//!
//! Training Transformers with dynamic masking: embedded real data, a WordPiece tokenizer (HF
//! `tokenizers`), a `(seed, step)`-addressed data pipeline with prefetching workers, the MLM
//! learner loop (AdamW, warm-up + decay, global-norm clipping, fixed-mask evaluation, exact
//! resume), fine-tuning and metrics; a BERT4Rec sequential-recommendation study ([`recsys`]);
//! masked image modelling (ViT-MAE with static or dynamic patch masking on embedded
//! Fashion-MNIST, linear probe) in [`vision`].

pub mod data;
pub mod error;
pub mod experiment;
pub mod finetune;
pub mod metrics;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod recsys;
pub mod schedule;
pub mod tokenizer;
pub mod trainer;
pub mod vision;

pub use error::{Result, TrainError};
pub use metrics::{ClassificationReport, ConfusionMatrix, MlmMetrics};
pub use pipeline::{BatchSchedule, Prefetcher, TrainBatch};
pub use schedule::Decay;
pub use tokenizer::{Encoded, TextTokenizer};
pub use trainer::{EvalRecord, EvalSet, Event, MlmTrainer, StepRecord, TrainConfig};
