//! BERT4Rec on MovieLens 100k: static (BERT4Rec's dupe factor 10) vs dynamic Cloze masking,
//! leave-one-out HR@10 / NDCG@10 against 100 sampled negatives, with a popularity baseline.
//! Writes `results.json`, `report.md` and `curves.svg`. The same as
//! `dynmask compare configs/bert4rec_movielens.toml`.
//!
//! MovieLens may not be redistributed; fetch it on your machine first:
//!
//! ```sh
//! scripts/fetch_movielens.sh                                     # -> data/movielens/ml-100k/u.data
//! cargo run --release --example bert4rec_movielens               # default
//! cargo run --release --example bert4rec_movielens -- --quick    # smoke version (synthetic data if absent)
//! cargo run --release --example bert4rec_movielens -- --data path/to/u.data --steps 500
//! ```

use std::path::PathBuf;

use clap::Parser;
use dynmask::cli::{compare, Error, RunArgs};
use dynmask::studies::{load_study, recsys::RecStudy, Study};

/// Static vs dynamic BERT4Rec on MovieLens.
#[derive(Parser)]
struct Args {
    /// A recsys study TOML instead of the built-in default (= configs/bert4rec_movielens.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The `u.data` interactions file (overrides `data`).
    #[arg(long)]
    data: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

fn main() {
    let args = Args::parse();
    let result = (|| -> Result<(), Error> {
        let mut study = match &args.config {
            Some(p) => load_study(p)?,
            None => Study::Recsys(RecStudy::default()),
        };
        if let (Some(d), Study::Recsys(r)) = (&args.data, &mut study) {
            r.data = d.clone();
        }
        println!("{}", compare(study, &args.run)?);
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
