//! The learner's settings: one vocabulary for every task (steps, batch, AdamW, learning-rate
//! schedule, clipping, evaluation, early stopping, data workers), validated field by field.

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::schedule::{lr_at, Decay};

/// Settings of a training run: everything that decides the numbers, plus the data workers
/// (which never change them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps. Default: 1000
    pub steps: u64,
    /// Examples per step (documents, images, users). Default: 32
    pub batch_size: usize,
    /// Peak learning rate. Default: 5e-4
    pub lr: f64,
    /// Linear warm-up steps (from `lr / warmup_steps` to `lr`). Default: 100
    pub warmup_steps: u64,
    /// Decay after warm-up: `linear`, `cosine` or `constant`. Default: linear
    pub decay: Decay,
    /// Final learning rate as a fraction of `lr`. Default: 0.0
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay. Default: 0.01
    pub weight_decay: f64,
    /// AdamW first-moment decay. Default: 0.9
    pub beta_1: f64,
    /// AdamW second-moment decay (MAE uses 0.95). Default: 0.999
    pub beta_2: f64,
    /// AdamW epsilon. Default: 1e-6
    pub epsilon: f64,
    /// Global gradient-norm clip, or `"off"`. Default: 1.0
    #[serde(with = "number_or_off")]
    pub grad_clip: Option<f64>,
    /// Evaluate every N steps (0: only at the end). Default: 100
    pub eval_every: u64,
    /// Stop after this many evaluations without improvement of the task's score (absent:
    /// never). Default: absent
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<u32>,
    /// Seed of initialisation, data order, masks and dropout. Default: 0
    pub seed: u64,
    /// Data worker threads (results do not depend on it). Default: 1
    pub workers: usize,
    /// Batches each worker prepares ahead. Default: 4
    pub prefetch: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 32,
            lr: 5e-4,
            warmup_steps: 100,
            decay: Decay::Linear,
            min_lr_ratio: 0.0,
            weight_decay: 0.01,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-6,
            grad_clip: Some(1.0),
            eval_every: 100,
            early_stopping_patience: None,
            seed: 0,
            workers: 1,
            prefetch: 4,
        }
    }
}

fn check_unit(field: &'static str, v: f64, lo_closed: bool, hi_closed: bool) -> Result<()> {
    let ok = v.is_finite()
        && (if lo_closed { v >= 0.0 } else { v > 0.0 })
        && (if hi_closed { v <= 1.0 } else { v < 1.0 });
    if ok {
        Ok(())
    } else {
        let (l, h) = (
            if lo_closed { "[0" } else { "(0" },
            if hi_closed { "1]" } else { "1)" },
        );
        Err(invalid(field, v, format!("in {l}, {h}")))
    }
}

impl TrainConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(invalid("steps", 0, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", self.lr, "a finite value > 0"));
        }
        check_unit("min_lr_ratio", self.min_lr_ratio, true, true)?;
        check_unit("weight_decay", self.weight_decay, true, false)?;
        check_unit("beta_1", self.beta_1, true, false)?;
        check_unit("beta_2", self.beta_2, true, false)?;
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(invalid("epsilon", self.epsilon, "a finite value > 0"));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(invalid("grad_clip", c, "a finite value > 0 (or \"off\")"));
        }
        if self.early_stopping_patience == Some(0) {
            return Err(invalid(
                "early_stopping_patience",
                0,
                "at least 1 (or absent: never stop early)",
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(invalid("workers", self.workers, "1..=64"));
        }
        if self.prefetch == 0 || self.prefetch > 1024 {
            return Err(invalid("prefetch", self.prefetch, "1..=1024"));
        }
        Ok(())
    }

    /// Learning rate at `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        lr_at(
            step,
            self.steps,
            self.lr,
            self.warmup_steps,
            self.decay,
            self.min_lr_ratio,
        )
    }

    /// The settings compared on resume: all but the data workers, which never change the
    /// numbers, and (when `allow_extend`) `steps`.
    pub fn resume_key(&self, allow_extend: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a TrainConfig serialises");
        let map = v.as_object_mut().expect("an object");
        map.remove("workers");
        map.remove("prefetch");
        if allow_extend {
            map.remove("steps");
        }
        v
    }
}

/// `Option<f64>` as a number or the word `"off"` (TOML has no null; `"off"` keeps a config and
/// its JSON copy round-tripping exactly). Use with `#[serde(with = "number_or_off")]`.
pub mod number_or_off {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Word(String),
    }

    /// Serialises `None` as `"off"`.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_f64(*x),
            None => s.serialize_str("off"),
        }
    }

    /// Reads a number or `"off"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(x) => Ok(Some(x)),
            Repr::Word(w) if w == "off" => Ok(None),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a number or \"off\", found \"{w}\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_checked_by_name() {
        assert!(TrainConfig::default().validate().is_ok());
        let bad = |f: fn(&mut TrainConfig), field: &str| {
            let mut c = TrainConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("`{field}` = ")), "{e}");
        };
        bad(|c| c.steps = 0, "steps");
        bad(|c| c.batch_size = 0, "batch_size");
        bad(|c| c.lr = f64::NAN, "lr");
        bad(|c| c.lr = 0.0, "lr");
        bad(|c| c.min_lr_ratio = 1.5, "min_lr_ratio");
        bad(|c| c.weight_decay = 1.0, "weight_decay");
        bad(|c| c.beta_1 = -0.1, "beta_1");
        bad(|c| c.beta_2 = f64::INFINITY, "beta_2");
        bad(|c| c.epsilon = 0.0, "epsilon");
        bad(|c| c.grad_clip = Some(-1.0), "grad_clip");
        bad(|c| c.grad_clip = Some(f64::NAN), "grad_clip");
        bad(
            |c| c.early_stopping_patience = Some(0),
            "early_stopping_patience",
        );
        bad(|c| c.workers = 0, "workers");
        bad(|c| c.prefetch = 0, "prefetch");
    }

    #[test]
    fn grad_clip_off_round_trips_through_toml_and_json() {
        let off = TrainConfig {
            grad_clip: None,
            ..TrainConfig::default()
        };
        let json = serde_json::to_string(&off).unwrap();
        assert!(json.contains("\"grad_clip\":\"off\""), "{json}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), off);
        let parsed: TrainConfig = serde_json::from_str("{\"grad_clip\": \"off\"}").unwrap();
        assert_eq!(parsed.grad_clip, None);
        let parsed: TrainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed.grad_clip, Some(1.0));
        let e = serde_json::from_str::<TrainConfig>("{\"grad_clip\": \"of\"}").unwrap_err();
        assert!(e.to_string().contains("\"off\""), "{e}");
    }

    #[test]
    fn the_resume_key_ignores_workers_and_optionally_steps() {
        let a = TrainConfig::default();
        let b = TrainConfig {
            workers: 3,
            prefetch: 9,
            ..a.clone()
        };
        assert_eq!(a.resume_key(false), b.resume_key(false));
        let longer = TrainConfig {
            steps: 5000,
            ..a.clone()
        };
        assert_ne!(a.resume_key(false), longer.resume_key(false));
        assert_eq!(a.resume_key(true), longer.resume_key(true));
    }
}
