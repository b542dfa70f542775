//! `dynmask`: the command line of the toolkit. Every run is described by a study TOML
//! (`configs/static_vs_dynamic.toml` is the reference); flags override its fields.
//!
//! ```sh
//! dynmask compare configs/static_vs_dynamic.toml --seeds 3          # the study: table + curves.svg
//! dynmask pretrain configs/static_vs_dynamic.toml --arm dynamic --checkpoint-every 64
//! dynmask pretrain configs/static_vs_dynamic.toml --arm dynamic --resume runs/.../ckpt-00000128.dynmask
//! dynmask eval configs/static_vs_dynamic.toml --checkpoint runs/.../ckpt-00000512.dynmask
//! dynmask finetune configs/static_vs_dynamic.toml --checkpoint runs/.../ckpt-00000512.dynmask
//! dynmask plot runs/static_vs_dynamic/results.json --out curves.svg  # table + curves of a finished study
//! ```

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mask_train::experiment::{
    finetune_encoder, load_results, load_study, pretrain_arm, results_table, run_study,
    CheckpointPlan, StudyConfig, StudyData,
};
use mask_train::trainer::evaluate_mlm;

#[derive(Parser)]
#[command(
    name = "dynmask",
    version,
    about = "Train Transformers with dynamic masking (burn 0.21)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    /// burn's NdArray on the CPU.
    Ndarray,
    /// burn's wgpu backend (without operation fusion, see docs/architecture.md).
    Wgpu,
}

#[derive(Args)]
struct Common {
    /// Study config (TOML).
    config: PathBuf,
    /// Backend.
    #[arg(long, value_enum, default_value = "ndarray")]
    backend: BackendKind,
    /// Output directory (overrides `out_dir`).
    #[arg(long)]
    out_dir: Option<String>,
    /// Pretraining steps (overrides `train.steps`).
    #[arg(long)]
    steps: Option<u64>,
    /// The ≤ 2-minute smoke version of the study.
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run every arm over the seeds, print the table, write results.json and curves.svg.
    Compare {
        #[command(flatten)]
        common: Common,
        /// Seeds 0..N (overrides `seeds`).
        #[arg(long)]
        seeds: Option<u64>,
    },
    /// Pretrain one arm, with periodic checkpoints and optional resume.
    Pretrain {
        #[command(flatten)]
        common: Common,
        /// Arm name (as in the config).
        #[arg(long)]
        arm: String,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Save every N steps.
        #[arg(long, default_value_t = 100)]
        checkpoint_every: u64,
        /// Keep the newest N checkpoints.
        #[arg(long, default_value_t = 3)]
        keep_last: usize,
        /// Continue from this checkpoint (same config required).
        #[arg(long)]
        resume: Option<PathBuf>,
    },
    /// Held-out MLM loss / accuracy / perplexity of a checkpoint on the fixed evaluation mask.
    Eval {
        #[command(flatten)]
        common: Common,
        /// Checkpoint written by `pretrain`.
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Print the table and redraw the learning curves of a finished study's results.json.
    Plot {
        /// `results.json` written by `compare`.
        results: PathBuf,
        /// SVG to write. Default: curves.svg next to the results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fine-tune a checkpoint's encoder on the fine-food reviews; print accuracy / P / R / F1.
    Finetune {
        #[command(flatten)]
        common: Common,
        /// Checkpoint written by `pretrain`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn study(common: &Common) -> Result<StudyConfig, Box<dyn std::error::Error>> {
    let mut config = load_study(&common.config)?;
    if common.quick {
        config = config.quick();
    }
    if let Some(d) = &common.out_dir {
        config.out_dir = d.clone();
    }
    if let Some(s) = common.steps {
        config.train.steps = s;
    }
    Ok(config)
}

fn run<B: AutodiffBackend>(
    command: Command,
    device: &B::Device,
) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Compare { common, seeds } => {
            let mut config = study(&common)?;
            if let Some(n) = seeds {
                if n == 0 {
                    return Err("--seeds must be at least 1".into());
                }
                config.seeds = (0..n).collect();
            }
            let results = run_study::<B>(&config, device)?;
            println!("{}", results_table(&results));
            println!("results.json and curves.svg in {}", config.out_dir);
        }
        Command::Pretrain {
            common,
            arm,
            seed,
            checkpoint_every,
            keep_last,
            resume,
        } => {
            let config = study(&common)?;
            let data = StudyData::prepare(&config)?;
            let arm = StudyData::arm(&config, &arm)?;
            let plan = CheckpointPlan {
                dir: PathBuf::from(&config.out_dir).join("checkpoints"),
                every: checkpoint_every,
                keep_last,
                resume,
            };
            let trainer = pretrain_arm::<B>(&config, &data, arm, seed, Some(&plan), device)?;
            if let Some(e) = trainer.evals.last() {
                println!(
                    "step {}: held-out mlm_loss {:.4}, mlm_acc {:.2}%, perplexity {:.1}",
                    e.step,
                    e.mlm_loss,
                    e.mlm_acc * 100.0,
                    e.perplexity
                );
            }
            println!("checkpoints in {}", plan.dir.display());
        }
        Command::Eval { common, checkpoint } => {
            let config = study(&common)?;
            let data = StudyData::prepare(&config)?;
            let model =
                mask_model::load_checkpoint::<B, _>(&data.model_config, &checkpoint, device)?;
            let m = evaluate_mlm(&model.valid(), &data.eval, device)?;
            println!(
                "mlm_loss {:.4}  mlm_acc {:.2}%  perplexity {:.1}  ({} masked tokens)",
                m.mlm_loss(),
                m.mlm_acc() * 100.0,
                m.perplexity(),
                m.tokens
            );
        }
        Command::Finetune {
            common,
            checkpoint,
            seed,
        } => {
            let config = study(&common)?;
            let data = StudyData::prepare(&config)?;
            let model =
                mask_model::load_checkpoint::<B, _>(&data.model_config, &checkpoint, device)?;
            let cm = finetune_encoder::<B>(&config, &data, model.encoder, seed, device)?;
            let r = cm.report();
            println!(
                "accuracy {:.2}%  precision {:.2}%  recall {:.2}%  F1 {:.2}% (macro)",
                r.accuracy * 100.0,
                r.macro_precision * 100.0,
                r.macro_recall * 100.0,
                r.macro_f1 * 100.0
            );
            println!(
                "confusion (rows true other/great, columns predicted): {:?}",
                cm.rows()
            );
        }
        Command::Plot { results, out } => plot(&results, out)?,
    }
    Ok(())
}

fn plot(results: &std::path::Path, out: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let r = load_results(results)?;
    let out = out.unwrap_or_else(|| results.with_file_name("curves.svg"));
    mask_train::plot::plot_study(&r, &out)?;
    println!("{}", results_table(&r));
    println!("curves in {}", out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let backend = match &cli.command {
        Command::Compare { common, .. }
        | Command::Pretrain { common, .. }
        | Command::Eval { common, .. }
        | Command::Finetune { common, .. } => common.backend,
        Command::Plot { results, out } => {
            if let Err(e) = plot(results, out.clone()) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    let result = match backend {
        BackendKind::Ndarray => run::<Autodiff<NdArray<f32>>>(cli.command, &Default::default()),
        BackendKind::Wgpu => {
            type Wgpu =
                burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
            run::<Autodiff<Wgpu>>(cli.command, &Default::default())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
