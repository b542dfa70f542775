//! Output shapes of every head and front end, and the typed errors on bad input.

use burn::prelude::*;
use mask_attn::{AllowAll, KeyPadding};
use mask_model::*;

use crate::common::*;

#[test]
fn mlm_shapes_for_every_position_encoding() {
    for (pos, norm) in variants() {
        let model = MlmConfig::new(tiny(pos, norm, 0.1))
            .init::<B>(&dev())
            .unwrap();
        let x = ids::<B>(&[seq(10, 1), seq(10, 2)], &dev());
        assert_eq!(
            model.forward(x.clone(), &AllowAll).unwrap().dims(),
            [2, 10, VOCAB],
            "{pos:?}"
        );
        let at = Tensor::<B, 1, Int>::from_data([0i64, 7, 13], &dev());
        assert_eq!(
            model.forward_at(x, &AllowAll, at).unwrap().dims(),
            [3, VOCAB]
        );
    }
}

#[test]
fn classifier_shapes_for_both_poolings() {
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let config = ClassifierConfig::new(
            tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.1),
            3,
        )
        .with_pooling(pooling);
        let model = config.init::<B>(&dev()).unwrap();
        let x = ids::<B>(&[seq(9, 1), seq(9, 2)], &dev());
        let mask = KeyPadding::from_lengths(&[9, 4], 9).unwrap();
        let out = model.forward(x, &mask, Some(&[9, 4])).unwrap();
        assert_eq!(out.dims(), [2, 3], "{pooling:?}");
    }
}

#[test]
fn causal_lm_shapes_tied_and_untied() {
    for tie in [true, false] {
        let config = CausalLmConfig::new(tiny(PositionEncoding::Rotary, NormPlacement::PreLn, 0.1))
            .with_tie_embeddings(tie);
        let model = config.init::<B>(&dev()).unwrap();
        assert_eq!(model.lm_head.is_none(), tie);
        let x = ids::<B>(&[seq(11, 1), seq(11, 2)], &dev());
        assert_eq!(model.forward(x, None).unwrap().dims(), [2, 11, VOCAB]);
    }
}

pub fn small_mae() -> VitMaeConfig {
    let mut c = VitMaeConfig::tiny();
    (c.encoder.d_model, c.encoder.n_layers, c.encoder.d_ff) = (32, 1, 64);
    (c.decoder.d_model, c.decoder.n_layers, c.decoder.d_ff) = (16, 1, 32);
    c.encoder = c.encoder.with_dropout(0.1);
    c
}

pub fn keep_lists(batch: usize, n: usize, k: usize) -> Vec<Vec<usize>> {
    (0..batch)
        .map(|b| {
            (0..k)
                .map(|i| (i * 7 + b * 3) % n)
                .collect::<std::collections::BTreeSet<_>>()
        })
        .map(|s| {
            let mut v: Vec<usize> = s.into_iter().collect();
            let mut extra = 0;
            while v.len() < k {
                if !v.contains(&extra) {
                    v.push(extra);
                }
                extra += 1;
            }
            v
        })
        .collect()
}

pub fn images<Bk: Backend>(batch: usize, device: &Bk::Device) -> Tensor<Bk, 4> {
    let v: Vec<f32> = (0..batch * 28 * 28)
        .map(|i| ((i * 37 % 101) as f32) / 101.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [batch, 1, 28, 28]), device)
}

#[test]
fn vit_mae_shapes() {
    let config = small_mae();
    let model = config.init::<B>(&dev()).unwrap();
    let n = config.n_patches();
    assert_eq!(n, 49);
    let idx = MaeIndices::<B>::from_keep(&keep_lists(3, n, 12), n, &dev()).unwrap();
    let out = model.forward_mae(images::<B>(3, &dev()), &idx).unwrap();
    assert_eq!(out.pred.dims(), [3, 49, 16]);
    assert_eq!(out.target.dims(), [3, 49, 16]);
    assert_eq!(out.mask.dims(), [3, 49]);
    assert_eq!(values(out.mask.clone().sum()), vec![3.0 * 37.0]);
    assert!(values(out.loss())[0].is_finite());
    assert_eq!(
        model.patchify(images::<B>(2, &dev())).unwrap().dims(),
        [2, 49, 16]
    );
    assert_eq!(
        model.features(images::<B>(2, &dev())).unwrap().dims(),
        [2, 32]
    );
    assert_eq!(
        model.classify(images::<B>(2, &dev())).unwrap().dims(),
        [2, 10]
    );
}

#[test]
fn patchify_orders_pixels_like_mae() {
    let model = small_mae().init::<B>(&dev()).unwrap();
    // pixel value = its flat index in the 28x28 image
    let v: Vec<f32> = (0..28 * 28).map(|i| i as f32).collect();
    let img = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 1, 28, 28]), &dev());
    let p = values(model.patchify(img).unwrap()); // [1, 49, 16]
                                                  // patch (row 1, col 2) starts at pixel (4, 8); its second row starts at (5, 8)
    let patch = 7 + 2;
    assert_eq!(p[patch * 16], (4 * 28 + 8) as f32);
    assert_eq!(p[patch * 16 + 1], (4 * 28 + 9) as f32);
    assert_eq!(p[patch * 16 + 4], (5 * 28 + 8) as f32);
}

#[test]
fn mae_indices_restore_order() {
    let idx = MaeIndices::<B>::from_keep(&[vec![5, 1, 3]], 6, &dev()).unwrap();
    let keep: Vec<i64> = idx.keep.into_data().convert::<i64>().to_vec().unwrap();
    let restore: Vec<i64> = idx.restore.into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!(keep, vec![1, 3, 5]);
    // visible 1,3,5 take slots 0,1,2; hidden 0,2,4 take slots 3,4,5
    assert_eq!(restore, vec![3, 0, 4, 1, 5, 2]);
    assert_eq!(values(idx.mask), vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
}

#[test]
fn bert4rec_shapes_and_scores_match_full_logits() {
    let config = Bert4RecConfig::new(40)
        .with_max_len(16)
        .with_d_model(32)
        .with_d_ff(64)
        .with_dropout(0.0);
    let model = config.init::<B>(&dev()).unwrap();
    let items: Vec<Vec<u32>> = vec![
        seq(12, 3).iter().map(|i| i % 40 + 1).collect(),
        seq(12, 4).iter().map(|i| i % 40 + 1).collect(),
    ];
    let mut items = items;
    items[0][11] = config.mask_id();
    items[1][7] = config.mask_id();
    let x = ids::<B>(&items, &dev());
    let logits = model.forward(x.clone(), &AllowAll).unwrap();
    assert_eq!(logits.dims(), [2, 12, 42]);
    let cands = Tensor::<B, 2, Int>::from_data([[1i64, 2, 3, 40], [5, 6, 7, 8]], &dev());
    let scores = values(model.score(x, &AllowAll, &[11, 7], cands).unwrap());
    let full = values(logits);
    let expect = |b: usize, t: usize, item: usize| full[(b * 12 + t) * 42 + item];
    let want = [
        expect(0, 11, 1),
        expect(0, 11, 2),
        expect(0, 11, 3),
        expect(0, 11, 40),
        expect(1, 7, 5),
        expect(1, 7, 6),
        expect(1, 7, 7),
        expect(1, 7, 8),
    ];
    assert!(
        max_abs_diff(&scores, &want) < 1e-5,
        "{scores:?} vs {want:?}"
    );
}

#[test]
fn bad_inputs_give_typed_errors() {
    let model = MlmConfig::new(tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0))
        .init::<B>(&dev())
        .unwrap();
    let long = ids::<B>(&[seq(33, 1)], &dev());
    let err = model.forward(long, &AllowAll).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::SequenceLength {
                len: 33,
                max_len: 32
            }
        ),
        "{err}"
    );

    let err = ids_tensor::<B>("input_ids", &[1, 2, 50, 3], 2, VOCAB, &dev()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`input_ids`: id 50 at position 2 is outside the vocabulary of 50"
    );
    let err = ids_tensor::<B>("input_ids", &[1, 2, 3], 2, VOCAB, &dev()).unwrap_err();
    assert!(
        err.to_string().contains("a positive multiple of 2"),
        "{err}"
    );

    let x = ids::<B>(&[seq(8, 1), seq(8, 2)], &dev());
    let wrong_batch = KeyPadding::from_lengths(&[8, 8, 8], 8).unwrap();
    let err = model.forward(x.clone(), &wrong_batch).unwrap_err();
    assert!(
        err.to_string()
            .contains("batch size of attention mask `key_padding`"),
        "{err}"
    );
    let wrong_len = KeyPadding::from_lengths(&[8, 8], 9).unwrap();
    assert!(model.forward(x, &wrong_len).is_err());

    let err = MaskedTargets::from_labels(&[-100, 4, 60], VOCAB).unwrap_err();
    assert!(
        err.to_string().contains("`labels`: id 60 at position 2"),
        "{err}"
    );
    let t = MaskedTargets::from_labels(&[-100, 4, -100, 7], VOCAB).unwrap();
    assert_eq!(
        (t.positions.clone(), t.targets.clone()),
        (vec![1, 3], vec![4, 7])
    );

    let c = ClassifierConfig::new(
        tiny(PositionEncoding::Learned, NormPlacement::PostLn, 0.0),
        2,
    )
    .with_pooling(Pooling::Mean);
    let clf = c.init::<B>(&dev()).unwrap();
    let x = ids::<B>(&[seq(6, 1), seq(6, 2)], &dev());
    let err = clf.forward(x.clone(), &AllowAll, Some(&[6])).unwrap_err();
    assert!(err.to_string().contains("number of lengths"), "{err}");
    let err = clf.forward(x, &AllowAll, Some(&[6, 0])).unwrap_err();
    assert!(err.to_string().contains("length of sequence 1"), "{err}");

    let err = MaeIndices::<B>::from_keep(&[vec![1, 1]], 49, &dev()).unwrap_err();
    assert!(err.to_string().contains("patch 1 of image 0"), "{err}");
    let err = MaeIndices::<B>::from_keep(&[vec![1, 2], vec![3]], 49, &dev()).unwrap_err();
    assert!(
        err.to_string().contains("visible patches of image 1"),
        "{err}"
    );
    let model = small_mae().init::<B>(&dev()).unwrap();
    let wrong = Tensor::<B, 4>::zeros([1, 3, 28, 28], &dev());
    assert!(model
        .patchify(wrong)
        .unwrap_err()
        .to_string()
        .contains("images [C, H, W]"));
}
