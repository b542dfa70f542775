//! Masked image modelling with static vs dynamic patch masking: a small ViT-MAE pretrained on
//! Fashion-MNIST (embedded 10k / 2k subset, or the full IDX files by path), then masked-patch
//! reconstruction on the test images with fixed masks and a linear probe on frozen features,
//! beside a random-encoder and a raw-pixel probe. Writes `results.json`, `report.md`,
//! `curves.svg` and `mae_grid.png` (original / masked / reconstructed). The same as
//! `dynmask compare configs/mae_fashion_mnist.toml`.
//!
//! ```sh
//! cargo run --release --example mae_fashion_mnist               # default
//! cargo run --release --example mae_fashion_mnist -- --quick    # smoke version (seconds)
//! cargo run --release --example mae_fashion_mnist -- --steps 3000 \
//!     --images train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
//!              t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
//! ```

use std::path::PathBuf;

use clap::Parser;
use dynmask::cli::{compare, Error, RunArgs};
use dynmask::studies::{load_study, vision::VisionStudy, Study};

/// Static vs dynamic MAE on Fashion-MNIST.
#[derive(Parser)]
struct Args {
    /// A vision study TOML instead of the built-in default (= configs/mae_fashion_mnist.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Full IDX files: train images, train labels, test images, test labels (gzip or raw).
    #[arg(long, num_args = 4, value_names = ["TRAIN_IMAGES", "TRAIN_LABELS", "TEST_IMAGES", "TEST_LABELS"])]
    images: Option<Vec<String>>,
    #[command(flatten)]
    run: RunArgs,
}

fn main() {
    let args = Args::parse();
    let result = (|| -> Result<(), Error> {
        let mut study = match &args.config {
            Some(p) => load_study(p)?,
            None => Study::Vision(VisionStudy::default()),
        };
        if let (Some(files), Study::Vision(v)) = (&args.images, &mut study) {
            v.images = Some([
                files[0].clone(),
                files[1].clone(),
                files[2].clone(),
                files[3].clone(),
            ]);
        }
        println!("{}", compare(study, &args.run)?);
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
