//! Vision Transformer patch front end (Dosovitskiy et al. 2020, ViT) with MAE's masked
//! autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"): the
//! encoder sees the visible patches only; a light decoder gets the encoded patches plus a
//! shared mask token at every hidden position (un-shuffled with `restore`), and predicts each
//! patch's pixels. A linear head on the mean-pooled encoder states classifies images.
//!
//! Legend: B batch, C channels, H/W image side, p patch side, N = (H/p)(W/p) patches,
//! K visible patches, P = p*p*C pixels per patch, d encoder width, e decoder width.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::norm::normalize;
use mask_attn::AllowAll;

use crate::block::Transformer;
use crate::config::TransformerConfig;
use crate::error::{invalid, ModelError};
use crate::init::{layer_norm, linear, normal_param};
use crate::loss::masked_patch_mse;
use crate::position::{sincos_2d_table, table_tensor};

/// Configuration of a [`VitMae`].
#[derive(Config, Debug)]
pub struct VitMaeConfig {
    /// Image side (square images). Default: 28
    #[config(default = 28)]
    pub image_size: usize,
    /// Patch side; must divide `image_size`. Default: 4
    #[config(default = 4)]
    pub patch_size: usize,
    /// Channels. Default: 1
    #[config(default = 1)]
    pub channels: usize,
    /// Encoder blocks (pre-LN, as ViT).
    pub encoder: TransformerConfig,
    /// Decoder blocks (pre-LN; MAE's decoder is narrower and shallower).
    pub decoder: TransformerConfig,
    /// Classes of the classification head. Default: 10
    #[config(default = 10)]
    pub n_classes: usize,
    /// Reconstruct per-patch normalised pixels (MAE's `norm_pix_loss`). Default: true
    #[config(default = true)]
    pub norm_pix_loss: bool,
}

impl VitMaeConfig {
    /// A small MAE for 28x28 grey images: 4x4 patches (N = 49), encoder 4 x 128 (4 heads,
    /// d_ff 256), decoder 2 x 64 (4 heads, d_ff 128), both pre-LN without dropout, as MAE.
    pub fn tiny() -> Self {
        let blocks = |d, heads, layers, ff| {
            TransformerConfig::new(d, heads, layers, ff)
                .with_norm(crate::config::NormPlacement::PreLn)
                .with_layer_norm_eps(1e-6)
                .with_dropout(0.0)
                .with_attn_dropout(0.0)
        };
        Self::new(blocks(128, 4, 4, 256), blocks(64, 4, 2, 128))
    }

    /// Patches per image N.
    pub fn n_patches(&self) -> usize {
        let g = self.image_size / self.patch_size.max(1);
        g * g
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> crate::Result<()> {
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return Err(invalid(
                "patch_size",
                self.patch_size,
                format!("a positive divisor of image_size = {}", self.image_size),
            ));
        }
        if self.channels == 0 {
            return Err(invalid("channels", 0, "at least 1"));
        }
        if self.n_classes < 2 {
            return Err(invalid("n_classes", self.n_classes, "at least 2"));
        }
        self.encoder.validate()?;
        self.decoder.validate()?;
        for (field, d) in [
            ("encoder.d_model", self.encoder.d_model),
            ("decoder.d_model", self.decoder.d_model),
        ] {
            if !d.is_multiple_of(4) {
                return Err(invalid(field, d, "a multiple of 4 (2-D sin/cos positions)"));
            }
        }
        Ok(())
    }

    /// Builds the model, validating the config first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> crate::Result<VitMae<B>> {
        self.validate()?;
        let (d, e) = (self.encoder.d_model, self.decoder.d_model);
        let p = self.patch_size * self.patch_size * self.channels;
        let grid = self.image_size / self.patch_size;
        let std = self.encoder.init_std;
        let model = VitMae {
            patch_embed: linear(p, d, std, true, device),
            encoder: self.encoder.init(device)?,
            decoder_embed: linear(d, e, std, true, device),
            mask_token: normal_param([1, 1, e], std, device),
            decoder: self.decoder.init(device)?,
            decoder_pred: linear(e, p, std, true, device),
            head_norm: layer_norm(d, 1e-6, device),
            head: linear(d, self.n_classes, std, true, device),
            image_size: self.image_size,
            patch_size: self.patch_size,
            channels: self.channels,
            norm_pix_loss: self.norm_pix_loss,
            encoder_pos: sincos_2d_table(grid, grid, d),
            decoder_pos: sincos_2d_table(grid, grid, e),
        };
        crate::init::materialize(&model);
        Ok(model)
    }
}

/// Which patches each image keeps, as the index tensors MAE's forward needs.
#[derive(Debug, Clone)]
pub struct MaeIndices<B: Backend> {
    /// Visible patch indices `[B, K]`, ascending.
    pub keep: Tensor<B, 2, Int>,
    /// Position of each patch in `cat(visible, hidden)` order `[B, N]` (MAE's `ids_restore`).
    pub restore: Tensor<B, 2, Int>,
    /// 1 for hidden (reconstructed) patches, 0 for visible `[B, N]`.
    pub mask: Tensor<B, 2>,
}

impl<B: Backend> MaeIndices<B> {
    /// From per-image lists of visible patches (the same count K >= 1 for every image, each
    /// index `< n_patches`, no repeats).
    pub fn from_keep(
        keep: &[Vec<usize>],
        n_patches: usize,
        device: &B::Device,
    ) -> crate::Result<Self> {
        let batch = keep.len();
        let k = keep.first().map_or(0, Vec::len);
        if batch == 0 || k == 0 || k > n_patches {
            return Err(ModelError::Shape {
                what: "visible patches per image".into(),
                expected: format!("1..={n_patches} for each of >= 1 images"),
                got: format!("{k} for {batch} images"),
            });
        }
        let (mut keep_ids, mut restore, mut mask) = (
            Vec::with_capacity(batch * k),
            vec![0i64; batch * n_patches],
            vec![1.0f32; batch * n_patches],
        );
        for (b, list) in keep.iter().enumerate() {
            if list.len() != k {
                return Err(ModelError::Shape {
                    what: format!("visible patches of image {b}"),
                    expected: k.to_string(),
                    got: list.len().to_string(),
                });
            }
            let mut sorted = list.clone();
            sorted.sort_unstable();
            let mut seen = vec![false; n_patches];
            for &i in &sorted {
                if i >= n_patches || seen[i] {
                    return Err(invalid(
                        "keep",
                        format!("patch {i} of image {b}"),
                        format!("distinct patch indices < {n_patches}"),
                    ));
                }
                seen[i] = true;
            }
            keep_ids.extend(sorted.iter().map(|&i| i as i64));
            let row = &mut restore[b * n_patches..(b + 1) * n_patches];
            let (mut visible, mut hidden) = (0i64, k as i64);
            for i in 0..n_patches {
                if seen[i] {
                    row[i] = visible;
                    visible += 1;
                    mask[b * n_patches + i] = 0.0;
                } else {
                    row[i] = hidden;
                    hidden += 1;
                }
            }
        }
        Ok(Self {
            keep: Tensor::from_data(TensorData::new(keep_ids, [batch, k]), device),
            restore: Tensor::from_data(TensorData::new(restore, [batch, n_patches]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, n_patches]), device),
        })
    }
}

/// What [`VitMae::forward_mae`] returns.
#[derive(Debug, Clone)]
pub struct MaeOutput<B: Backend> {
    /// Predicted patches `[B, N, P]`.
    pub pred: Tensor<B, 3>,
    /// Targets `[B, N, P]` (normalised per patch when `norm_pix_loss`).
    pub target: Tensor<B, 3>,
    /// 1 for hidden patches `[B, N]`.
    pub mask: Tensor<B, 2>,
}

impl<B: Backend> MaeOutput<B> {
    /// Mean squared error over hidden patches.
    pub fn loss(&self) -> Tensor<B, 1> {
        masked_patch_mse(self.pred.clone(), self.target.clone(), self.mask.clone())
    }
}

/// ViT encoder, MAE decoder and a classification head.
#[derive(Module, Debug)]
pub struct VitMae<B: Backend> {
    /// Patch projection `P -> d` (a stride-p convolution written as a linear layer).
    pub patch_embed: Linear<B>,
    /// Encoder blocks.
    pub encoder: Transformer<B>,
    /// `d -> e`.
    pub decoder_embed: Linear<B>,
    /// Shared learned mask token `[1, 1, e]`.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Decoder blocks.
    pub decoder: Transformer<B>,
    /// `e -> P` pixel prediction.
    pub decoder_pred: Linear<B>,
    /// Norm of the pooled features.
    pub head_norm: LayerNorm<B>,
    /// `d -> classes`.
    pub head: Linear<B>,
    /// Image side.
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Channels.
    pub channels: usize,
    /// Normalised pixel targets.
    pub norm_pix_loss: bool,
    /// Fixed 2-D positions of the encoder `[N, d]`.
    #[module(skip)]
    pub encoder_pos: Vec<f32>,
    /// Fixed 2-D positions of the decoder `[N, e]`.
    #[module(skip)]
    pub decoder_pos: Vec<f32>,
}

impl<B: Backend> VitMae<B> {
    fn n_patches(&self) -> usize {
        let g = self.image_size / self.patch_size;
        g * g
    }

    /// Cuts images into flattened patches, row-major over the grid, pixels in `(row, col,
    /// channel)` order within a patch (as MAE's `patchify`).
    ///
    /// # Shapes
    /// - `images`: `[B, C, H, W]` -> `[B, N, P]`
    pub fn patchify(&self, images: Tensor<B, 4>) -> crate::Result<Tensor<B, 3>> {
        let [batch, c, h, w] = images.dims();
        let s = self.image_size;
        if [c, h, w] != [self.channels, s, s] {
            return Err(ModelError::Shape {
                what: "images [C, H, W]".into(),
                expected: format!("{:?}", [self.channels, s, s]),
                got: format!("{:?}", [c, h, w]),
            });
        }
        let (p, g) = (self.patch_size, s / self.patch_size);
        Ok(images
            .reshape([batch, c, g, p, g, p]) // [B, C, gh, p, gw, p]
            .permute([0, 2, 4, 3, 5, 1]) // [B, gh, gw, p, p, C]
            .reshape([batch, g * g, p * p * c])) // [B, N, P]
    }

    /// Encoded patches (all of them, or the visible ones when `keep` is given).
    ///
    /// # Shapes
    /// - `images`: `[B, C, H, W]`, `keep`: `[B, K]` -> `[B, K, d]` (K = N without `keep`)
    pub fn encode(
        &self,
        images: Tensor<B, 4>,
        keep: Option<Tensor<B, 2, Int>>,
    ) -> crate::Result<Tensor<B, 3>> {
        let patches = self.patchify(images)?; // [B, N, P]
        let device = patches.device();
        let x = self.patch_embed.forward(patches); // [B, N, d]
        let [batch, n, d] = x.dims();
        let x = x + table_tensor::<B>(&self.encoder_pos, n, d, &device).unsqueeze::<3>();
        let x = match keep {
            Some(keep) => {
                let [_, k] = keep.dims();
                let index = keep.unsqueeze_dim::<3>(2).expand([batch, k, d]); // [B, K, d]
                x.gather(1, index) // [B, K, d]
            }
            None => x,
        };
        self.encoder.forward(x, &AllowAll, None)
    }

    /// MAE forward: encode visible patches, decode all, predict pixels.
    ///
    /// # Shapes
    /// - `images`: `[B, C, H, W]` -> pred / target `[B, N, P]`, mask `[B, N]`
    pub fn forward_mae(
        &self,
        images: Tensor<B, 4>,
        indices: &MaeIndices<B>,
    ) -> crate::Result<MaeOutput<B>> {
        let [batch, n] = indices.restore.dims();
        if n != self.n_patches() || indices.keep.dims()[0] != batch || images.dims()[0] != batch {
            return Err(ModelError::Shape {
                what: "MAE indices [B, N] vs images".into(),
                expected: format!("[{}, {}]", images.dims()[0], self.n_patches()),
                got: format!("[{batch}, {n}]"),
            });
        }
        let target = self.patchify(images.clone())?; // [B, N, P]
        let latent = self.encode(images, Some(indices.keep.clone()))?; // [B, K, d]
        let y = self.decoder_embed.forward(latent); // [B, K, e]
        let [_, k, e] = y.dims();
        let device = y.device();
        let fill = self.mask_token.val().expand([batch, n - k, e]); // [B, N-K, e]
        let y = Tensor::cat(vec![y, fill], 1); // [B, N, e] in (visible, hidden) order
        let index = indices
            .restore
            .clone()
            .unsqueeze_dim::<3>(2)
            .expand([batch, n, e]);
        let y = y.gather(1, index); // [B, N, e] in patch order
        let y = y + table_tensor::<B>(&self.decoder_pos, n, e, &device).unsqueeze::<3>();
        let y = self.decoder.forward(y, &AllowAll, None)?;
        let pred = self.decoder_pred.forward(y); // [B, N, P]
        let target = if self.norm_pix_loss {
            let mean = target.clone().mean_dim(2); // [B, N, 1]
            let var = target.clone().var(2); // [B, N, 1] (unbiased, as torch.var in MAE)
            (target - mean) / (var + 1e-6).sqrt()
        } else {
            target
        };
        Ok(MaeOutput {
            pred,
            target,
            mask: indices.mask.clone(),
        })
    }

    /// Mean-pooled, normalised encoder features of whole images (linear probe input).
    ///
    /// # Shapes
    /// - `images`: `[B, C, H, W]` -> `[B, d]`
    pub fn features(&self, images: Tensor<B, 4>) -> crate::Result<Tensor<B, 2>> {
        let x = self.encode(images, None)?; // [B, N, d]
        let [batch, _, d] = x.dims();
        Ok(normalize(
            &self.head_norm,
            x.mean_dim(1).reshape([batch, d]),
        ))
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `images`: `[B, C, H, W]` -> `[B, classes]`
    pub fn classify(&self, images: Tensor<B, 4>) -> crate::Result<Tensor<B, 2>> {
        Ok(self.head.forward(self.features(images)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    /// Regression (tests issue): `norm_pix_loss` had no value check. A 4x4 image in 2x2 patches;
    /// MAE normalises each target patch by its mean and unbiased variance:
    /// `(x - mean) / sqrt(var + 1e-6)`. Patch 0 holds pixels 0, 1, 4, 5 (mean 2.5, unbiased
    /// variance ((2.5^2 + 1.5^2) * 2) / 3 = 17 / 3).
    #[test]
    fn norm_pix_targets_by_hand() {
        let device = Default::default();
        let blocks = |d| {
            TransformerConfig::new(d, 2, 1, 8)
                .with_dropout(0.0)
                .with_attn_dropout(0.0)
        };
        let config = VitMaeConfig::new(blocks(4), blocks(4))
            .with_image_size(4)
            .with_patch_size(2)
            .with_channels(1)
            .with_n_classes(2);
        let pixels: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [1, 1, 4, 4]), &device);
        let idx = MaeIndices::<B>::from_keep(&[vec![1, 3]], 4, &device).unwrap();
        for norm in [true, false] {
            let model = config
                .clone()
                .with_norm_pix_loss(norm)
                .init::<B>(&device)
                .unwrap();
            let out = model.forward_mae(images.clone(), &idx).unwrap();
            let target: Vec<f32> = out.target.into_data().to_vec().unwrap();
            let raw = [0.0f64, 1.0, 4.0, 5.0];
            let want: Vec<f64> = if norm {
                let sd = (17.0f64 / 3.0 + 1e-6).sqrt();
                raw.iter().map(|x| (x - 2.5) / sd).collect()
            } else {
                raw.to_vec()
            };
            for k in 0..4 {
                assert!(
                    (target[k] as f64 - want[k]).abs() < 1e-5,
                    "norm {norm}, {k}"
                );
            }
            let mask: Vec<f32> = out.mask.into_data().to_vec().unwrap();
            assert_eq!(mask, vec![1.0, 0.0, 1.0, 0.0], "patches 1 and 3 visible");
        }
    }
}
