//! Which examples each training step uses: a per-epoch shuffle drawn from `(seed, epoch)` and
//! fixed-size batches cut from it, so the examples of step `s` are a pure function of
//! `(seed, s)`. Results then do not depend on the number of data workers, and a resumed run sees
//! exactly the batches an uninterrupted one would.

use mask_core::MaskRng;

use crate::error::{invalid, Result};

/// Stream id of the epoch shuffle (distinct from the masking streams of `mask-core`).
const STREAM_SHUFFLE: u64 = 0x5eed;

/// A permutation of `0..n` drawn from `(seed, epoch)` (Fisher-Yates).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = MaskRng::for_example(seed, epoch, u64::MAX, STREAM_SHUFFLE);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The permutation of the last epoch asked for, recomputed only when the epoch changes (a
/// shuffle is O(examples); a batch needs only `batch_size` of them).
#[derive(Debug, Clone, Default)]
pub struct EpochOrder {
    key: Option<(usize, u64, u64)>,
    order: Vec<usize>,
}

impl EpochOrder {
    /// [`epoch_order`]`(n, seed, epoch)`, cached.
    pub fn get(&mut self, n: usize, seed: u64, epoch: u64) -> &[usize] {
        if self.key != Some((n, seed, epoch)) {
            self.order = epoch_order(n, seed, epoch);
            self.key = Some((n, seed, epoch));
        }
        &self.order
    }
}

/// Which examples each step trains on: `batch_size` examples of the epoch's permutation per step;
/// the last partial batch of an epoch is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSchedule {
    /// Examples in the training set.
    pub n_examples: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Shuffle seed.
    pub seed: u64,
}

impl BatchSchedule {
    /// Checks that at least one full batch fits.
    pub fn new(n_examples: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(invalid("batch_size", 0, "at least 1"));
        }
        if n_examples < batch_size {
            return Err(invalid(
                "batch_size",
                batch_size,
                format!("at most the number of training examples ({n_examples})"),
            ));
        }
        Ok(Self {
            n_examples,
            batch_size,
            seed,
        })
    }

    /// Full batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        (self.n_examples / self.batch_size) as u64
    }

    /// Epoch of step `step`.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch()
    }

    /// Example indices of step `step`.
    pub fn indices_at(&self, step: u64) -> Vec<usize> {
        self.indices_at_cached(step, &mut EpochOrder::default())
    }

    /// Example indices of step `step`, reusing `cache`'s permutation while the epoch is the same.
    pub fn indices_at_cached(&self, step: u64, cache: &mut EpochOrder) -> Vec<usize> {
        let within = (step % self.steps_per_epoch()) as usize;
        let order = cache.get(self.n_examples, self.seed, self.epoch_of(step));
        order[within * self.batch_size..(within + 1) * self.batch_size].to_vec()
    }

    /// The examples of step `step`, borrowed from `items` (the data set this schedule was built
    /// for, `items.len() == n_examples`), in batch order.
    pub fn rows_at<'a, T>(&self, items: &'a [T], step: u64, cache: &mut EpochOrder) -> Vec<&'a T> {
        self.indices_at_cached(step, cache)
            .into_iter()
            .map(|i| &items[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_steps_tile_it() {
        let s = BatchSchedule::new(10, 3, 7).unwrap();
        assert_eq!(s.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|k| s.indices_at(k)).collect();
        let first_epoch = seen.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "three disjoint batches of the first epoch");
        let second: Vec<usize> = (3..6).flat_map(|k| s.indices_at(k)).collect();
        assert_ne!(first_epoch, second, "the next epoch reshuffles");
        let mut cache = EpochOrder::default();
        for k in 0..9 {
            assert_eq!(s.indices_at_cached(k, &mut cache), s.indices_at(k));
            let items: Vec<usize> = (100..110).collect();
            let rows: Vec<usize> = s
                .rows_at(&items, k, &mut cache)
                .into_iter()
                .copied()
                .collect();
            let want: Vec<usize> = s.indices_at(k).iter().map(|i| 100 + i).collect();
            assert_eq!(rows, want);
        }
        assert!(BatchSchedule::new(2, 3, 0).is_err());
        assert!(BatchSchedule::new(2, 0, 0).is_err());
    }

    #[test]
    fn shuffles_are_uniform_over_positions() {
        // Where element 0 lands over 4000 seeds: each of 4 slots has p = 1/4, so a count has
        // sd sqrt(4000 * 1/4 * 3/4) = 27.4; 6 sd = 164.
        let mut slots = [0usize; 4];
        for seed in 0..4000 {
            let order = epoch_order(4, seed, 0);
            slots[order.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        for c in slots {
            assert!((c as f64 - 1000.0).abs() < 164.0, "{slots:?}");
        }
    }
}
