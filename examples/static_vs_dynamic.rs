//! The main job: static (k = 1, k = 4) vs dynamic masking on the embedded Austen corpus, then
//! fine-tuning on the embedded fine-food reviews. Prints a table (mean ± std over seeds) and
//! writes `runs/static_vs_dynamic/` (tokenizer, JSONL logs, results.json).
//!
//! ```sh
//! cargo run --release --example static_vs_dynamic              # default (≤ 15 min on 2 cores)
//! cargo run --release --example static_vs_dynamic -- --quick   # ≤ 2 min smoke version
//! cargo run --release --example static_vs_dynamic -- --seeds 3 --config configs/static_vs_dynamic.toml
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use mask_train::experiment::{load_study, results_table, run_study, StudyConfig};

type Backend = Autodiff<NdArray<f32>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut quick, mut seeds, mut config_path) = (false, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--seeds" => {
                seeds = Some(
                    args.next()
                        .ok_or("--seeds needs a number")?
                        .parse::<u64>()
                        .map_err(|e| format!("--seeds: {e}"))?,
                )
            }
            "--config" => config_path = Some(args.next().ok_or("--config needs a path")?),
            "-h" | "--help" => {
                println!("usage: static_vs_dynamic [--quick] [--seeds N] [--config study.toml]");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}` (try --help)").into()),
        }
    }
    let mut config = match config_path {
        Some(p) => load_study(p.as_ref())?,
        None => StudyConfig::default(),
    };
    if let Some(n) = seeds {
        if n == 0 {
            return Err("--seeds must be at least 1".into());
        }
        config.seeds = (0..n).collect();
    }
    if quick {
        config = config.quick();
    }
    let start = Instant::now();
    let results = run_study::<Backend>(&config, &Default::default())?;
    println!("\n{}", results_table(&results));
    println!(
        "{} runs, {} pretraining steps each, {:.0} s in all; logs and results.json in {}",
        results.runs.len(),
        config.train.steps,
        start.elapsed().as_secs_f64(),
        config.out_dir
    );
    Ok(())
}
