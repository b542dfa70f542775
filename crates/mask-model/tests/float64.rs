//! Backward conformance in float64: our gradients equal PyTorch's float64 gradients, so the
//! float32 gap in the suite is accumulation precision, not a formula difference.
//!
//! Its own test binary: burn keys a device's default dtypes by device *type*, so NdArray<f32>
//! and NdArray<f64> in one process share them and the first backend to run wins.

#[path = "suite/common.rs"]
mod common;
#[path = "suite/hf_reference.rs"]
mod hf_reference;

use burn::tensor::DType;
use hf_reference::*;
use mask_attn::AttnKernel;
use safetensors::SafeTensors;

type A64 = burn::backend::Autodiff<burn::backend::NdArray<f64>>;

/// In float64 the gradients equal PyTorch's float64 ones: the formulas are the same. The import
/// folds HF's token-type row into the position table in the model's float type (f64 here), as
/// torch adds the two embeddings in f64, so only summation order differs: a few hundred
/// roundings of 1.1e-16 relative on values of size `scale` (<= 50), ~1e-14 (measured 4.3e-14).
/// Tolerance 1e-12 of the scale.
#[test]
fn gradients_match_pytorch_in_float64() {
    let st = SafeTensors::deserialize(REFERENCE).unwrap();
    for kernel in [AttnKernel::Reference, AttnKernel::BlockSparse] {
        for (name, got) in our_gradients::<A64>(kernel, DType::F64) {
            let (diff, scale) = compare(name, got, doubles(&st, &format!("grad64.{name}")));
            eprintln!("f64 {kernel:?} {name}: max |ours - torch| = {diff:e} (scale {scale:.1})");
            assert!(
                diff < 1e-12 * scale.max(1.0),
                "{kernel:?} {name}: {diff} (scale {scale})"
            );
        }
    }
}

mod finite_differences {
    //! Regression (tests issue): the gradients of the classifier, tagger, causal-LM, MAE and
    //! BERT4Rec models were only checked to be finite and non-zero. Here each model's analytic
    //! directional derivative `<grad L, v>` (autodiff, float64) must equal the central
    //! difference `(L(theta + eps v) - L(theta - eps v)) / 2 eps` along a fixed direction `v`
    //! through every parameter. With eps = 1e-5 in float64 the truncation error is O(eps^2 *
    //! L''') ~ 1e-9 and rounding ~1e-16 / eps ~ 1e-11 (measured: 1e-9 to 1.2e-7 relative; at
    //! eps = 1e-4 BERT4Rec's truncation reached 1.7e-5), so a relative tolerance of 1e-5 passes
    //! correct gradients and fails any wrong term (a missing or sign-flipped contribution moves
    //! the derivative by far more than 1e-5 of its size).

    use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
    use burn::prelude::*;
    use burn::tensor::backend::AutodiffBackend;
    use mask_attn::KeyPadding;
    use mask_model::*;

    type B64 = burn::backend::NdArray<f64>;
    type A64 = burn::backend::Autodiff<B64>;
    type Grads = <A64 as AutodiffBackend>::Gradients;

    /// The direction: element k of parameter p is sin(0.37 k + 1.3 p + 0.1).
    fn direction(n: usize, p: usize) -> Vec<f64> {
        (0..n)
            .map(|k| (0.37 * k as f64 + 1.3 * p as f64 + 0.1).sin())
            .collect()
    }

    struct Shift {
        eps: f64,
        p: usize,
    }

    impl ModuleMapper<B64> for Shift {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<B64, D>>,
        ) -> Param<Tensor<B64, D>> {
            let (id, t, mapper) = param.consume();
            let shape = t.shape();
            let v = direction(shape.num_elements(), self.p);
            self.p += 1;
            let v = Tensor::<B64, 1>::from_data(
                TensorData::new(v, [shape.num_elements()]),
                &t.device(),
            )
            .reshape(shape);
            Param::from_mapped_value(id, t + v.mul_scalar(self.eps), mapper)
        }
    }

    struct Dot<'a> {
        grads: &'a Grads,
        p: usize,
        total: f64,
    }

    impl ModuleVisitor<A64> for Dot<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A64, D>>) {
            let n = param.val().shape().num_elements();
            let v = direction(n, self.p);
            self.p += 1;
            if let Some(g) = param.val().grad(self.grads) {
                let g: Vec<f64> = g.into_data().convert::<f64>().to_vec().unwrap();
                self.total += g.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
            }
        }
    }

    /// Checks `<grad, v>` against the central difference for a model and its loss.
    fn check<M>(
        what: &str,
        model: M,
        loss: impl Fn(&M::InnerModule) -> Tensor<B64, 1>,
        loss_ad: impl Fn(&M) -> Tensor<A64, 1>,
    ) where
        M: AutodiffModule<A64>,
        M::InnerModule: Module<B64>,
    {
        let grads = loss_ad(&model).backward();
        let mut dot = Dot {
            grads: &grads,
            p: 0,
            total: 0.0,
        };
        model.visit(&mut dot);
        let eps = 1e-5;
        let at = |sign: f64| {
            let shifted = model.valid().map(&mut Shift {
                eps: sign * eps,
                p: 0,
            });
            loss(&shifted).into_scalar()
        };
        let fd = (at(1.0) - at(-1.0)) / (2.0 * eps);
        let err = (fd - dot.total).abs() / dot.total.abs().max(1e-3);
        eprintln!(
            "{what}: analytic {:.9} finite difference {fd:.9} (rel {err:e})",
            dot.total
        );
        assert!(
            dot.total.abs() > 1e-6,
            "{what}: the direction sees no gradient"
        );
        assert!(
            err < 1e-5,
            "{what}: analytic {} vs finite difference {fd}",
            dot.total
        );
    }

    fn encoder(norm: NormPlacement) -> TextEncoderConfig {
        TextEncoderConfig::new(
            TransformerConfig::new(8, 2, 1, 16)
                .with_norm(norm)
                .with_dropout(0.0)
                .with_attn_dropout(0.0)
                .with_init_std(0.3),
            20,
        )
        .with_max_len(8)
    }

    fn ids<Bk: Backend>(rows: &[&[u32]], device: &Bk::Device) -> Tensor<Bk, 2, Int> {
        let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        ids_tensor::<Bk>("ids", &flat, rows.len(), 20, device).unwrap()
    }

    fn labels<Bk: Backend>(v: &[i64], device: &Bk::Device) -> Tensor<Bk, 1, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    const ROWS: [&[u32]; 2] = [&[2, 5, 7, 9, 3, 0], &[2, 11, 4, 3, 0, 0]];

    #[test]
    fn classifier_tagger_causal_lm_mae_and_bert4rec_gradients_match_finite_differences() {
        let dev = Default::default();
        A64::seed(&dev, 7); // the same initial weights every run
        let mask = KeyPadding::from_lengths(&[5, 4], 6).unwrap();
        let lengths = [5usize, 4];

        let clf = ClassifierConfig::new(encoder(NormPlacement::PostLn), 3)
            .with_pooling(Pooling::Mean)
            .with_classifier_dropout(0.0);
        let m = clf.init::<A64>(&dev).unwrap();
        check(
            "classifier",
            m,
            |m| {
                token_cross_entropy(
                    m.forward(ids(&ROWS, &dev), &mask, Some(&lengths)).unwrap(),
                    labels(&[2, 0], &dev),
                )
                .mean()
            },
            |m| {
                token_cross_entropy(
                    m.forward(ids(&ROWS, &dev), &mask, Some(&lengths)).unwrap(),
                    labels(&[2, 0], &dev),
                )
                .mean()
            },
        );

        let tag = TokenClassifierConfig::new(encoder(NormPlacement::PreLn), 4)
            .with_classifier_dropout(0.0);
        let m = tag.init::<A64>(&dev).unwrap();
        let at = [1i64, 2, 3, 7, 8];
        let cls = [0i64, 3, 1, 2, 2];
        check(
            "tagger",
            m,
            |m| {
                token_cross_entropy(
                    m.forward_at(ids(&ROWS, &dev), &mask, labels(&at, &dev))
                        .unwrap(),
                    labels(&cls, &dev),
                )
                .mean()
            },
            |m| {
                token_cross_entropy(
                    m.forward_at(ids(&ROWS, &dev), &mask, labels(&at, &dev))
                        .unwrap(),
                    labels(&cls, &dev),
                )
                .mean()
            },
        );

        let lm = CausalLmConfig::new(encoder(NormPlacement::PreLn));
        let m = lm.init::<A64>(&dev).unwrap();
        let next_at = [0i64, 1, 2, 3, 6, 7, 8];
        let next = [5i64, 7, 9, 3, 11, 4, 3];
        check(
            "causal lm",
            m,
            |m| {
                let l = m
                    .forward(ids(&ROWS, &dev), Some(&mask))
                    .unwrap()
                    .reshape([12, 20]);
                token_cross_entropy(l.select(0, labels(&next_at, &dev)), labels(&next, &dev)).mean()
            },
            |m| {
                let l = m
                    .forward(ids(&ROWS, &dev), Some(&mask))
                    .unwrap()
                    .reshape([12, 20]);
                token_cross_entropy(l.select(0, labels(&next_at, &dev)), labels(&next, &dev)).mean()
            },
        );

        let blocks = |d| {
            TransformerConfig::new(d, 2, 1, 16)
                .with_norm(NormPlacement::PreLn)
                .with_dropout(0.0)
                .with_attn_dropout(0.0)
                .with_init_std(0.3)
        };
        let mae = VitMaeConfig::new(blocks(8), blocks(8))
            .with_image_size(4)
            .with_patch_size(2)
            .with_channels(1)
            .with_n_classes(2);
        let m = mae.init::<A64>(&dev).unwrap();
        let pixels: Vec<f64> = (0..32).map(|i| ((i * 7 % 13) as f64) / 13.0).collect();
        let image = || TensorData::new(pixels.clone(), [2, 1, 4, 4]);
        check(
            "mae",
            m,
            |m| {
                let idx = MaeIndices::<B64>::from_keep(&[vec![0, 3], vec![1, 2]], 4, &dev).unwrap();
                m.forward_mae(Tensor::from_data(image(), &dev), &idx)
                    .unwrap()
                    .loss()
            },
            |m| {
                let idx = MaeIndices::<A64>::from_keep(&[vec![0, 3], vec![1, 2]], 4, &dev).unwrap();
                m.forward_mae(Tensor::from_data(image(), &dev), &idx)
                    .unwrap()
                    .loss()
            },
        );

        let rec = Bert4RecConfig::new(17)
            .with_max_len(6)
            .with_d_model(8)
            .with_d_ff(16)
            .with_n_layers(1)
            .with_dropout(0.0);
        let m = rec.init::<A64>(&dev).unwrap();
        let items: [&[u32]; 2] = [&[1, 4, 18, 7, 2, 0], &[3, 18, 5, 9, 0, 0]];
        let at = [2i64, 7];
        let targets = [6i64, 12];
        let flat =
            |rows: &[&[u32]]| -> Vec<u32> { rows.iter().flat_map(|r| r.iter().copied()).collect() };
        check(
            "bert4rec",
            m,
            |m| {
                let x = ids_tensor::<B64>("items", &flat(&items), 2, 19, &dev).unwrap();
                token_cross_entropy(
                    m.mlm.forward_at(x, &mask, labels(&at, &dev)).unwrap(),
                    labels(&targets, &dev),
                )
                .mean()
            },
            |m| {
                let x = ids_tensor::<A64>("items", &flat(&items), 2, 19, &dev).unwrap();
                token_cross_entropy(
                    m.mlm.forward_at(x, &mask, labels(&at, &dev)).unwrap(),
                    labels(&targets, &dev),
                )
                .mean()
            },
        );
    }
}
