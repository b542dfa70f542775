//! Masked image modelling with static vs dynamic patch masking: a small ViT-MAE pretrained on
//! Fashion-MNIST (embedded 10k / 2k subset, or the full IDX files by path), then masked-patch
//! reconstruction on the test images with fixed masks and a linear probe on frozen features.
//! Writes `report.json`, `report.md` and `mae_grid.png` (original / masked / reconstructed).
//!
//! ```sh
//! cargo run --release --example mae_fashion_mnist               # default (about 8 min on 2 cores)
//! cargo run --release --example mae_fashion_mnist -- --quick    # smoke version (seconds)
//! cargo run --release --example mae_fashion_mnist -- \
//!     --train-images train-images-idx3-ubyte.gz --train-labels train-labels-idx1-ubyte.gz \
//!     --test-images t10k-images-idx3-ubyte.gz --test-labels t10k-labels-idx1-ubyte.gz --steps 3000
//! ```

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use mask_train::vision::{
    fashion_mnist_subset, mae_table, run_mae_study, ImageSet, MaeStudyConfig,
};

type Backend = Autodiff<NdArray<f32>>;

const USAGE: &str = "usage: mae_fashion_mnist [--quick] [--steps N] [--out-dir DIR] \
[--train-images F --train-labels F] [--test-images F --test-labels F]";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut steps, mut out_dir) = (false, None, PathBuf::from("runs/mae"));
    let mut paths: [Option<PathBuf>; 4] = Default::default();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--steps" => {
                steps = Some(
                    value("--steps")?
                        .parse::<u64>()
                        .map_err(|e| format!("--steps: {e}"))?,
                )
            }
            "--out-dir" => out_dir = value("--out-dir")?.into(),
            "--train-images" => paths[0] = Some(value("--train-images")?.into()),
            "--train-labels" => paths[1] = Some(value("--train-labels")?.into()),
            "--test-images" => paths[2] = Some(value("--test-images")?.into()),
            "--test-labels" => paths[3] = Some(value("--test-labels")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    let (embedded_train, embedded_test) = fashion_mnist_subset()?;
    let pick = |images: &Option<PathBuf>, labels: &Option<PathBuf>, embedded: ImageSet, what| match (
        images, labels,
    ) {
        (Some(i), Some(l)) => ImageSet::from_files(i, l).map_err(|e| e.to_string()),
        (None, None) => Ok(embedded),
        _ => Err(format!("--{what}-images and --{what}-labels go together")),
    };
    let train = pick(&paths[0], &paths[1], embedded_train, "train")?;
    let test = pick(&paths[2], &paths[3], embedded_test, "test")?;
    let mut config = MaeStudyConfig::default();
    if quick {
        config = config.quick();
    }
    if let Some(s) = steps {
        config.steps = s;
    }
    println!(
        "ViT-MAE on Fashion-MNIST: {} train / {} test images (used: {:?} / {:?}), {} steps x {} images per arm",
        train.len(),
        test.len(),
        config.train_images,
        config.test_images,
        config.steps,
        config.batch_size
    );
    let start = Instant::now();
    let report = run_mae_study::<Backend>(&config, &train, &test, &out_dir, &Default::default())?;
    println!();
    for arm in &report.arms {
        println!(
            "{:>14}: pretraining {:.0} s, {:.0} images/s; training loss {:.4} -> {:.4}",
            arm.name,
            arm.train_seconds,
            arm.images_per_second,
            arm.loss_curve.first().map_or(f64::NAN, |c| c.1),
            arm.loss_curve.last().map_or(f64::NAN, |c| c.1),
        );
    }
    println!("\n{}", mae_table(&report));
    println!(
        "{:.0} s in all; report.json, report.md and mae_grid.png in {}",
        start.elapsed().as_secs_f64(),
        out_dir.display()
    );
    Ok(())
}
