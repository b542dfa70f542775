//! Tile classification against brute force on random policies (property test), and
//! materialisation against `allows`.

use mask_attn::mask::scan_tile;
use mask_attn::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]
    #[test]
    fn classification_is_exact(
        kind in 0..crate::common::random_masks::KINDS.len(),
        batch in 1usize..3,
        heads in 1usize..3,
        t in 1usize..48,
        seed in any::<u64>(),
        q0 in 0usize..48, ql in 1usize..20,
        k0 in 0usize..48, kl in 1usize..20,
    ) {
        let mask = crate::common::random_masks::make(kind, batch, heads, t, seed);
        let (q0, k0) = (q0 % t, k0 % t);
        let q = q0..(q0 + ql).min(t);
        let k = k0..(k0 + kl).min(t);
        for b in 0..batch {
            for h in 0..heads {
                let fast = mask.classify(b, h, q.clone(), k.clone());
                let brute = scan_tile(&*mask, b, h, q.clone(), k.clone());
                // AllPartial reports Partial by design; everything else must be exact.
                if crate::common::random_masks::KINDS[kind].starts_with("all_partial") {
                    prop_assert_eq!(fast, TileKind::Partial);
                } else {
                    prop_assert_eq!(fast, brute, "{} b{} h{} q{:?} k{:?}", crate::common::random_masks::KINDS[kind], b, h, q, k);
                }
            }
        }
    }
}

#[test]
fn tile_map_union_and_counts() {
    // Window 4 over 32 positions in tiles of 8: diagonal tiles partial, the first sub-diagonal
    // partial, the rest empty.
    let m = SlidingWindow::new(4, true).unwrap();
    let map = TileMap::build(&m, 2, 4, 32, 32, 8, 8).unwrap();
    assert_eq!(map.heads(), 1, "head-independent masks are classified once");
    assert_eq!(map.union_counts(), (16 - 4 - 3, 0, 7));
    let causal = TileMap::build(&Causal, 1, 1, 30, 30, 8, 8).unwrap();
    // 4 x 4 tiles (last one short): 6 full below the diagonal, 4 partial on it, 6 empty.
    assert_eq!(causal.union_counts(), (6, 6, 4));
    // Per-example padding: the union is partial where any example is partial.
    let pad = KeyPadding::from_lengths(&[8, 32], 32).unwrap();
    let map = TileMap::build(&pad, 2, 1, 32, 32, 8, 8).unwrap();
    assert_eq!(map.kind(0, 0, 0, 1), TileKind::Empty);
    assert_eq!(map.kind(1, 0, 0, 1), TileKind::Full);
    assert_eq!(map.union_kind(0, 1), TileKind::Partial);
}

#[test]
fn shape_errors_are_typed() {
    let pad = KeyPadding::from_lengths(&[3, 4], 8).unwrap();
    let err = TileMap::build(&pad, 3, 1, 8, 8, 4, 4).unwrap_err();
    assert!(err.to_string().contains("batch size"), "{err}");
    let err = TileMap::build(&pad, 2, 1, 9, 9, 4, 4).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
    assert!(TileMap::build(&Causal, 1, 1, 8, 8, 0, 4).is_err());
    assert!(KeyPadding::from_lengths(&[9], 8).is_err());
    assert!(SlidingWindow::new(0, true).is_err());
    assert!(RandomKeyDrop::new(1.5, 0, 1, 1, 8, false).is_err());
    let a = KeyPadding::from_lengths(&[3], 8).unwrap();
    let b = KeyPadding::from_lengths(&[3, 4], 8).unwrap();
    assert!(And::new(vec![Box::new(a), Box::new(b)]).is_err());
}

#[test]
fn random_key_drop_rate_and_reproducibility() {
    let (batch, heads, t) = (4, 2, 4096);
    let a = RandomKeyDrop::new(0.5, 9, batch, heads, t, true).unwrap();
    let b = RandomKeyDrop::new(0.5, 9, batch, heads, t, true).unwrap();
    assert_eq!(a, b);
    let dropped = (0..batch)
        .flat_map(|bb| (0..heads).flat_map(move |h| (0..t).map(move |k| (bb, h, k))))
        .filter(|&(bb, h, k)| !a.allows(bb, h, 0, k))
        .count();
    let n = (batch * heads * t) as f64;
    let sd = (n * 0.25).sqrt();
    assert!(
        (dropped as f64 - n / 2.0).abs() < 5.0 * sd,
        "dropped {dropped} of {n}"
    );
    // Per head: heads differ.
    assert!((0..t).any(|k| a.allows(0, 0, 0, k) != a.allows(0, 1, 0, k)));
}
