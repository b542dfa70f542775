//! Mask semantics from an independent definition. The kernel tests compare kernels against the
//! same `allows` they consume, so a mask with the wrong meaning would pass them all; here every
//! built-in mask and combinator is checked against a brute-force table written from its
//! documented definition (the paper's rule, not the code), through both the materialised tensor
//! (`mask_tensor`, what the reference kernel uses) and the tile map (what the fast kernels use:
//! a tile is empty iff no pair in it is allowed, full iff every pair is).
//!
//! Random shapes: B in 1..=3, H in 1..=3, T in 1..=40, tiles of 1..=9, 40 seeds per mask.

use crate::common::Cpu;
use mask_attn::*;
use mask_core::MaskRng;

/// `[b][h][q][k]` from a definition.
type Table = Vec<Vec<Vec<Vec<bool>>>>;

fn table(b: usize, h: usize, t: usize, rule: impl Fn(usize, usize, usize, usize) -> bool) -> Table {
    (0..b)
        .map(|bi| {
            (0..h)
                .map(|hi| {
                    (0..t)
                        .map(|q| (0..t).map(|k| rule(bi, hi, q, k)).collect())
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn check(what: &str, mask: &dyn AttnMask, expected: &Table, tile: usize) {
    let (b, h, t) = (expected.len(), expected[0].len(), expected[0][0].len());
    let device = Default::default();
    // Materialised: burn's convention, true = masked.
    let masked: Vec<i64> = mask_tensor::<Cpu>(mask, b, h, t, t, &device)
        .unwrap()
        .int()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    for bi in 0..b {
        for hi in 0..h {
            for q in 0..t {
                for k in 0..t {
                    let at = ((bi * h + hi) * t + q) * t + k;
                    assert_eq!(
                        masked[at] == 0,
                        expected[bi][hi][q][k],
                        "{what}: b{bi} h{hi} q{q} k{k} (B{b} H{h} T{t})"
                    );
                }
            }
        }
    }
    // Tile classification against the table.
    let map = TileMap::build(mask, b, h, t, t, tile, tile).unwrap();
    for bi in 0..b {
        for hi in 0..h {
            let mh = if map.heads() == 1 { 0 } else { hi };
            for qt in 0..map.n_q_tiles() {
                for kt in 0..map.n_k_tiles() {
                    let cells: Vec<bool> = map
                        .q_range(qt)
                        .flat_map(|q| map.k_range(kt).map(move |k| (q, k)))
                        .map(|(q, k)| expected[bi][hi][q][k])
                        .collect();
                    let want = if cells.iter().all(|&a| !a) {
                        TileKind::Empty
                    } else if cells.iter().all(|&a| a) {
                        TileKind::Full
                    } else {
                        TileKind::Partial
                    };
                    assert_eq!(
                        map.kind(bi, mh, qt, kt),
                        want,
                        "{what}: tile b{bi} h{hi} ({qt}, {kt}), tile size {tile}, T{t}"
                    );
                }
            }
        }
    }
}

struct Shape {
    b: usize,
    h: usize,
    t: usize,
    tile: usize,
    rng: MaskRng,
}

fn shape(seed: u64) -> Shape {
    let mut rng = MaskRng::for_example(seed, 0, 0, 77);
    Shape {
        b: 1 + rng.below(3) as usize,
        h: 1 + rng.below(3) as usize,
        t: 1 + rng.below(40) as usize,
        tile: 1 + rng.below(9) as usize,
        rng,
    }
}

#[test]
fn structured_masks_mean_what_their_definitions_say() {
    for seed in 0..40 {
        let Shape {
            b,
            h,
            t,
            tile,
            mut rng,
        } = shape(seed);
        let w = 1 + rng.below(t as u64 + 2) as usize;
        check(
            "causal",
            &Causal,
            &table(b, h, t, |_, _, q, k| k <= q),
            tile,
        );
        check(
            "allow all",
            &AllowAll,
            &table(b, h, t, |_, _, _, _| true),
            tile,
        );
        // Longformer / Mistral: the causal band 0 <= q - k < w, the symmetric |q - k| < w.
        check(
            "causal window",
            &SlidingWindow::new(w, true).unwrap(),
            &table(b, h, t, |_, _, q, k| k <= q && q - k < w),
            tile,
        );
        check(
            "symmetric window",
            &SlidingWindow::new(w, false).unwrap(),
            &table(b, h, t, |_, _, q, k| q.abs_diff(k) < w),
            tile,
        );
        // Key padding: example b has lengths[b] real keys.
        let lengths: Vec<usize> = (0..b).map(|_| rng.below(t as u64 + 1) as usize).collect();
        check(
            "key padding",
            &KeyPadding::from_lengths(&lengths, t).unwrap(),
            &table(b, h, t, |bi, _, _, k| k < lengths[bi]),
            tile,
        );
        // Documents, scattered (not contiguous) ids: same id, bidirectional.
        let ids: Vec<u32> = (0..b * t).map(|_| rng.below(3) as u32).collect();
        check(
            "scattered documents",
            &Document::new(&ids, b, t).unwrap(),
            &table(b, h, t, |bi, _, q, k| ids[bi * t + q] == ids[bi * t + k]),
            tile,
        );
        // Prefix LM (UniLM): bidirectional over the prefix, causal after it.
        let prefix: Vec<usize> = (0..b).map(|_| rng.below(t as u64 + 1) as usize).collect();
        check(
            "prefix lm",
            &PrefixLm::new(prefix.clone()),
            &table(b, h, t, |bi, _, q, k| k < prefix[bi] || k <= q),
            tile,
        );
        // Token exclusion (the seed article, 4.2): (i, j) hidden when i or j is excluded.
        let excluded: Vec<bool> = (0..b * t).map(|_| rng.below(4) == 0).collect();
        check(
            "token exclusion",
            &TokenExclusion::new(&excluded, b, t).unwrap(),
            &table(b, h, t, |bi, _, q, k| {
                !excluded[bi * t + q] && !excluded[bi * t + k]
            }),
            tile,
        );
    }
}

#[test]
fn combinators_are_boolean_algebra_on_their_children() {
    for seed in 0..40 {
        let Shape {
            b,
            h,
            t,
            tile,
            mut rng,
        } = shape(seed + 1000);
        let w = 1 + rng.below(t as u64 + 2) as usize;
        let lengths: Vec<usize> = (0..b).map(|_| rng.below(t as u64 + 1) as usize).collect();
        let pad = || Box::new(KeyPadding::from_lengths(&lengths, t).unwrap());
        check(
            "causal and padding",
            &And::new(vec![Box::new(Causal), pad()]).unwrap(),
            &table(b, h, t, |bi, _, q, k| k <= q && k < lengths[bi]),
            tile,
        );
        check(
            "causal or symmetric window",
            &Or::new(vec![
                Box::new(Causal),
                Box::new(SlidingWindow::new(w, false).unwrap()),
            ])
            .unwrap(),
            &table(b, h, t, |_, _, q, k| k <= q || q.abs_diff(k) < w),
            tile,
        );
        check(
            "not causal",
            &Not(Box::new(Causal)),
            &table(b, h, t, |_, _, q, k| k > q),
            tile,
        );
        check(
            "not (padding and window)",
            &Not(Box::new(
                And::new(vec![pad(), Box::new(SlidingWindow::new(w, true).unwrap())]).unwrap(),
            )),
            &table(b, h, t, |bi, _, q, k| {
                !(k < lengths[bi] && k <= q && q - k < w)
            }),
            tile,
        );
    }
}

/// Random key drop has no closed-form table (its pattern comes from the counter-based
/// generator), so its definition is checked as properties: a key is hidden for every query or
/// for none; shared by all heads unless `per_head`; reproducible from the seed; and the drop
/// count is Binomial(n, p): with n = 3 x 4 x 400 = 4,800 draws at p = 0.3 the standard
/// deviation of the rate is sqrt(0.3 * 0.7 / 4800) = 0.0066, and the test allows 4.5 sigma
/// (0.03), which a correct sampler exceeds with probability 7e-6.
#[test]
fn random_key_drop_hides_whole_keys_at_its_rate() {
    let (b, h, t) = (3, 4, 400);
    for per_head in [false, true] {
        let mask = RandomKeyDrop::new(0.3, 9, b, h, t, per_head).unwrap();
        let again = RandomKeyDrop::new(0.3, 9, b, h, t, per_head).unwrap();
        let mut dropped = 0usize;
        for bi in 0..b {
            for hi in 0..h {
                for k in 0..t {
                    let a = mask.allows(bi, hi, 0, k);
                    assert_eq!(a, again.allows(bi, hi, 0, k), "reproducible");
                    for q in [1, t / 2, t - 1] {
                        assert_eq!(mask.allows(bi, hi, q, k), a, "same for every query");
                    }
                    if !per_head {
                        assert_eq!(mask.allows(bi, 0, 0, k), a, "shared by heads");
                    }
                    dropped += usize::from(!a);
                }
            }
        }
        let rate = dropped as f64 / (b * h * t) as f64;
        assert!(
            (rate - 0.3).abs() < 0.03,
            "per_head {per_head}: rate {rate}"
        );
        if per_head {
            let differs = (0..t).any(|k| mask.allows(0, 0, 0, k) != mask.allows(0, 1, 0, k));
            assert!(differs, "per-head patterns should differ between heads");
        }
    }
}
