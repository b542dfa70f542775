//! IDF-weighted selection: each eligible token's inclusion probability is proportional to
//! `idf(id)^exponent` (capped at 1), with an expected count of `mask_prob * n`. Rare,
//! informative tokens are masked more often than frequent function words, in the spirit of
//! InforMask (Sadeq et al. 2022), which ranks tokens by their PMI with the sentence; IDF is the
//! cheap corpus-level proxy. `exponent = 0` is uniform selection with a fixed expected count.
//!
//! IDF comes from [`TokenStats`] (`ln((1 + n_docs) / (1 + df)) + 1`); sampling is
//! [`super::weighted`]'s proportional sampler.

use std::sync::Arc;

use super::stats::TokenStats;
use super::weighted::select_weighted;
use super::{SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;

pub(crate) fn default_exponent() -> f64 {
    1.0
}

/// Inclusion probability proportional to `idf(id)^exponent`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdfSelector {
    exponent: f64,
    /// `idf(id)^exponent` by id.
    weights: Arc<Vec<f64>>,
}

impl IdfSelector {
    /// A selector from corpus statistics; `exponent` must be finite.
    pub fn new(stats: &TokenStats, exponent: f64) -> Result<Self> {
        if !exponent.is_finite() {
            return Err(MaskError::InvalidValue {
                field: "exponent",
                value: exponent.to_string(),
                expected: "a finite number",
            });
        }
        let weights = (0..stats.vocab_size())
            .map(|id| stats.idf(id).powf(exponent))
            .collect();
        Ok(Self {
            exponent,
            weights: Arc::new(weights),
        })
    }

    /// The exponent.
    pub fn exponent(&self) -> f64 {
        self.exponent
    }

    /// Selection weight of `id` (0 outside the statistics' vocabulary).
    pub fn weight(&self, id: u32) -> f64 {
        self.weights.get(id as usize).copied().unwrap_or(0.0)
    }
}

impl Selector for IdfSelector {
    fn name(&self) -> &'static str {
        "idf"
    }

    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        select_weighted(mask_prob, rng, scratch, out, |weights| {
            weights.extend(ex.ids.iter().zip(ex.special_mask).map(|(&id, &s)| {
                if s {
                    0.0
                } else {
                    self.weight(id)
                }
            }))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_idf_and_exponent() {
        let stats = TokenStats::from_docs(4, [vec![0u32, 1], vec![0], vec![0, 2]]).unwrap();
        let s = IdfSelector::new(&stats, 2.0).unwrap();
        assert!((s.weight(1) - stats.idf(1).powi(2)).abs() < 1e-12);
        assert!(s.weight(3) > s.weight(1) && s.weight(1) > s.weight(0));
        assert_eq!(s.weight(9), 0.0);
        assert!(IdfSelector::new(&stats, f64::INFINITY).is_err());
    }
}
