//! Tag-weighted selection: each eligible token's inclusion probability is proportional to a
//! weight of its tag (e.g. its part-of-speech class), capped at 1, with an expected count of
//! `mask_prob * n`. Masking content words (nouns, verbs) more often than function words
//! follows the informative-token idea of InforMask (Sadeq et al. 2022) with a linguistic prior
//! instead of corpus statistics.
//!
//! The example carries one tag per token ([`Example::with_tags`]); tag ids index the weight
//! vector of [`TagWeights`]. Sampling is [`super::weighted`]'s proportional sampler.

use std::collections::BTreeMap;

use super::weighted::select_weighted;
use super::{SelectScratch, Selector};
use crate::error::{MaskError, Result};
use crate::example::{Example, Span};
use crate::rng::MaskRng;
use std::sync::Arc;

/// A positive, finite weight per tag id.
#[derive(Debug, Clone, PartialEq)]
pub struct TagWeights {
    weights: Vec<f64>,
}

impl TagWeights {
    /// Weights indexed by tag id; each must be finite and > 0, and there must be at least one.
    pub fn new(weights: Vec<f64>) -> Result<TagWeights> {
        if weights.is_empty() {
            return Err(MaskError::InvalidValue {
                field: "tag_weights",
                value: "[]".into(),
                expected: "at least one tag weight",
            });
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w > 0.0))
        {
            return Err(MaskError::InvalidValue {
                field: "tag_weights",
                value: format!("{w} (tag {i})"),
                expected: "finite weights > 0",
            });
        }
        Ok(TagWeights { weights })
    }

    /// Weights by tag name: tag id `i` is `tag_names[i]`, its weight `weights[name]` or
    /// `default`. A name in `weights` that is not in `tag_names` is refused (a typo would
    /// otherwise be silently ignored).
    pub fn from_named(
        tag_names: &[&str],
        weights: &BTreeMap<String, f64>,
        default: f64,
    ) -> Result<TagWeights> {
        if let Some(name) = weights.keys().find(|k| !tag_names.contains(&k.as_str())) {
            return Err(MaskError::InvalidValue {
                field: "tag_weights",
                value: name.clone(),
                expected: "a tag name from the tag set",
            });
        }
        TagWeights::new(
            tag_names
                .iter()
                .map(|n| weights.get(*n).copied().unwrap_or(default))
                .collect(),
        )
    }

    /// Weight of `tag` (`None` outside the tag set).
    pub fn get(&self, tag: u16) -> Option<f64> {
        self.weights.get(tag as usize).copied()
    }

    /// Weight of `tag`; 0 outside the tag set (such tags are refused when masking).
    pub fn weight(&self, tag: u16) -> f64 {
        self.get(tag).unwrap_or(0.0)
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always `false` (there is at least one tag).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// All weights, by tag id.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

/// Inclusion probability proportional to the weight of each token's tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagWeightedSelector {
    weights: Arc<TagWeights>,
}

impl TagWeightedSelector {
    /// A selector with these tag weights.
    pub fn new(weights: Arc<TagWeights>) -> Self {
        Self { weights }
    }

    /// The tag weights.
    pub fn tag_weights(&self) -> &TagWeights {
        &self.weights
    }
}

impl Selector for TagWeightedSelector {
    fn name(&self) -> &'static str {
        "tag_weighted"
    }

    fn check_example(&self, ex: &Example<'_>) -> Result<()> {
        let tags = ex.tags.ok_or(MaskError::MissingInput {
            policy: self.name(),
            input: "tags",
        })?;
        let n = self.weights.len();
        if let Some(p) = tags.iter().position(|&t| t as usize >= n) {
            return Err(MaskError::InvalidValue {
                field: "tags",
                value: format!("{} at position {p}", tags[p]),
                expected: "tag ids below the number of tag weights",
            });
        }
        Ok(())
    }

    fn select(
        &self,
        ex: &Example<'_>,
        mask_prob: f64,
        rng: &mut MaskRng,
        scratch: &mut SelectScratch,
        out: &mut Vec<Span>,
    ) {
        let tags = ex.tags.unwrap_or(&[]);
        select_weighted(mask_prob, rng, scratch, out, |weights| {
            weights.extend(ex.special_mask.iter().enumerate().map(|(i, &s)| {
                if s {
                    0.0
                } else {
                    tags.get(i).map_or(0.0, |&t| self.weights.weight(t))
                }
            }))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_validated_and_named() {
        assert!(TagWeights::new(vec![]).is_err());
        let e = TagWeights::new(vec![1.0, 0.0]).unwrap_err().to_string();
        assert!(e.contains("tag 1"), "{e}");
        assert!(TagWeights::new(vec![f64::NAN]).is_err());
        let mut named = BTreeMap::new();
        named.insert("NOUN".to_string(), 3.0);
        let w = TagWeights::from_named(&["NOUN", "VERB"], &named, 1.5).unwrap();
        assert_eq!(w.weights(), &[3.0, 1.5]);
        assert_eq!(w.weight(7), 0.0);
        named.insert("NOUNS".to_string(), 3.0);
        let e = TagWeights::from_named(&["NOUN", "VERB"], &named, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOUNS"), "{e}");
    }

    #[test]
    fn heavier_tags_are_chosen_more_often() {
        let sel = TagWeightedSelector::new(Arc::new(TagWeights::new(vec![1.0, 4.0]).unwrap()));
        let ids = [5u32; 20];
        let special: Vec<bool> = (0..20).map(|i| i == 0 || i == 19).collect();
        let tags: Vec<u16> = (0..20).map(|i| (i % 2) as u16).collect();
        let ex = Example::new(&ids, &special).with_tags(&tags);
        sel.check_example(&ex).unwrap();
        let (mut scratch, mut out) = (SelectScratch::default(), vec![]);
        let mut by_tag = [0usize; 2];
        for d in 0..2000 {
            let mut rng = MaskRng::for_example(1, d, 0, 0);
            sel.select(&ex, 0.2, &mut rng, &mut scratch, &mut out);
            for s in &out {
                assert!(!special[s.start as usize]);
                by_tag[tags[s.start as usize] as usize] += 1;
            }
        }
        // Expected 4:1: 18 maskable positions (9 per tag), budget 0.2 x 18 = 3.6, inclusion
        // probabilities proportional to weight (no capping at this rate): 9 (4c + c) = 3.6, so
        // p1 = 0.32, p0 = 0.08. Over n = 2000 examples the counts have variances at most
        // 9n p(1-p): sd 36.4 of mean 1440 (2.5%) and 62.6 of 5760 (1.1%). The two counts are
        // negatively correlated (fixed budget), so the ratio's relative sd is at most the sum,
        // 3.6%, i.e. 0.145 on 4; the test allows 6 of those (0.87).
        let ratio = by_tag[1] as f64 / by_tag[0] as f64;
        assert!((ratio - 4.0).abs() < 0.87, "{by_tag:?}: ratio {ratio}");
        let no_tags = Example::new(&ids, &special);
        assert_eq!(
            sel.check_example(&no_tags),
            Err(MaskError::MissingInput {
                policy: "tag_weighted",
                input: "tags"
            })
        );
        let bad: Vec<u16> = vec![2; 20];
        assert!(sel
            .check_example(&Example::new(&ids, &special).with_tags(&bad))
            .is_err());
    }
}
