//! Behavioural invariants through whole models: padding invariance, causality, token exclusion.
//!
//! Tolerances: comparisons of the same positions computed with different tilings or padding are
//! held to 2e-5 absolute (f32 sums over d = 32 of O(1) values, reordered). Masked keys contribute
//! exactly 0 (their scores become -1e30 before the softmax), so "no influence" checks use 1e-6.

use mask_attn::{AllowAll, KeyPadding, TokenExclusion};
use mask_model::*;

use crate::common::*;

fn rows(t: burn::prelude::Tensor<B, 3>, b: usize, upto: usize) -> Vec<f32> {
    let [_, seq, d] = t.dims();
    values(t)[b * seq * d..(b * seq + upto) * d].to_vec()
}

#[test]
fn appending_padding_does_not_change_real_positions() {
    for (pos, norm) in variants() {
        let model = MlmConfig::new(tiny(pos, norm, 0.0))
            .init::<B>(&dev())
            .unwrap();
        let enc = &model.encoder;
        let a = seq(7, 1);
        let solo = enc
            .forward(ids::<B>(std::slice::from_ref(&a), &dev()), &AllowAll)
            .unwrap();
        let mut padded = a.clone();
        padded.resize(20, 0);
        let full = seq(20, 2);
        let batch = ids::<B>(&[full.clone(), padded], &dev());
        let mask = KeyPadding::from_lengths(&[20, 7], 20).unwrap();
        let out = enc.forward(batch, &mask).unwrap();
        let diff = max_abs_diff(&rows(out.clone(), 1, 7), &rows(solo, 0, 7));
        assert!(
            diff < 2e-5,
            "{pos:?}/{norm:?}: padded vs unpadded differ by {diff}"
        );
        let alone = enc.forward(ids::<B>(&[full], &dev()), &AllowAll).unwrap();
        let diff = max_abs_diff(&rows(out, 0, 20), &rows(alone, 0, 20));
        assert!(
            diff < 2e-5,
            "{pos:?}/{norm:?}: batch neighbour changed a row by {diff}"
        );
        // The padding itself is visible without the key-padding mask: the test can fail.
        let unmasked = enc
            .forward(
                ids::<B>(
                    &[seq(20, 2), {
                        let mut p = a.clone();
                        p.resize(20, 0);
                        p
                    }],
                    &dev(),
                ),
                &AllowAll,
            )
            .unwrap();
        let solo = enc
            .forward(ids::<B>(std::slice::from_ref(&a), &dev()), &AllowAll)
            .unwrap();
        assert!(max_abs_diff(&rows(unmasked, 1, 7), &rows(solo, 0, 7)) > 1e-3);
    }
}

#[test]
fn decoder_is_causal() {
    for (pos, norm) in variants() {
        let model = CausalLmConfig::new(tiny(pos, norm, 0.0))
            .init::<B>(&dev())
            .unwrap();
        let a = seq(19, 3);
        let mut b = a.clone();
        b[9] = (b[9] % 40) + 5;
        let la = model.forward(ids::<B>(&[a], &dev()), None).unwrap();
        let lb = model.forward(ids::<B>(&[b], &dev()), None).unwrap();
        let past = max_abs_diff(&rows(la.clone(), 0, 9), &rows(lb.clone(), 0, 9));
        assert!(
            past <= 1e-6,
            "{pos:?}/{norm:?}: a future token changed the past by {past}"
        );
        let now = max_abs_diff(&rows(la, 0, 19), &rows(lb, 0, 19));
        assert!(
            now > 1e-3,
            "{pos:?}/{norm:?}: the change should be visible from position 9 on"
        );
    }
}

#[test]
fn decoder_with_padding_is_causal_and_padding_invariant() {
    let model = CausalLmConfig::new(tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.0))
        .init::<B>(&dev())
        .unwrap();
    let a = seq(6, 4);
    let solo = model
        .forward(ids::<B>(std::slice::from_ref(&a), &dev()), None)
        .unwrap();
    let mut p = a.clone();
    p.resize(13, 0);
    let mask = KeyPadding::from_lengths(&[6], 13).unwrap();
    let padded = model.forward(ids::<B>(&[p], &dev()), Some(&mask)).unwrap();
    let diff = max_abs_diff(&rows(padded, 0, 6), &rows(solo, 0, 6));
    assert!(diff < 2e-5, "{diff}");
}

#[test]
fn excluded_tokens_have_no_influence_and_finite_rows() {
    for (pos, norm) in variants() {
        let model = MlmConfig::new(tiny(pos, norm, 0.0))
            .init::<B>(&dev())
            .unwrap();
        let t = 17;
        let mut excluded = vec![false; t];
        excluded[3] = true;
        excluded[12] = true;
        let mask = TokenExclusion::new(&excluded, 1, t).unwrap();
        let a = seq(t, 5);
        let mut b = a.clone();
        b[3] = (b[3] % 40) + 7;
        b[12] = (b[12] % 40) + 3;
        let ha = values(
            model
                .encoder
                .forward(ids::<B>(std::slice::from_ref(&a), &dev()), &mask)
                .unwrap(),
        );
        let hb = values(
            model
                .encoder
                .forward(ids::<B>(&[b.clone()], &dev()), &mask)
                .unwrap(),
        );
        assert!(
            ha.iter().chain(&hb).all(|x| x.is_finite()),
            "{pos:?}: non-finite output"
        );
        let d = 32;
        for p in (0..t).filter(|p| !excluded[*p]) {
            let diff = max_abs_diff(&ha[p * d..(p + 1) * d], &hb[p * d..(p + 1) * d]);
            assert!(
                diff <= 1e-6,
                "{pos:?}/{norm:?}: excluded tokens moved position {p} by {diff}"
            );
        }
        // Without the exclusion the same change is visible everywhere.
        let ua = values(
            model
                .encoder
                .forward(ids::<B>(&[a], &dev()), &AllowAll)
                .unwrap(),
        );
        let ub = values(
            model
                .encoder
                .forward(ids::<B>(&[b], &dev()), &AllowAll)
                .unwrap(),
        );
        assert!(max_abs_diff(&ua[..d], &ub[..d]) > 1e-4);
        // MLM logits of excluded rows are finite too.
        let logits = values(
            model
                .forward(ids::<B>(&[seq(t, 6)], &dev()), &mask)
                .unwrap(),
        );
        assert!(logits.iter().all(|x| x.is_finite()));
    }
}
