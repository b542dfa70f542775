//! BERT4Rec on MovieLens 100k: static (BERT4Rec's dupe factor 10) vs dynamic Cloze masking,
//! leave-one-out HR@10 / NDCG@10 against 100 sampled negatives, with a popularity baseline.
//! Writes `report.json` and `results.md` to the output directory.
//!
//! MovieLens may not be redistributed; fetch it on your machine first:
//!
//! ```sh
//! scripts/fetch_movielens.sh                                     # -> data/movielens/ml-100k/u.data
//! cargo run --release --example bert4rec_movielens               # default (~10 min on 2 cores)
//! cargo run --release --example bert4rec_movielens -- --quick    # smoke version
//! cargo run --release --example bert4rec_movielens -- path/to/u.data --steps 500 --out-dir runs/x
//! ```

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use mask_train::recsys::{
    read_movielens, rec_results_table, run_rec_study_with, RecEvent, RecStudyConfig,
};

type Backend = Autodiff<NdArray<f32>>;

const DEFAULT_DATA: &str = "data/movielens/ml-100k/u.data";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut steps, mut out_dir, mut data) = (false, None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--steps" => {
                let v = args.next().ok_or("--steps needs a number")?;
                steps = Some(
                    v.parse::<u64>()
                        .map_err(|e| format!("--steps `{v}`: {e}"))?,
                );
            }
            "--out-dir" => out_dir = Some(args.next().ok_or("--out-dir needs a path")?),
            "-h" | "--help" => {
                println!(
                    "usage: bert4rec_movielens [U_DATA (default {DEFAULT_DATA})] [--quick] [--steps N] [--out-dir DIR (default runs/bert4rec)]"
                );
                return Ok(());
            }
            other if other.starts_with('-') => {
                return Err(format!("unknown argument `{other}` (try --help)").into())
            }
            path => data = Some(PathBuf::from(path)),
        }
    }
    let data = data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    if !data.exists() {
        return Err(format!(
            "`{}` not found. MovieLens 100k is not shipped with dynmask (it may not be \
             redistributed); run `scripts/fetch_movielens.sh` to download it, or pass the path \
             of a u.data file",
            data.display()
        )
        .into());
    }
    let mut config = RecStudyConfig::default();
    if quick {
        config = config.quick();
    }
    if let Some(s) = steps {
        config.steps = s;
    }
    let out_dir = PathBuf::from(out_dir.unwrap_or_else(|| {
        if quick {
            "runs/bert4rec-quick".into()
        } else {
            "runs/bert4rec".into()
        }
    }));
    let interactions = read_movielens(&data)?;
    println!(
        "{}: {} users, {} items, {} interactions; {} arms x {} steps of {} sequences (max_len {})",
        data.display(),
        interactions.sequences.len(),
        interactions.n_items,
        interactions.n_interactions(),
        config.arms.len(),
        config.steps,
        config.batch_size,
        config.max_len
    );
    let start = Instant::now();
    let every = (config.steps / 10).max(1);
    let report = run_rec_study_with::<Backend>(
        &config,
        &interactions,
        &out_dir,
        &Default::default(),
        &mut |e| match e {
            RecEvent::Step { arm, step, loss } if (step + 1) % every == 0 => {
                println!("  [{arm}] step {:>6}  loss {loss:.4}", step + 1)
            }
            RecEvent::ArmDone(a) => println!(
                "  [{}] trained in {:.0} s ({:.0} sequences/s); test HR@10 {:.4}, NDCG@10 {:.4}",
                a.name, a.train_seconds, a.sequences_per_second, a.test.hr, a.test.ndcg
            ),
            _ => {}
        },
    )?;
    println!("\n{}", rec_results_table(&report));
    println!(
        "{:.0} s in all; report.json and results.md in {}",
        start.elapsed().as_secs_f64(),
        out_dir.display()
    );
    Ok(())
}
