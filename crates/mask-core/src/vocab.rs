//! The vocabulary facts a policy needs: its size, the mask token, and which ids are special
//! (never drawn as random replacements).

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::rng::MaskRng;

/// Vocabulary description, as given in a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabSpec {
    /// Number of token ids; valid ids are `0..vocab_size`.
    pub vocab_size: u32,
    /// Id of the mask token (`[MASK]`).
    pub mask_token_id: u32,
    /// Ids never used as random replacements (`[PAD]`, `[CLS]`, `[SEP]`, `[UNK]`, ...). The mask
    /// token is always excluded as well. Default: empty.
    #[serde(default)]
    pub special_ids: Vec<u32>,
}

impl VocabSpec {
    /// A vocabulary of `vocab_size` ids with the given mask token and special ids.
    pub fn new(vocab_size: u32, mask_token_id: u32, special_ids: Vec<u32>) -> Self {
        Self {
            vocab_size,
            mask_token_id,
            special_ids,
        }
    }

    /// Validates ids and builds the random-replacement sampler.
    pub fn build(&self) -> Result<RandomIds> {
        if self.mask_token_id >= self.vocab_size {
            return Err(MaskError::MaskTokenOutOfVocab {
                mask_token_id: self.mask_token_id,
                vocab_size: self.vocab_size,
            });
        }
        if let Some(&id) = self.special_ids.iter().find(|&&id| id >= self.vocab_size) {
            return Err(MaskError::SpecialIdOutOfVocab {
                id,
                vocab_size: self.vocab_size,
            });
        }
        let mut excluded = self.special_ids.clone();
        excluded.push(self.mask_token_id);
        excluded.sort_unstable();
        excluded.dedup();
        Ok(RandomIds {
            vocab_size: self.vocab_size,
            num_allowed: self.vocab_size - excluded.len() as u32,
            excluded,
        })
    }
}

/// Uniform sampler over the non-special ids of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomIds {
    vocab_size: u32,
    num_allowed: u32,
    /// Sorted, deduplicated excluded ids.
    excluded: Vec<u32>,
}

impl RandomIds {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Number of ids that may be drawn.
    pub fn num_allowed(&self) -> u32 {
        self.num_allowed
    }

    /// Sorted ids that are never drawn.
    pub fn excluded(&self) -> &[u32] {
        &self.excluded
    }

    /// Draws an allowed id uniformly. `num_allowed()` must be > 0.
    ///
    /// Draws `x` in `[0, num_allowed)` and maps it to the `x`-th allowed id by stepping over the
    /// sorted excluded ids (a handful, so a linear walk beats a binary search).
    #[inline]
    pub fn sample(&self, rng: &mut MaskRng) -> u32 {
        self.id_for_draw(rng.next_u64())
    }

    /// The id [`RandomIds::sample`] returns when the stream's next draw is `r`
    /// ([`MaskRng::below`]'s multiply-shift, then the walk over excluded ids).
    #[inline]
    pub(crate) fn id_for_draw(&self, r: u64) -> u32 {
        let mut x = crate::rng::below_for_draw(r, self.num_allowed as u64) as u32;
        for &e in &self.excluded {
            if x >= e {
                x += 1;
            } else {
                break;
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_never_draws_excluded_and_covers_the_rest() {
        let v = VocabSpec::new(12, 4, vec![0, 1, 2, 11, 2]).build().unwrap();
        assert_eq!(v.excluded(), &[0, 1, 2, 4, 11]);
        assert_eq!(v.num_allowed(), 7);
        let mut seen = [0usize; 12];
        let mut rng = MaskRng::for_example(0, 0, 0, 0);
        for _ in 0..70_000 {
            seen[v.sample(&mut rng) as usize] += 1;
        }
        for id in 0..12 {
            if v.excluded().contains(&(id as u32)) {
                assert_eq!(seen[id], 0, "excluded id {id} drawn");
            } else {
                // Expected 10,000, sd ~ 92; 6 sd.
                assert!(
                    (seen[id] as i64 - 10_000).abs() < 560,
                    "id {id}: {}",
                    seen[id]
                );
            }
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        assert_eq!(
            VocabSpec::new(10, 10, vec![]).build(),
            Err(MaskError::MaskTokenOutOfVocab {
                mask_token_id: 10,
                vocab_size: 10
            })
        );
        assert_eq!(
            VocabSpec::new(10, 3, vec![12]).build(),
            Err(MaskError::SpecialIdOutOfVocab {
                id: 12,
                vocab_size: 10
            })
        );
    }
}
