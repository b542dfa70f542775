//! Model-based selectors (loss-aware and learned): they learn from fed-back losses, mask harder
//! tokens more often at an unchanged rate, resume exactly from their state bytes, refuse corrupt
//! state, and the learned scorer's backprop matches finite differences.
//!
//! Statistical tolerances are six standard deviations of the statistic at the test's sample size;
//! the data are fixed by seeds, so the tests are deterministic.

use mask_core::selection::SelectScratch;
use mask_core::*;

const LEN: usize = 48;

/// Example `index` of a synthetic stream: `[special] ids... [special]`, ids uniform in
/// `[first_id, vocab)`, special id 1 at both ends.
fn example_ids(seed: u64, index: u64, vocab: u32, first_id: u32) -> (Vec<u32>, Vec<bool>) {
    let mut rng = MaskRng::for_example(seed, 0, index, 77);
    let mut ids = Vec::with_capacity(LEN);
    let mut special = Vec::with_capacity(LEN);
    for i in 0..LEN {
        let s = i == 0 || i == LEN - 1;
        special.push(s);
        ids.push(if s {
            1
        } else {
            first_id + rng.below((vocab - first_id) as u64) as u32
        });
    }
    (ids, special)
}

/// Positions chosen by `sel` on `(ids, special)` at `mask_prob`, with stream `(seed, index)`.
fn chosen(
    sel: &impl Selector,
    ids: &[u32],
    special: &[bool],
    mask_prob: f64,
    seed: u64,
    index: u64,
) -> Vec<u32> {
    let ex = Example::new(ids, special);
    let mut rng = MaskRng::for_example(seed, 0, index, 0);
    let mut out = vec![];
    sel.select(
        &ex,
        mask_prob,
        &mut rng,
        &mut SelectScratch::default(),
        &mut out,
    );
    out.iter()
        .flat_map(|s| s.range().map(|p| p as u32))
        .collect()
}

/// Per-id masking frequency and the overall rate over `n` fresh examples; also checks that every
/// example gets `floor` or `ceil` of its budget and never a special position.
struct Rates {
    masked: Vec<u64>,
    seen: Vec<u64>,
    total_masked: u64,
    total_eligible: u64,
}

impl Rates {
    fn of(id_set: &[u32], r: &Rates) -> (f64, f64) {
        let (m, s) = id_set.iter().fold((0, 0), |(m, s), &id| {
            (m + r.masked[id as usize], s + r.seen[id as usize])
        });
        (m as f64 / s as f64, s as f64)
    }
}

fn measure(sel: &impl Selector, vocab: u32, mask_prob: f64, n: u64, seed: u64) -> Rates {
    let mut r = Rates {
        masked: vec![0; vocab as usize],
        seen: vec![0; vocab as usize],
        total_masked: 0,
        total_eligible: 0,
    };
    for index in 0..n {
        let (ids, special) = example_ids(seed, index, vocab, 2);
        let eligible = special.iter().filter(|&&s| !s).count();
        let pos = chosen(sel, &ids, &special, mask_prob, seed, index);
        let budget = mask_prob * eligible as f64;
        assert!(
            pos.len() == budget.floor() as usize || pos.len() == budget.ceil() as usize,
            "{} chosen for a budget of {budget}",
            pos.len()
        );
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
        for &p in &pos {
            assert!(!special[p as usize], "special position {p} chosen");
            r.masked[ids[p as usize] as usize] += 1;
        }
        for (i, &id) in ids.iter().enumerate() {
            if !special[i] {
                r.seen[id as usize] += 1;
            }
        }
        r.total_masked += pos.len() as u64;
        r.total_eligible += eligible as u64;
    }
    r
}

/// Asserts the overall rate is `mask_prob` within 6 sd: each example's count is within one of
/// its budget with expectation exactly the budget, so its variance is at most 1/4.
fn assert_rate(r: &Rates, mask_prob: f64, n_examples: u64) {
    let expected = mask_prob * r.total_eligible as f64;
    let tol = 6.0 * 0.5 * (n_examples as f64).sqrt();
    assert!(
        (r.total_masked as f64 - expected).abs() <= tol,
        "masked {} vs expected {expected} (tolerance {tol})",
        r.total_masked
    );
}

/// `a` exceeds `b` by more than 6 sd of the difference of two binomial proportions.
fn assert_more_often(a: (f64, f64), b: (f64, f64), what: &str) {
    let sd = (a.0 * (1.0 - a.0) / a.1 + b.0 * (1.0 - b.0) / b.1).sqrt();
    assert!(
        a.0 - b.0 > 6.0 * sd.max(1e-3),
        "{what}: rate {} (n {}) vs {} (n {}), 6 sd = {}",
        a.0,
        a.1,
        b.0,
        b.1,
        6.0 * sd
    );
}

// ---- loss-aware -----------------------------------------------------------------------------

const VOCAB_A: u32 = 40;
const HARD: u32 = 10;
const EASY: u32 = 11;

/// Synthetic per-token loss: `HARD` 6 nats, `EASY` 0.5, others 2 to 3 (deterministic noise).
fn synthetic_loss(id: u32, index: u64, pos: u32) -> f32 {
    match id {
        HARD => 6.0,
        EASY => 0.5,
        _ => 2.0 + (mix64(index * 1000 + pos as u64) % 1000) as f32 / 1000.0,
    }
}

fn feed_all_positions(sel: &mut impl Selector, seed: u64, rounds: u64) {
    for index in 0..rounds {
        let (ids, special) = example_ids(seed, index, VOCAB_A, 2);
        let positions: Vec<u32> = (0..LEN as u32).filter(|&p| !special[p as usize]).collect();
        let losses: Vec<f32> = positions
            .iter()
            .map(|&p| synthetic_loss(ids[p as usize], index, p))
            .collect();
        sel.observe(&ids, &positions, &losses);
    }
}

#[test]
fn loss_aware_masks_hard_tokens_more_often_at_the_same_rate() {
    let mut sel = LossAwareSelector::new(VOCAB_A, 0.99, 1.0, 0.2).unwrap();
    assert!(sel.is_adaptive());
    feed_all_positions(&mut sel, 5, 200);
    assert!(sel.observations(HARD) > 100 && sel.observations(EASY) > 100);
    assert!((sel.difficulty(HARD) - 6.0).abs() < 1e-9);
    assert!((sel.difficulty(EASY) - 0.5).abs() < 1e-9);
    // An id never fed back has the global running loss.
    assert_eq!(sel.observations(0), 0);
    let (mean, sd) = sel.loss_moments().unwrap();
    assert_eq!(sel.difficulty(0), mean);
    assert!(sd > 0.0);

    let (p, n) = (0.15, 3000);
    let r = measure(&sel, VOCAB_A, p, n, 6);
    assert_rate(&r, p, n);
    let hard = Rates::of(&[HARD], &r);
    let easy = Rates::of(&[EASY], &r);
    let others: Vec<u32> = (2..VOCAB_A).filter(|&i| i != HARD && i != EASY).collect();
    let mid = Rates::of(&others, &r);
    eprintln!(
        "loss-aware: rate hard {:.4}, others {:.4}, easy {:.4}; overall {:.5}",
        hard.0,
        mid.0,
        easy.0,
        r.total_masked as f64 / r.total_eligible as f64
    );
    assert_more_often(hard, mid, "hard vs others");
    assert_more_often(mid, easy, "others vs easy");
    // The uniform share keeps easy tokens maskable.
    assert!(r.masked[EASY as usize] > 0);
}

#[test]
fn loss_aware_without_feedback_is_uniform() {
    let sel = LossAwareSelector::new(VOCAB_A, 0.99, 1.0, 0.2).unwrap();
    let (ids, special) = example_ids(9, 0, VOCAB_A, 2);
    let mut w = vec![];
    sel.weights(&Example::new(&ids, &special), &mut w);
    for (i, &x) in w.iter().enumerate() {
        assert_eq!(x, if special[i] { 0.0 } else { 1.0 }, "position {i}");
    }
    // Every eligible position is chosen with probability mask_prob.
    let (p, draws) = (0.15, 8000u64);
    let mut hits = [0u64; LEN];
    for d in 0..draws {
        for q in chosen(&sel, &ids, &special, p, 3, d) {
            hits[q as usize] += 1;
        }
    }
    let sd = (p * (1.0 - p) / draws as f64).sqrt();
    for i in 0..LEN {
        let f = hits[i] as f64 / draws as f64;
        if special[i] {
            assert_eq!(hits[i], 0);
        } else {
            assert!((f - p).abs() <= 6.0 * sd, "position {i}: {f} vs {p}");
        }
    }
    let r = measure(&sel, VOCAB_A, p, 1000, 4);
    assert_rate(&r, p, 1000);
}

#[test]
fn loss_aware_ignores_unusable_feedback() {
    let mut sel = LossAwareSelector::new(VOCAB_A, 0.9, 1.0, 0.2).unwrap();
    let before = sel.state_bytes().unwrap();
    // Non-finite losses, positions past the end, out-of-vocabulary ids, missing losses.
    sel.observe(
        &[3, 4, 99],
        &[0, 1, 2, 7],
        &[f32::NAN, f32::INFINITY, 1.0, 1.0],
    );
    sel.observe(&[3, 4], &[0, 1], &[]);
    assert_eq!(sel.state_bytes().unwrap(), before);
    sel.observe(&[3, 4], &[1], &[2.5]);
    assert_eq!(sel.observations(4), 1);
    assert_eq!(sel.total_observations(), 1);
}

// ---- learned --------------------------------------------------------------------------------

const VOCAB_L: u32 = 30;

/// Loss of the token at `p`: ids below 8 are hard (5 nats), the rest easy (1 nat), plus a little
/// noise.
fn id_loss(ids: &[u32], p: u32, index: u64) -> f32 {
    let base = if ids[p as usize] < 8 { 5.0 } else { 1.0 };
    base + (mix64(index * 997 + p as u64) % 100) as f32 / 500.0
}

/// Loss of the token at `p` depends on the *previous* token only: after an id below 8 it is
/// hard.
fn context_loss(ids: &[u32], p: u32, index: u64) -> f32 {
    let base = if p > 0 && ids[p as usize - 1] < 8 {
        5.0
    } else {
        1.0
    };
    base + (mix64(index * 991 + p as u64) % 100) as f32 / 500.0
}

type LossFn = fn(&[u32], u32, u64) -> f32;

/// Mean objective over all eligible positions of held-out examples.
fn held_out_error(sel: &LearnedSelector, loss: LossFn) -> f64 {
    let mut total = 0.0;
    let n = 30;
    for index in 0..n {
        let (ids, special) = example_ids(1234, index, VOCAB_L, 0);
        let positions: Vec<u32> = (0..LEN as u32).filter(|&p| !special[p as usize]).collect();
        let losses: Vec<f32> = positions.iter().map(|&p| loss(&ids, p, index)).collect();
        total += sel.objective(&ids, &positions, &losses);
    }
    total / n as f64
}

/// Trains by the real loop: mask, compute the losses of the masked positions, feed them back.
fn train(sel: &mut LearnedSelector, loss: LossFn, rounds: u64, mask_prob: f64) {
    for index in 0..rounds {
        let (ids, special) = example_ids(77, index, VOCAB_L, 0);
        let pos = chosen(&*sel, &ids, &special, mask_prob, 77, index);
        let losses: Vec<f32> = pos.iter().map(|&p| loss(&ids, p, index)).collect();
        sel.observe(&ids, &pos, &losses);
    }
}

/// Masking rate of positions whose loss under `loss` is hard (> 3) vs easy, on fresh examples.
fn hard_easy_rates(
    sel: &LearnedSelector,
    loss: LossFn,
    mask_prob: f64,
) -> ((f64, f64), (f64, f64)) {
    let (mut hm, mut hs, mut em, mut es) = (0u64, 0u64, 0u64, 0u64);
    let mut total_masked = 0u64;
    let mut total_eligible = 0u64;
    let n = 1500;
    for index in 0..n {
        let (ids, special) = example_ids(4321, index, VOCAB_L, 0);
        let pos = chosen(sel, &ids, &special, mask_prob, 4321, index);
        total_masked += pos.len() as u64;
        for p in 0..LEN as u32 {
            if special[p as usize] {
                continue;
            }
            total_eligible += 1;
            let hit = pos.binary_search(&p).is_ok() as u64;
            if loss(&ids, p, index) > 3.0 {
                hm += hit;
                hs += 1;
            } else {
                em += hit;
                es += 1;
            }
        }
    }
    let expected = mask_prob * total_eligible as f64;
    let tol = 6.0 * 0.5 * (n as f64).sqrt();
    assert!((total_masked as f64 - expected).abs() <= tol);
    (
        (hm as f64 / hs as f64, hs as f64),
        (em as f64 / es as f64, es as f64),
    )
}

fn learns(loss: LossFn, what: &str) {
    let mut sel = LearnedSelector::new(VOCAB_L, 8, 16, 0.05, 1.0, 0.2, 3).unwrap();
    assert!(sel.is_adaptive());
    let before = held_out_error(&sel, loss);
    let (h0, e0) = hard_easy_rates(&sel, loss, 0.2);
    train(&mut sel, loss, 3000, 0.2);
    let after = held_out_error(&sel, loss);
    assert!(
        after < 0.1 * before && after < 0.2,
        "{what}: held-out error {before} -> {after}"
    );
    let (h1, e1) = hard_easy_rates(&sel, loss, 0.2);
    eprintln!(
        "{what}: held-out error {before:.4} -> {after:.4}; masking rate hard {:.4} -> {:.4}, easy {:.4} -> {:.4}",
        h0.0, h1.0, e0.0, e1.0
    );
    assert_more_often(h1, e1, what);
    assert_more_often(h1, h0, what);
    assert!(e1.0 < e0.0, "{what}: easy rate {} -> {}", e0.0, e1.0);
    assert!(sel.updates() > 2900);
}

#[test]
fn learned_scorer_learns_token_difficulty() {
    learns(id_loss, "loss by token id");
}

#[test]
fn learned_scorer_learns_context_difficulty() {
    learns(context_loss, "loss by previous token");
}

#[test]
fn learned_gradient_matches_finite_differences() {
    let mut sel = LearnedSelector::new(6, 3, 5, 0.1, 1.0, 0.2, 7).unwrap();
    // Move b2 and w2 away from their initial values so no term is trivially zero.
    let mut params = sel.parameters().to_vec();
    let n = params.len();
    params[n - 1] = 0.7;
    sel.set_parameters(&params).unwrap();
    assert_eq!(n, 7 * 3 + 5 * 11 + 5 + 1);
    // Id 9 is out of the vocabulary: as a neighbour it uses the "none" row; as a target it is
    // not usable. Id 2 repeats, so its embedding gets two contributions.
    let ids = [9, 3, 5, 2, 2, 0, 4];
    let positions = [0, 1, 2, 4, 6];
    let losses = [1.0, 2.5, 0.3, 4.0, 1.7];
    let g = sel.gradient(&ids, &positions, &losses);
    assert_eq!(g.len(), n);
    let h = 1e-5;
    let mut worst = 0.0f64;
    for k in 0..n {
        let mut plus = params.clone();
        plus[k] += h;
        let mut minus = params.clone();
        minus[k] -= h;
        let mut s = sel.clone();
        s.set_parameters(&plus).unwrap();
        let jp = s.objective(&ids, &positions, &losses);
        s.set_parameters(&minus).unwrap();
        let jm = s.objective(&ids, &positions, &losses);
        let fd = (jp - jm) / (2.0 * h);
        let err = (fd - g[k]).abs() / (1.0 + fd.abs() + g[k].abs());
        worst = worst.max(err);
        assert!(
            err < 1e-7,
            "parameter {k}: backprop {} vs finite difference {fd}",
            g[k]
        );
    }
    // Rows never touched (id 1) have zero gradient; the "none" row (6) does not.
    assert!(g[3..6].iter().all(|&x| x == 0.0));
    assert!(g[18..21].iter().any(|&x| x != 0.0));
    assert!(worst < 1e-7);

    // `observe` takes exactly the step params - lr * gradient (sparse embedding update).
    let mut stepped = sel.clone();
    stepped.observe(&ids, &positions, &losses);
    assert_eq!(stepped.updates(), 1);
    for (k, ((&p0, &p1), &gk)) in params.iter().zip(stepped.parameters()).zip(&g).enumerate() {
        let expected = p0 - 0.1 * gk;
        assert!(
            (p1 - expected).abs() < 1e-12,
            "parameter {k}: {p1} vs {expected}"
        );
    }
    // And it lowers the objective.
    assert!(
        stepped.objective(&ids, &positions, &losses) < sel.objective(&ids, &positions, &losses)
    );
}

#[test]
fn learned_initialisation_is_a_function_of_the_seed() {
    let a = LearnedSelector::new(50, 4, 8, 0.05, 1.0, 0.2, 11).unwrap();
    let b = LearnedSelector::new(50, 4, 8, 0.05, 1.0, 0.2, 11).unwrap();
    let c = LearnedSelector::new(50, 4, 8, 0.05, 1.0, 0.2, 12).unwrap();
    assert_eq!(a.state_bytes(), b.state_bytes());
    assert_ne!(a.parameters(), c.parameters());
    assert_eq!(a.predict(&[1, 2, 3], 1), b.predict(&[1, 2, 3], 1));
    assert_eq!(a.predict(&[1, 2, 3], 3), None);
    // Learning rate 0 freezes the scorer.
    let mut frozen = LearnedSelector::new(50, 4, 8, 0.0, 1.0, 0.2, 11).unwrap();
    frozen.observe(&[1, 2, 3], &[1], &[4.0]);
    assert_eq!(frozen.parameters(), a.parameters());
}

// ---- exact resume, through the masking pipeline ---------------------------------------------

fn pipeline_config(selection: SelectionConfig) -> MaskingConfig {
    MaskingConfig::new(VocabSpec::new(VOCAB_A, 0, vec![1]))
        .with_selection(selection)
        .with_rate(RateSchedule::constant(0.25))
}

/// One round: mask example `step` at step `step`, feed back the synthetic losses of its masked
/// positions. Returns the masked example.
fn round(masker: &mut TokenMasker, step: u64) -> MaskedExample {
    let (ids, special) = example_ids(21, step, VOCAB_A, 2);
    let ctx = MaskContext::new(21, 0, step, step);
    let out = masker.mask(&Example::new(&ids, &special), &ctx).unwrap();
    let positions: Vec<u32> = out.masked_positions().iter().map(|&p| p as u32).collect();
    let losses: Vec<f32> = positions
        .iter()
        .map(|&p| synthetic_loss(ids[p as usize], step, p))
        .collect();
    masker.observe(&ids, &positions, &losses);
    out
}

fn resumes_exactly(selection: SelectionConfig) {
    let cfg = pipeline_config(selection);
    let res = SelectorResources::default();
    let mut a = cfg.build_with(&res).unwrap();
    assert!(a.is_adaptive());
    let fresh_state = a.selector().state_bytes().unwrap();
    let (n, m) = (60, 60);
    for step in 0..n {
        round(&mut a, step);
    }
    let saved = a.selector().state_bytes().unwrap();
    assert_ne!(saved, fresh_state, "{selection:?} learned nothing");
    let mut b = cfg.build_with(&res).unwrap();
    b.selector_mut().load_state_bytes(&saved).unwrap();
    assert_eq!(b.selector().state_bytes().unwrap(), saved);
    // A selector that was not restored, to show the state matters.
    let mut c = cfg.build_with(&res).unwrap();
    let mut differs = 0;
    for step in n..n + m {
        let ma = round(&mut a, step);
        let mb = round(&mut b, step);
        assert_eq!(ma, mb, "{selection:?}: step {step} differs after resume");
        differs += (round(&mut c, step) != ma) as u32;
    }
    assert!(differs > 0, "{selection:?}: the state never changed a mask");
    assert_eq!(
        a.selector().state_bytes().unwrap(),
        b.selector().state_bytes().unwrap()
    );
}

#[test]
fn loss_aware_resumes_exactly() {
    resumes_exactly(SelectionConfig::LossAware {
        ema_decay: 0.9,
        temperature: 0.5,
        uniform_mix: 0.1,
    });
}

#[test]
fn learned_resumes_exactly() {
    resumes_exactly(SelectionConfig::Learned {
        embed_dim: 4,
        hidden: 8,
        learning_rate: 0.1,
        temperature: 0.5,
        uniform_mix: 0.1,
        init_seed: 5,
    });
}

// ---- state errors ---------------------------------------------------------------------------

fn state_error(sel: &mut impl Selector, bytes: &[u8], needle: &str) {
    let before = sel.state_bytes();
    match sel.load_state_bytes(bytes) {
        Err(MaskError::State { policy, reason }) => {
            assert_eq!(policy, sel.name());
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            );
        }
        other => panic!("expected a state error containing {needle:?}, got {other:?}"),
    }
    assert_eq!(sel.state_bytes(), before, "a failed load changed the state");
}

#[test]
fn corrupt_or_mismatched_state_is_refused() {
    let mut la = LossAwareSelector::new(VOCAB_A, 0.99, 1.0, 0.2).unwrap();
    feed_all_positions(&mut la, 1, 3);
    let good = la.state_bytes().unwrap();
    // Header (magic, version, vocab, count, global moments) + 24 bytes per id.
    assert_eq!(good.len(), 52 + 24 * VOCAB_A as usize);
    let mut fresh = LossAwareSelector::new(VOCAB_A, 0.99, 1.0, 0.2).unwrap();
    state_error(&mut fresh, &good[..good.len() - 1], "length");
    state_error(&mut fresh, &good[..3], "truncated");
    state_error(&mut fresh, &[], "truncated");
    let mut bad = good.clone();
    bad[0] = b'X';
    state_error(&mut fresh, &bad, "magic");
    let mut bad = good.clone();
    bad[4] = 9;
    state_error(&mut fresh, &bad, "version");
    let mut longer = good.clone();
    longer.push(0);
    state_error(&mut fresh, &longer, "length");
    let mut other_vocab = LossAwareSelector::new(VOCAB_A + 1, 0.99, 1.0, 0.2).unwrap();
    state_error(&mut other_vocab, &good, "vocab_size");
    // A NaN where a float belongs.
    let mut bad = good.clone();
    let at = bad.len() - 8;
    bad[at..].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
    state_error(&mut fresh, &bad, "non-finite");
    fresh.load_state_bytes(&good).unwrap();
    assert_eq!(fresh, la);

    let mut ln = LearnedSelector::new(VOCAB_L, 4, 8, 0.05, 1.0, 0.2, 0).unwrap();
    ln.observe(&[3, 4, 5], &[1], &[2.0]);
    let good = ln.state_bytes().unwrap();
    // Header (magic, version, three dimensions, update count) + every parameter.
    assert_eq!(good.len(), 28 + 8 * ln.num_parameters());
    assert_eq!(
        ln.num_parameters(),
        (VOCAB_L as usize + 1) * 4 + 8 * 14 + 8 + 1
    );
    let mut fresh = LearnedSelector::new(VOCAB_L, 4, 8, 0.05, 1.0, 0.2, 9).unwrap();
    state_error(&mut fresh, &good[..good.len() - 8], "length");
    state_error(&mut fresh, &[], "truncated");
    let mut other = LearnedSelector::new(VOCAB_L + 1, 4, 8, 0.05, 1.0, 0.2, 0).unwrap();
    state_error(&mut other, &good, "vocab_size");
    let mut other = LearnedSelector::new(VOCAB_L, 5, 8, 0.05, 1.0, 0.2, 0).unwrap();
    state_error(&mut other, &good, "embed_dim");
    let mut other = LearnedSelector::new(VOCAB_L, 4, 9, 0.05, 1.0, 0.2, 0).unwrap();
    state_error(&mut other, &good, "hidden");
    // One policy's state is not another's.
    state_error(&mut fresh, &la.state_bytes().unwrap(), "magic");
    state_error(&mut la, &good, "magic");
    fresh.load_state_bytes(&good).unwrap();
    assert_eq!(fresh.state_bytes().unwrap(), good);
    assert_eq!(fresh.updates(), 1);
    // Through `AnySelector` as well.
    let mut any = SelectionConfig::Learned {
        embed_dim: 4,
        hidden: 8,
        learning_rate: 0.05,
        temperature: 1.0,
        uniform_mix: 0.2,
        init_seed: 0,
    }
    .build_with(VOCAB_L, &SelectorResources::default())
    .unwrap();
    any.load_state_bytes(&good).unwrap();
    assert!(any.load_state_bytes(&good[1..]).is_err());
}

// ---- configs --------------------------------------------------------------------------------

#[test]
fn model_based_configs_round_trip_with_defaults() {
    let la: SelectionConfig = serde_json::from_str(r#"{"type": "loss_aware"}"#).unwrap();
    assert_eq!(
        la,
        SelectionConfig::LossAware {
            ema_decay: 0.99,
            temperature: 1.0,
            uniform_mix: 0.2
        }
    );
    let ln: SelectionConfig = serde_json::from_str(r#"{"type": "learned"}"#).unwrap();
    assert_eq!(
        ln,
        SelectionConfig::Learned {
            embed_dim: 8,
            hidden: 16,
            learning_rate: 0.05,
            temperature: 1.0,
            uniform_mix: 0.2,
            init_seed: 0
        }
    );
    let custom = [
        SelectionConfig::LossAware {
            ema_decay: 0.5,
            temperature: 2.0,
            uniform_mix: 0.0,
        },
        SelectionConfig::Learned {
            embed_dim: 3,
            hidden: 5,
            learning_rate: 0.2,
            temperature: 0.25,
            uniform_mix: 1.0,
            init_seed: 1 << 40,
        },
    ];
    for s in [la, ln].into_iter().chain(custom) {
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SelectionConfig>(&json).unwrap(), s);
        let cfg = pipeline_config(s);
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<MaskingConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
        let masker = cfg.build_with(&SelectorResources::default()).unwrap();
        assert!(masker.is_adaptive());
        // Without a vocabulary size they cannot be built.
        assert!(matches!(
            s.build(),
            Err(MaskError::MissingResource {
                resource: "vocab_size",
                ..
            })
        ));
    }
    let refuse = |json: &str, needle: &str| {
        let err = serde_json::from_str::<SelectionConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "error for {json} was {err:?}");
    };
    // JSON carries any u64 seed (TOML integers stop at i64::MAX).
    let big = SelectionConfig::Learned {
        embed_dim: 8,
        hidden: 16,
        learning_rate: 0.05,
        temperature: 1.0,
        uniform_mix: 0.2,
        init_seed: u64::MAX,
    };
    let json = serde_json::to_string(&big).unwrap();
    assert_eq!(serde_json::from_str::<SelectionConfig>(&json).unwrap(), big);
    refuse(r#"{"type": "loss_aware", "hidden": 3}"#, "hidden");
    refuse(r#"{"type": "learned", "ema_decay": 0.9}"#, "ema_decay");
    refuse(r#"{"type": "learned", "embed_dim": -1}"#, "u32");
}

#[test]
fn invalid_model_based_parameters_are_named() {
    let field = |e: MaskError| match e {
        MaskError::InvalidValue { field, .. } => field,
        MaskError::InvalidProbability { field, .. } => field,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        field(LossAwareSelector::new(10, 1.0, 1.0, 0.2).unwrap_err()),
        "ema_decay"
    );
    assert_eq!(
        field(LossAwareSelector::new(10, 0.9, 0.0, 0.2).unwrap_err()),
        "temperature"
    );
    assert_eq!(
        field(LossAwareSelector::new(10, 0.9, 1.0, 1.5).unwrap_err()),
        "uniform_mix"
    );
    let ln = |d, h, lr, t, mix| LearnedSelector::new(10, d, h, lr, t, mix, 0).unwrap_err();
    assert_eq!(field(ln(0, 16, 0.05, 1.0, 0.2)), "embed_dim");
    assert_eq!(field(ln(8, 0, 0.05, 1.0, 0.2)), "hidden");
    assert_eq!(field(ln(8, 16, f64::NAN, 1.0, 0.2)), "learning_rate");
    assert_eq!(field(ln(8, 16, 0.05, -1.0, 0.2)), "temperature");
    assert_eq!(field(ln(8, 16, 0.05, 1.0, -0.1)), "uniform_mix");
    assert!(matches!(
        LearnedSelector::new(0, 8, 16, 0.05, 1.0, 0.2, 0),
        Err(MaskError::MissingResource { .. })
    ));
}
