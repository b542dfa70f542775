//! Patch masking (MAE random, BEiT block-wise): invariants (property tests), statistics,
//! reproducibility under static and dynamic regimes, serde and errors.

use mask_core::*;
use proptest::prelude::*;

fn selection_strategy() -> impl Strategy<Value = PatchSelectionConfig> {
    prop_oneof![
        (0.0f64..0.99).prop_map(|mask_ratio| PatchSelectionConfig::Random { mask_ratio }),
        (0.0f64..0.99, 1u32..10, 0.05f64..=1.0).prop_map(|(mask_ratio, min_block, min_aspect)| {
            PatchSelectionConfig::BlockWise {
                mask_ratio,
                min_block,
                min_aspect,
            }
        }),
    ]
}

/// Checks every structural invariant of one mask.
fn check_mask(m: &PatchMask, n: usize, n_masked: usize) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(m.masked.len(), n_masked);
    prop_assert_eq!(m.keep.len(), n - n_masked);
    prop_assert_eq!(m.restore.len(), n);
    prop_assert!(m.keep.windows(2).all(|w| w[0] < w[1]), "keep not ascending");
    prop_assert!(
        m.masked.windows(2).all(|w| w[0] < w[1]),
        "masked not ascending"
    );
    let mut seen = vec![0u8; n];
    for &i in m.keep.iter().chain(&m.masked) {
        prop_assert!((i as usize) < n);
        seen[i as usize] += 1;
    }
    prop_assert!(
        seen.iter().all(|&c| c == 1),
        "keep and masked must partition 0..N"
    );
    // restore is the inverse of the permutation keep ++ masked.
    let order: Vec<u32> = m.keep.iter().chain(&m.masked).copied().collect();
    for (pos, &patch) in order.iter().enumerate() {
        prop_assert_eq!(m.restore[patch as usize] as usize, pos);
    }
    let hidden = m.hidden();
    prop_assert_eq!(hidden.iter().filter(|&&h| h).count(), n_masked);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn masks_partition_the_grid_with_an_exact_count(
        grid_h in 1u32..=16,
        grid_w in 1u32..=16,
        selection in selection_strategy(),
        seed in any::<u64>(),
        epoch in 0u64..1000,
        index in any::<u64>(),
    ) {
        let cfg = PatchMaskingConfig::new(grid_h, grid_w, selection);
        let n = (grid_h * grid_w) as usize;
        let n_masked = (selection.mask_ratio() * n as f64).round() as usize;
        prop_assume!(n_masked < n);
        let masker = cfg.build().unwrap();
        prop_assert_eq!(masker.n_masked(), n_masked);
        prop_assert_eq!(masker.n_visible(), n - n_masked);
        let m = masker.mask(seed, epoch, index);
        check_mask(&m, n, n_masked)?;
        // Pure function of its coordinates; buffer reuse changes nothing.
        prop_assert_eq!(&m, &masker.mask(seed, epoch, index));
        let mut reused = masker.mask(seed ^ 1, epoch + 1, index ^ 1);
        masker.mask_into(seed, epoch, index, &mut reused);
        prop_assert_eq!(&m, &reused);
    }

    #[test]
    fn static_masks_cycle_with_period_k(
        selection in selection_strategy(),
        k in 1u64..6,
        seed in any::<u64>(),
        epoch in 0u64..100,
        index in 0u64..1_000_000,
    ) {
        prop_assume!(selection.mask_ratio() * 64.0 < 63.5);
        let masker = PatchMaskingConfig::new(8, 8, selection)
            .with_regime(Regime::Static { dupe_factor: k })
            .build()
            .unwrap();
        prop_assert_eq!(masker.mask(seed, epoch, index), masker.mask(seed, epoch + k, index));
        prop_assert_eq!(masker.mask(seed, epoch, index), masker.mask(seed, epoch % k, index));
    }
}

#[test]
fn dynamic_masks_change_every_epoch_and_static_k_gives_k_distinct_masks() {
    for selection in [
        PatchSelectionConfig::default(),
        PatchSelectionConfig::block_wise(),
    ] {
        let dynamic = PatchMaskingConfig::new(14, 14, selection).build().unwrap();
        let static4 = PatchMaskingConfig::new(14, 14, selection)
            .with_regime(Regime::Static { dupe_factor: 4 })
            .build()
            .unwrap();
        for index in 0..200 {
            let a = dynamic.mask(5, 0, index);
            // 196 patches: two independent masks coincide with negligible probability.
            assert_ne!(a, dynamic.mask(5, 1, index), "{selection:?} index {index}");
            assert_ne!(a, dynamic.mask(5, 0, index + 1));
            assert_ne!(a, dynamic.mask(6, 0, index));
            // Static and dynamic share their first k epochs (same function, same coordinates).
            let s: Vec<PatchMask> = (0..8).map(|e| static4.mask(5, e, index)).collect();
            assert_eq!(s[0], a);
            for e in 0..4 {
                assert_eq!(s[e], s[e + 4]);
                for f in 0..e {
                    assert_ne!(s[e], s[f]);
                }
            }
        }
    }
}

#[test]
fn random_masking_hides_every_patch_at_the_ratio() {
    let (grid, ratio, images) = (14u32, 0.75, 20_000u64);
    let masker = PatchMaskingConfig::new(
        grid,
        grid,
        PatchSelectionConfig::Random { mask_ratio: ratio },
    )
    .build()
    .unwrap();
    let n = (grid * grid) as usize;
    let p = masker.n_masked() as f64 / n as f64; // 147 / 196 = 0.75 exactly
    let mut counts = vec![0u64; n];
    let mut m = PatchMask::default();
    for i in 0..images {
        masker.mask_into(3, 0, i, &mut m);
        for &j in &m.masked {
            counts[j as usize] += 1;
        }
    }
    // Each patch's frequency is a binomial(images, p) proportion: 6 standard deviations.
    let tol = 6.0 * (p * (1.0 - p) / images as f64).sqrt();
    for (j, &c) in counts.iter().enumerate() {
        let f = c as f64 / images as f64;
        assert!((f - p).abs() < tol, "patch {j}: {f} vs {p} (tol {tol})");
    }
}

/// Number of 4-connected components of the hidden patches.
fn components(hidden: &[bool], h: usize, w: usize) -> usize {
    let mut seen = vec![false; hidden.len()];
    let mut count = 0;
    let mut stack = vec![];
    for start in 0..hidden.len() {
        if !hidden[start] || seen[start] {
            continue;
        }
        count += 1;
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (r, c) = (i / w, i % w);
            let mut visit = |j: usize| {
                if hidden[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if r > 0 {
                visit(i - w);
            }
            if r + 1 < h {
                visit(i + w);
            }
            if c > 0 {
                visit(i - 1);
            }
            if c + 1 < w {
                visit(i + 1);
            }
        }
    }
    count
}

#[test]
fn block_wise_masks_are_contiguous_blocks() {
    let (grid, images) = (14usize, 2_000u64);
    let block = PatchMaskingConfig::new(14, 14, PatchSelectionConfig::block_wise())
        .build()
        .unwrap();
    let random = PatchMaskingConfig::new(14, 14, PatchSelectionConfig::Random { mask_ratio: 0.4 })
        .build()
        .unwrap();
    assert_eq!(block.n_masked(), 78); // round(0.4 * 196)
    let mean_components = |m: &PatchMasker| {
        (0..images)
            .map(|i| components(&m.mask(11, 0, i).hidden(), grid, grid) as f64)
            .sum::<f64>()
            / images as f64
    };
    let (b, r) = (mean_components(&block), mean_components(&random));
    eprintln!("mean 4-connected components: block-wise {b:.2}, random {r:.2}");
    // Random masking at 40 % leaves dozens of pieces; BEiT's rectangles merge into a few.
    assert!(r > 15.0, "random: {r} components");
    assert!(b < 0.25 * r, "block-wise {b} vs random {r} components");
    // Block-wise masking is not uniform: central patches are covered more often than corners
    // (rectangles must fit inside the grid), but every patch is reachable.
    let mut counts = vec![0u64; grid * grid];
    for i in 0..images {
        for j in block.mask(11, 0, i).masked {
            counts[j as usize] += 1;
        }
    }
    assert!(counts.iter().all(|&c| c > 0));
    let centre = counts[7 * grid + 7];
    assert!(
        centre > counts[0],
        "centre {centre} vs corner {}",
        counts[0]
    );
}

#[test]
fn block_wise_with_square_blocks_and_a_full_budget_tops_up_exactly() {
    // A 2 x 2 grid cannot hold any block with h < 2 and w < 2 of area >= 4: the rectangle loop
    // stalls at once and the top-up fills the whole budget.
    for ratio in [0.25, 0.5, 0.74] {
        let m = PatchMaskingConfig::new(
            2,
            2,
            PatchSelectionConfig::BlockWise {
                mask_ratio: ratio,
                min_block: 4,
                min_aspect: 1.0,
            },
        )
        .build()
        .unwrap();
        for i in 0..50 {
            assert_eq!(
                m.mask(0, 0, i).masked.len(),
                (ratio * 4.0f64).round() as usize
            );
        }
    }
}

#[test]
fn configs_round_trip_through_json_and_toml() {
    let configs = [
        PatchMaskingConfig::new(7, 7, PatchSelectionConfig::default()),
        PatchMaskingConfig::new(14, 16, PatchSelectionConfig::block_wise())
            .with_regime(Regime::Static { dupe_factor: 10 }),
        PatchMaskingConfig::new(
            3,
            5,
            PatchSelectionConfig::BlockWise {
                mask_ratio: 0.2,
                min_block: 2,
                min_aspect: 0.5,
            },
        )
        .with_regime(Regime::fully_static()),
    ];
    for cfg in configs {
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            serde_json::from_str::<PatchMaskingConfig>(&json).unwrap(),
            cfg
        );
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<PatchMaskingConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
        cfg.build().unwrap();
    }
}

#[test]
fn defaults_fill_in_minimal_configs() {
    let cfg: PatchMaskingConfig = toml::from_str("grid_h = 7\ngrid_w = 7").unwrap();
    assert_eq!(
        cfg,
        PatchMaskingConfig::new(7, 7, PatchSelectionConfig::Random { mask_ratio: 0.75 })
    );
    assert_eq!(cfg.regime, Regime::Dynamic {});
    let cfg: PatchMaskingConfig =
        toml::from_str("grid_h = 14\ngrid_w = 14\nselection = { type = \"block_wise\" }").unwrap();
    assert_eq!(cfg.selection, PatchSelectionConfig::block_wise());
    assert_eq!(
        cfg.selection,
        PatchSelectionConfig::BlockWise {
            mask_ratio: 0.4,
            min_block: 4,
            min_aspect: 0.3
        }
    );
}

#[test]
fn wrong_variants_and_unknown_fields_are_refused() {
    let err = toml::from_str::<PatchMaskingConfig>(
        "grid_h = 7\ngrid_w = 7\nselection = { type = \"checkerboard\" }",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("checkerboard"), "{err}");
    // A field of the other variant.
    let err = toml::from_str::<PatchMaskingConfig>(
        "grid_h = 7\ngrid_w = 7\nselection = { type = \"random\", min_block = 4 }",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("min_block"), "{err}");
    let err = toml::from_str::<PatchMaskingConfig>("grid_h = 7\ngrid_w = 7\npatch_size = 4")
        .unwrap_err()
        .to_string();
    assert!(err.contains("patch_size"), "{err}");
    let err = serde_json::from_str::<PatchMaskingConfig>(r#"{"grid_h": 7}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("grid_w"), "{err}");
}

fn field_of(cfg: PatchMaskingConfig) -> (&'static str, String) {
    match cfg.build().unwrap_err() {
        MaskError::InvalidValue { field, value, .. } => (field, value),
        e => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn invalid_configs_name_the_field_and_value() {
    let random = |r| PatchSelectionConfig::Random { mask_ratio: r };
    let block = |mask_ratio, min_block, min_aspect| PatchSelectionConfig::BlockWise {
        mask_ratio,
        min_block,
        min_aspect,
    };
    assert_eq!(
        field_of(PatchMaskingConfig::new(0, 7, random(0.5))).0,
        "grid_h"
    );
    assert_eq!(
        field_of(PatchMaskingConfig::new(7, 0, random(0.5))).0,
        "grid_w"
    );
    for r in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
        let (field, value) = field_of(PatchMaskingConfig::new(7, 7, random(r)));
        assert_eq!((field, value), ("mask_ratio", r.to_string()));
    }
    // 0.9 of 2 patches rounds to 2: no visible patch left.
    assert_eq!(
        field_of(PatchMaskingConfig::new(1, 2, random(0.9))),
        ("mask_ratio", "0.9".to_string())
    );
    assert_eq!(
        field_of(PatchMaskingConfig::new(7, 7, block(0.4, 0, 0.3))),
        ("min_block", "0".to_string())
    );
    for a in [0.0, -1.0, 1.5, f64::NAN] {
        assert_eq!(
            field_of(PatchMaskingConfig::new(7, 7, block(0.4, 4, a))).0,
            "min_aspect"
        );
    }
    let err = PatchMaskingConfig::new(7, 7, random(0.5))
        .with_regime(Regime::Static { dupe_factor: 0 })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("dupe_factor"), "{err}");
    // Ratio 0 is allowed: nothing hidden, restore is the identity.
    let m = PatchMaskingConfig::new(3, 3, random(0.0))
        .build()
        .unwrap()
        .mask(0, 0, 0);
    assert!(m.masked.is_empty());
    assert_eq!(m.restore, (0..9).collect::<Vec<u32>>());
}
