//! The policy trait, the context every mask is a function of, and the composite token masker.

use crate::corruption::Corruption;
use crate::error::{MaskError, Result};
use crate::example::{Example, MaskedExample, Span, IGNORE_INDEX};
use crate::regime::Regime;
use crate::rng::{threshold_u32, MaskRng};
use crate::schedule::RateSchedule;
use crate::selection::{SelectScratch, Selector};

/// Everything a mask may depend on besides the example itself.
///
/// A policy's output is a pure function of the example and this context: never of batch order,
/// batch composition, worker count or wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct MaskContext {
    /// Run seed.
    pub seed: u64,
    /// Epoch (passes over the data so far).
    pub epoch: u64,
    /// Stable index of the example in the data set.
    pub index: u64,
    /// Global optimisation step (drives rate schedules).
    pub step: u64,
}

impl MaskContext {
    /// A context.
    pub fn new(seed: u64, epoch: u64, index: u64, step: u64) -> Self {
        Self {
            seed,
            epoch,
            index,
            step,
        }
    }
}

/// Reusable buffers for masking, one per thread.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    pub(crate) select: SelectScratch,
    pub(crate) units: Vec<Span>,
    pub(crate) fused: crate::fused::FusedScratch,
}

/// Corrupts one example, reproducibly from its [`MaskContext`].
///
/// The one trait a data pipeline calls. [`TokenMasker`] (built from a
/// [`MaskingConfig`](crate::MaskingConfig)) and [`ItemMasker`](crate::ItemMasker) implement it.
///
/// ```
/// use mask_core::{Example, MaskContext, MaskPolicy, MaskingConfig, Regime, VocabSpec, IGNORE_INDEX};
///
/// let vocab = VocabSpec::new(1000, 4, vec![0, 1, 2, 3, 4]); // [MASK] = 4
/// let policy = MaskingConfig::new(vocab).with_regime(Regime::Static { dupe_factor: 1 }).build()?;
/// let ids: Vec<u32> = std::iter::once(2).chain(100..160).chain([3]).collect();
/// let special: Vec<bool> = ids.iter().map(|&i| i < 5).collect();
/// let ex = Example::new(&ids, &special);
/// let first = policy.mask(&ex, &MaskContext::new(7, 0, 0, 0))?;
/// // Static, k = 1: every epoch sees the same mask.
/// assert_eq!(first, policy.mask(&ex, &MaskContext::new(7, 5, 0, 0))?);
/// // Labels keep the original id where a token was chosen, IGNORE_INDEX elsewhere.
/// for (i, &label) in first.labels.iter().enumerate() {
///     assert!(label == IGNORE_INDEX || label == ids[i] as i32);
/// }
/// # Ok::<(), mask_core::MaskError>(())
/// ```
pub trait MaskPolicy: Send + Sync {
    /// Vocabulary size: input ids must be below it.
    fn vocab_size(&self) -> u32;

    /// Masks `ex` into `out_ids` / `out_labels` (both of the example's length) and returns the
    /// number of labels set. Labels are the original id at chosen positions and
    /// [`IGNORE_INDEX`] elsewhere; unchosen positions of `out_ids` equal the input.
    fn mask_into(
        &self,
        ex: &Example<'_>,
        ctx: &MaskContext,
        scratch: &mut Scratch,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
    ) -> Result<usize>;

    /// Owned convenience around [`MaskPolicy::mask_into`].
    fn mask(&self, ex: &Example<'_>, ctx: &MaskContext) -> Result<MaskedExample> {
        let mut out = MaskedExample {
            input_ids: vec![0; ex.len()],
            labels: vec![IGNORE_INDEX; ex.len()],
        };
        self.mask_into(
            ex,
            ctx,
            &mut Scratch::default(),
            &mut out.input_ids,
            &mut out.labels,
        )?;
        Ok(out)
    }
}

/// The composite token-masking policy: a [`Selector`] (which positions) at the rate of a
/// [`RateSchedule`] (how many, by step), a [`Corruption`] (how), and a [`Regime`] (static with
/// duplication factor k, or dynamic).
///
/// Usually built from a [`crate::MaskingConfig`].
#[derive(Debug, Clone)]
pub struct TokenMasker<S: Selector = crate::selection::AnySelector> {
    selector: S,
    schedule: RateSchedule,
    corruption: Corruption,
    regime: Regime,
}

impl<S: Selector> TokenMasker<S> {
    /// Assembles a masker from validated parts.
    pub fn new(
        selector: S,
        schedule: RateSchedule,
        corruption: Corruption,
        regime: Regime,
    ) -> Result<Self> {
        schedule.validate()?;
        regime.validate()?;
        Ok(Self {
            selector,
            schedule,
            corruption,
            regime,
        })
    }

    /// The selector.
    pub fn selector(&self) -> &S {
        &self.selector
    }

    /// The selector, mutably (to feed it back or restore its state).
    pub fn selector_mut(&mut self) -> &mut S {
        &mut self.selector
    }

    /// Whether the selector learns from feedback (then batches must be made in step order).
    pub fn is_adaptive(&self) -> bool {
        self.selector.is_adaptive()
    }

    /// Forwards learner feedback for one example to the selector (see [`Selector::observe`]).
    pub fn observe(&mut self, ids: &[u32], positions: &[u32], losses: &[f32]) {
        self.selector.observe(ids, positions, losses)
    }

    /// The rate schedule.
    pub fn schedule(&self) -> &RateSchedule {
        &self.schedule
    }

    /// The corruption step.
    pub fn corruption(&self) -> &Corruption {
        &self.corruption
    }

    /// The regime.
    pub fn regime(&self) -> Regime {
        self.regime
    }

    /// The random stream used for `ctx` (after applying the regime).
    #[inline]
    pub fn rng_for(&self, ctx: &MaskContext) -> MaskRng {
        MaskRng::for_example(
            ctx.seed,
            self.regime.effective_epoch(ctx.epoch),
            ctx.index,
            MaskRng::STREAM_TOKENS,
        )
    }

    /// [`MaskPolicy::mask_into`], optionally without the fused Bernoulli row (tests compare
    /// the two).
    pub(crate) fn mask_into_with(
        &self,
        ex: &Example<'_>,
        ctx: &MaskContext,
        scratch: &mut Scratch,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
        allow_fused: bool,
    ) -> Result<usize> {
        let outputs_fit = out_ids.len() == ex.len() && out_labels.len() == ex.len();
        if allow_fused && outputs_fit && self.selector.is_bernoulli() {
            // The same masks as the generic path below, bit for bit, where the CPU runs it
            // (crate::fused); the same errors too: it checks the ids' range as it writes and
            // leaves the error to `validate` (Bernoulli needs no word ids and checks nothing
            // else, and the outputs' lengths are right).
            ex.validate_lengths()?;
            if let Some(result) = crate::fused::mask_row(
                ex.ids,
                ex.special_mask,
                self.vocab_size(),
                &self.rng_for(ctx),
                threshold_u32(self.schedule.rate_at(ctx.step)),
                &self.corruption,
                out_ids,
                out_labels,
                &mut scratch.fused,
            ) {
                return result.or_else(|_| {
                    ex.validate(self.vocab_size())?;
                    unreachable!("the fused row found an id out of the vocabulary, validate none")
                });
            }
        }
        ex.validate(self.vocab_size())?;
        if self.selector.needs_word_ids() && ex.word_ids.is_none() {
            return Err(MaskError::MissingWordIds {
                policy: self.selector.name(),
            });
        }
        self.selector.check_example(ex)?;
        for (field, got) in [("out_ids", out_ids.len()), ("out_labels", out_labels.len())] {
            if got != ex.len() {
                return Err(MaskError::LengthMismatch {
                    field,
                    expected: ex.len(),
                    got,
                });
            }
        }
        let rate = self.schedule.rate_at(ctx.step);
        let mut rng = self.rng_for(ctx);
        out_ids.copy_from_slice(ex.ids);
        out_labels.fill(IGNORE_INDEX);
        self.selector
            .select(ex, rate, &mut rng, &mut scratch.select, &mut scratch.units);
        Ok(self
            .corruption
            .apply(ex.ids, &scratch.units, &mut rng, out_ids, out_labels))
    }
}

impl<S: Selector> MaskPolicy for TokenMasker<S> {
    fn vocab_size(&self) -> u32 {
        self.corruption.random_ids().vocab_size()
    }

    #[inline]
    fn mask_into(
        &self,
        ex: &Example<'_>,
        ctx: &MaskContext,
        scratch: &mut Scratch,
        out_ids: &mut [u32],
        out_labels: &mut [i32],
    ) -> Result<usize> {
        self.mask_into_with(ex, ctx, scratch, out_ids, out_labels, true)
    }
}

// The fused row against the generic path: here, where the dispatch is (fused.rs must not
// import this module).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::{available, mask_row, FusedScratch};
    use crate::{CorruptionConfig, MaskingConfig, RateSchedule, SelectionConfig, VocabSpec};

    /// The CPU check written out again, independently of [`available`](crate::fused::available) (a test oracle): where
    /// this holds the fused row must run.
    fn cpu_has_every_feature() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("bmi1")
                && has!("bmi2")
                && has!("popcnt")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    #[test]
    fn the_fused_row_equals_the_generic_path() {
        assert_eq!(available(), cpu_has_every_feature());
        if !cpu_has_every_feature() {
            // No AVX-512 here: the fused row never runs; only its refusal can be checked.
            assert!(mask_row(
                &[5],
                &[false],
                10,
                &MaskRng::from_state(0),
                0,
                &CorruptionConfig::default()
                    .build(&VocabSpec::new(10, 1, vec![0]))
                    .unwrap(),
                &mut [0],
                &mut [0],
                &mut FusedScratch::default(),
            )
            .is_none());
            return;
        }
        let mut gen = MaskRng::from_state(12345);
        let splits = [
            (0.8, 0.1),
            (1.0, 0.0),
            (0.0, 1.0),
            (0.0, 0.0),
            (0.5, 0.5),
            (0.3, 0.3),
        ];
        let rates = [0.0, 0.001, 0.15, 0.5, 0.97, 1.0];
        let (mut rows, mut fused_rows, mut replaced) = (0, 0, 0);
        for case in 0..600u64 {
            let mut pick = |k: usize| gen.below(k as u64) as usize;
            let (mask_p, random_p) = splits[pick(splits.len())];
            let rate = rates[pick(rates.len())];
            let special_p = [0.0, 0.1, 0.5, 1.0][pick(4)];
            let shape = pick(4);
            let vocab = 50 + gen.below(200) as u32;
            let excluded: Vec<u32> = (0..gen.below(6))
                .map(|_| gen.below(vocab as u64) as u32)
                .collect();
            let policy = MaskingConfig::new(VocabSpec::new(vocab, vocab - 1, excluded))
                .with_selection(SelectionConfig::Bernoulli {})
                .with_rate(RateSchedule::constant(rate))
                .with_regime(Regime::Dynamic {})
                .with_corruption(CorruptionConfig {
                    mask_replace_prob: mask_p,
                    random_replace_prob: random_p,
                    ..CorruptionConfig::default()
                })
                .build()
                .unwrap();
            let n = match shape {
                0 => 1 + gen.below(20) as usize,
                1 => 16 * (1 + gen.below(12) as usize) + gen.below(3) as usize,
                2 => 64 * (1 + gen.below(4) as usize) - 1 + gen.below(3) as usize,
                _ => 1 + gen.below(700) as usize,
            };
            let ids: Vec<u32> = (0..n).map(|_| gen.below(vocab as u64) as u32).collect();
            let special: Vec<bool> = (0..n).map(|_| gen.next_f64() < special_p).collect();
            let ex = Example::new(&ids, &special);
            let ctx = MaskContext::new(case, case % 3, case * 7, 0);
            let mut scratch = Scratch::default();
            let (mut fast_ids, mut fast_labels) = (vec![7u32; n], vec![7i32; n]);
            let (mut slow_ids, mut slow_labels) = (vec![9u32; n], vec![9i32; n]);
            let fast = policy
                .mask_into_with(
                    &ex,
                    &ctx,
                    &mut scratch,
                    &mut fast_ids,
                    &mut fast_labels,
                    true,
                )
                .unwrap();
            // The fused row ran (its scratch is touched only by it), so the comparison below
            // compares two paths.
            assert!(
                scratch.fused.ran(),
                "case {case}: the fused row did not run"
            );
            let slow = policy
                .mask_into_with(
                    &ex,
                    &ctx,
                    &mut scratch,
                    &mut slow_ids,
                    &mut slow_labels,
                    false,
                )
                .unwrap();
            assert_eq!(fast, slow, "case {case}: n {n}, rate {rate}");
            assert_eq!(
                fast_ids, slow_ids,
                "case {case}: n {n}, rate {rate}, split {mask_p}/{random_p}"
            );
            assert_eq!(fast_labels, slow_labels, "case {case}: n {n}, rate {rate}");
            rows += 1;
            fused_rows += (fast > 0) as usize;
            replaced += fast_ids.iter().zip(&ids).filter(|(a, b)| a != b).count();
        }
        // The cases exercised what they are meant to: rows with chosen positions (about half:
        // a sixth of the rates are 0 and a quarter of the rows all special), and replacements
        // (mask or random) in them.
        assert_eq!(rows, 600);
        assert!(fused_rows > 200, "{fused_rows}");
        assert!(replaced > 1000, "{replaced}");
    }

    /// An id out of the vocabulary (found by the fused row as it writes), mismatched lengths
    /// and short outputs give the generic path's errors.
    #[test]
    fn errors_are_the_generic_paths() {
        let policy = MaskingConfig::new(VocabSpec::new(100, 3, vec![0, 1, 2, 3]))
            .build()
            .unwrap();
        let ctx = MaskContext::new(1, 2, 3, 4);
        for n in [1usize, 16, 40, 64, 129] {
            for (bad_at, twice) in [(0, false), (n / 2, false), (n - 1, false), (0, true)] {
                let mut ids: Vec<u32> = (0..n as u32).map(|i| 4 + i % 90).collect();
                ids[bad_at] = 100 + bad_at as u32;
                // Two bad ids: a check that toggles per bad id (XOR) would pass them.
                if twice {
                    ids[n - 1] = 200;
                }
                let special = vec![false; n];
                let ex = Example::new(&ids, &special);
                let short = Example::new(&ids, &special[..n - 1]);
                let outputs = [
                    (ex, n, n),
                    (ex, n + 1, n + 1),
                    (ex, n, n + 1),
                    (ex, n + 1, n),
                ];
                for (ex, out_len, labels_len) in outputs.into_iter().chain([(short, n, n)]) {
                    let run = |allow_fused| {
                        let (mut o, mut l) = (vec![0; out_len], vec![0; labels_len]);
                        policy.mask_into_with(
                            &ex,
                            &ctx,
                            &mut Scratch::default(),
                            &mut o,
                            &mut l,
                            allow_fused,
                        )
                    };
                    let (fast, slow) = (run(true), run(false));
                    assert!(slow.is_err());
                    assert_eq!(
                        fast, slow,
                        "n {n}, bad id {bad_at}, outputs {out_len} {labels_len}"
                    );
                }
            }
        }
    }
}
