//! Mask-rate schedules: the masking rate as a function of the global step.
//!
//! Constant (BERT, RoBERTa: 15%), and linear or cosine decay between two rates (Ankner et al.
//! 2024, "Dynamic Masking Rate Schedules for MLM Pretraining": 30% -> 15% linear; Yang et al. 2023:
//! masking-ratio decay), with an optional warm-up ramp before the decay starts. Schedules compose
//! with every selector: the selector receives `rate_at(step)` as its `mask_prob`.

use serde::{Deserialize, Serialize};

use crate::error::{check_prob, Result};

/// A masking-rate schedule over global steps.
///
/// For the decaying variants the rate is:
/// - `warmup_start -> start`, linearly, over steps `[0, warmup_steps)`;
/// - `start -> end` over `[warmup_steps, warmup_steps + decay_steps]`, linearly or along a
///   half cosine;
/// - `end` afterwards.
///
/// `warmup_start` defaults to `end`, so a warm-up ramps *up* to the high starting rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateSchedule {
    /// The same rate at every step.
    Constant {
        /// Masking rate. Default (of the config): 0.15
        mask_prob: f64,
    },
    /// Linear decay from `start` to `end`.
    Linear {
        /// Rate when the decay starts.
        start: f64,
        /// Rate after `decay_steps`.
        end: f64,
        /// Length of the decay in steps.
        decay_steps: u64,
        /// Steps of linear warm-up before the decay. Default: 0
        #[serde(default)]
        warmup_steps: u64,
        /// Rate at step 0 when `warmup_steps > 0`. Default: `end`
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_start: Option<f64>,
    },
    /// Half-cosine decay from `start` to `end`.
    Cosine {
        /// Rate when the decay starts.
        start: f64,
        /// Rate after `decay_steps`.
        end: f64,
        /// Length of the decay in steps.
        decay_steps: u64,
        /// Steps of linear warm-up before the decay. Default: 0
        #[serde(default)]
        warmup_steps: u64,
        /// Rate at step 0 when `warmup_steps > 0`. Default: `end`
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_start: Option<f64>,
    },
}

impl Default for RateSchedule {
    fn default() -> Self {
        RateSchedule::Constant { mask_prob: 0.15 }
    }
}

impl RateSchedule {
    /// A constant rate.
    pub fn constant(mask_prob: f64) -> Self {
        RateSchedule::Constant { mask_prob }
    }

    /// Linear decay without warm-up.
    pub fn linear(start: f64, end: f64, decay_steps: u64) -> Self {
        RateSchedule::Linear {
            start,
            end,
            decay_steps,
            warmup_steps: 0,
            warmup_start: None,
        }
    }

    /// Cosine decay without warm-up.
    pub fn cosine(start: f64, end: f64, decay_steps: u64) -> Self {
        RateSchedule::Cosine {
            start,
            end,
            decay_steps,
            warmup_steps: 0,
            warmup_start: None,
        }
    }

    /// Checks that every rate is a probability.
    pub fn validate(&self) -> Result<()> {
        match *self {
            RateSchedule::Constant { mask_prob } => check_prob("mask_prob", mask_prob),
            RateSchedule::Linear {
                start,
                end,
                warmup_start,
                ..
            }
            | RateSchedule::Cosine {
                start,
                end,
                warmup_start,
                ..
            } => {
                check_prob("start", start)?;
                check_prob("end", end)?;
                if let Some(w) = warmup_start {
                    check_prob("warmup_start", w)?;
                }
                Ok(())
            }
        }
    }

    /// The masking rate at global `step`.
    pub fn rate_at(&self, step: u64) -> f64 {
        let (start, end, decay_steps, warmup_steps, warmup_start, cosine) = match *self {
            RateSchedule::Constant { mask_prob } => return mask_prob,
            RateSchedule::Linear {
                start,
                end,
                decay_steps,
                warmup_steps,
                warmup_start,
            } => (start, end, decay_steps, warmup_steps, warmup_start, false),
            RateSchedule::Cosine {
                start,
                end,
                decay_steps,
                warmup_steps,
                warmup_start,
            } => (start, end, decay_steps, warmup_steps, warmup_start, true),
        };
        if step < warmup_steps {
            let w0 = warmup_start.unwrap_or(end);
            let t = step as f64 / warmup_steps as f64;
            return w0 + (start - w0) * t;
        }
        let s = step - warmup_steps;
        if s >= decay_steps {
            return end;
        }
        let t = s as f64 / decay_steps as f64;
        let frac = if cosine {
            0.5 * (1.0 - (std::f64::consts::PI * t).cos())
        } else {
            t
        };
        start + (end - start) * frac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_hit_their_endpoints() {
        let lin = RateSchedule::linear(0.3, 0.15, 1000);
        assert_eq!(lin.rate_at(0), 0.3);
        assert!((lin.rate_at(500) - 0.225).abs() < 1e-12);
        assert_eq!(lin.rate_at(1000), 0.15);
        assert_eq!(lin.rate_at(10_000), 0.15);

        let cos = RateSchedule::cosine(0.3, 0.15, 1000);
        assert_eq!(cos.rate_at(0), 0.3);
        assert!((cos.rate_at(500) - 0.225).abs() < 1e-12);
        assert!(
            cos.rate_at(100) > lin.rate_at(100),
            "cosine decays slower at first"
        );
        assert_eq!(cos.rate_at(1000), 0.15);

        let warm = RateSchedule::Linear {
            start: 0.4,
            end: 0.15,
            decay_steps: 100,
            warmup_steps: 10,
            warmup_start: Some(0.0),
        };
        assert_eq!(warm.rate_at(0), 0.0);
        assert!((warm.rate_at(5) - 0.2).abs() < 1e-12);
        assert_eq!(warm.rate_at(10), 0.4);
        assert_eq!(warm.rate_at(110), 0.15);
        assert_eq!(RateSchedule::constant(0.4).rate_at(123), 0.4);
        // Zero-length decay jumps straight to the end rate.
        assert_eq!(RateSchedule::linear(0.3, 0.1, 0).rate_at(0), 0.1);
    }

    #[test]
    fn monotone_decay() {
        for s in [
            RateSchedule::linear(0.3, 0.15, 77),
            RateSchedule::cosine(0.3, 0.15, 77),
        ] {
            let mut prev = f64::INFINITY;
            for step in 0..100 {
                let r = s.rate_at(step);
                assert!(r <= prev + 1e-15);
                prev = r;
            }
        }
    }

    #[test]
    fn invalid_rates_are_named() {
        let err = RateSchedule::linear(1.3, 0.1, 10).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`start` must be a probability in [0, 1], got 1.3"
        );
        assert!(RateSchedule::constant(f64::NAN).validate().is_err());
    }
}
