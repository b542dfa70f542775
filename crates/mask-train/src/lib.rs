//! # mask-train
//!
//! Learner loop, data pipeline, metrics, checkpoints and CLI for training Transformers with
//! dynamic masking. This first version ships the embedded real-data corpora; the learner loop
//! follows in its own issue.

pub mod data;
