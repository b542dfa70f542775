//! The main job: static (k = 1, k = 4) vs dynamic masking on the embedded Austen corpus over three
//! seeds, scored by the held-out protocol (loss at [MASK] positions beside a unigram baseline,
//! by corruption kind, frequency and evaluation mask) with paired contrasts. Prints the report
//! and writes `runs/static_vs_dynamic/` (tokenizer, one directory per run, results.json,
//! report.md, curves.svg). The same as `dynmask compare configs/static_vs_dynamic.toml`.
//!
//! ```sh
//! cargo run --release --example static_vs_dynamic                  # the default study
//! cargo run --release --example static_vs_dynamic -- --quick       # smoke version (seconds)
//! cargo run --release --example static_vs_dynamic -- --seeds 1 --jobs 1 --backend ndarray
//! cargo run --release --example static_vs_dynamic -- --resume      # continue an interrupted run
//! ```

use std::path::PathBuf;

use clap::Parser;
use dynmask::cli::{compare, Error, RunArgs};
use dynmask::studies::{load_study, text::TextStudy, Study};

/// Static vs dynamic masking on Jane Austen, scored against a unigram baseline.
#[derive(Parser)]
struct Args {
    /// A text study TOML instead of the built-in default (= configs/static_vs_dynamic.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

fn main() {
    let args = Args::parse();
    let result = (|| -> Result<(), Error> {
        let study = match &args.config {
            Some(p) => load_study(p)?,
            None => Study::Text(TextStudy::default()),
        };
        println!("{}", compare(study, &args.run)?);
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
