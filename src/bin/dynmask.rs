//! `dynmask`: the command line of the toolkit. Every run is described by a study TOML naming its
//! kind (`text`, `vision`, `recsys`); flags override its fields.
//!
//! ```sh
//! dynmask compare configs/static_vs_dynamic.toml --seeds 3        # every arm x seed, table + curves
//! dynmask compare configs/mae_fashion_mnist.toml --quick          # the vision study, smoke size
//! dynmask pretrain configs/static_vs_dynamic.toml --arm dynamic --checkpoint-every 64
//! dynmask pretrain configs/static_vs_dynamic.toml --arm dynamic --resume   # newest checkpoint
//! dynmask eval configs/static_vs_dynamic.toml --checkpoint runs/.../ckpt-0000000512.dynmask
//! dynmask finetune configs/static_vs_dynamic.toml --checkpoint runs/.../ckpt-0000000512.dynmask
//! dynmask report runs/static_vs_dynamic/results.json               # tables + curves of a finished study
//! dynmask export my_bert.toml --checkpoint runs/.../ckpt-0000000512.dynmask --out hf/  # for HF transformers
//! ```

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use dynmask::backend::{dispatch_peers, BackendKind, WithPeers};
use dynmask::cli::{compare, init_tracing, Renderer, RunArgs};
use dynmask::studies::arm::{RunSpec, Start};
use dynmask::studies::{self, load_study, Existing, Study, StudyError, StudyEvent};
use mask_train::tasks::bert4rec::evaluate_ranking;
use mask_train::tasks::mae::reconstruct;
use mask_train::tasks::mlm::evaluate_mlm;
use mask_train::{load_model, CheckpointPolicy, NodeOptions};

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

#[derive(Args, Clone)]
struct Common {
    /// Study config (TOML with `kind = "text" | "vision" | "recsys"`).
    config: PathBuf,
    /// Backend: flex and ndarray on the CPU, wgpu on a GPU.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Device index (wgpu: the n-th discrete GPU; CPU backends have only 0).
    #[arg(long)]
    device: Option<usize>,
    /// Output directory (overrides `out_dir`).
    #[arg(long)]
    out_dir: Option<String>,
    /// Training steps (overrides `train.steps`).
    #[arg(long)]
    steps: Option<u64>,
    /// The smoke version of the study (seconds to a minute).
    #[arg(long)]
    quick: bool,
    /// No progress output (errors only).
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run every arm over the seeds; write results.json, report.md and curves.svg.
    Compare {
        /// Study config (TOML with `kind = "text" | "vision" | "recsys"`).
        config: PathBuf,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Train one arm with one seed, with periodic checkpoints; resume or extend it.
    Pretrain {
        #[command(flatten)]
        common: Common,
        /// Arm name (as in the config).
        #[arg(long)]
        arm: String,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Save every N steps (and at the end).
        #[arg(long, default_value_t = 100)]
        checkpoint_every: u64,
        /// Keep the newest N checkpoints of the run.
        #[arg(long, default_value_t = 3)]
        keep_last: usize,
        /// Continue the run: from its newest checkpoint, or from the one given.
        #[arg(long, num_args = 0..=1, conflicts_with = "fresh")]
        resume: Option<Option<PathBuf>>,
        /// With --resume: accept a different `train.steps`, to extend a finished run.
        #[arg(long, requires = "resume")]
        extend: bool,
        /// Delete the run's state and start over.
        #[arg(long)]
        fresh: bool,
        /// Train data-parallel, one peer per listed device index (wgpu: `0,1` = the first two
        /// GPUs; the CPU backends have one device, so `0,0` runs two peers on it). The first
        /// is peer 0's device (instead of --device). Checkpoints are the single-device ones.
        #[arg(long, value_delimiter = ',', conflicts_with = "device")]
        devices: Vec<usize>,
        /// Train across this many processes (nodes), each running this command with its own
        /// --node-rank and the same --devices count, through `dynmask orchestrator`. Node 0
        /// alone writes logs and checkpoints; resume the others with --resume PATH (node 0's
        /// checkpoint).
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// This node's index, 0..nodes.
        #[arg(long, default_value_t = 0)]
        node_rank: u32,
        /// The orchestrator's address (e.g. `ws://10.0.0.1:3000`); needed with --nodes > 1.
        #[arg(long)]
        orchestrator: Option<String>,
        /// This node's data-service port; the other nodes reach it at --node-address.
        #[arg(long, default_value_t = 3001)]
        data_port: u16,
        /// This node's address as the other nodes reach it. Default `ws://127.0.0.1:PORT`
        /// (one machine).
        #[arg(long)]
        node_address: Option<String>,
    },
    /// Run burn-collective's global orchestrator, which the nodes of a multi-node
    /// `pretrain --nodes N` run meet through, until interrupted.
    Orchestrator {
        /// Port to listen on.
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Evaluate a checkpoint on the study's held-out data.
    Eval {
        #[command(flatten)]
        common: Common,
        /// Checkpoint written by `pretrain` or `compare`.
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Fine-tune a checkpoint's encoder (text: classification; vision: linear probe).
    Finetune {
        #[command(flatten)]
        common: Common,
        /// Checkpoint written by `pretrain` or `compare`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write a text checkpoint as a folder HF `transformers` loads with
    /// `BertForMaskedLM.from_pretrained`: config.json, model.safetensors, vocab.txt and
    /// tokenizer.json. The model must be BERT-shaped (learned positions, post-LN).
    Export {
        #[command(flatten)]
        common: Common,
        /// Checkpoint written by `pretrain` or `compare`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Folder to write (created if missing; files of the same names are replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the report tables and redraw the curves of a finished study's results.json (the
    /// tables in docs/ are this command's output on committed results files).
    #[command(alias = "plot")]
    Report {
        /// `results.json` written by `compare`.
        results: PathBuf,
        /// SVG to write. Default: curves.svg next to the results.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

use dynmask::cli::Error;

/// Loads the study and applies `--quick` and the overrides of `common`.
fn study(common: &Common) -> Result<Study, Error> {
    RunArgs {
        out_dir: common.out_dir.clone(),
        steps: common.steps,
        quick: common.quick,
        ..RunArgs::default()
    }
    .apply(load_study(&common.config)?)
}

struct Job {
    command: Command,
    study: Study,
}

impl WithPeers for Job {
    type Output = Result<(), Error>;
    fn run<B: AutodiffBackend>(
        self,
        backend: BackendKind,
        device: B::Device,
        peers: Vec<B::Device>,
    ) -> Self::Output {
        run::<B>(self.command, self.study, backend, (&device, &peers))
    }
}

/// Multi-task studies train, score and probe their runs in `dynmask compare` only.
fn only_compare() -> Error {
    StudyError::Config {
        path: "multitask".into(),
        reason: "a multitask study runs through `dynmask compare CONFIG` (it trains, scores and \
                 probes every arm there); pretrain, eval, finetune and export take text, vision \
                 or recsys studies"
            .into(),
    }
    .into()
}

fn run<B: AutodiffBackend>(
    command: Command,
    study: Study,
    backend: BackendKind,
    (device, peers): (&B::Device, &[B::Device]),
) -> Result<(), Error> {
    let quiet = match &command {
        Command::Pretrain { common, .. }
        | Command::Eval { common, .. }
        | Command::Finetune { common, .. }
        | Command::Export { common, .. } => common.quiet,
        Command::Compare { .. } | Command::Report { .. } | Command::Orchestrator { .. } => false,
    };
    let mut renderer = Renderer::new(quiet);
    let sink = &mut |e: StudyEvent<'_>| renderer.event(e);
    if !quiet {
        eprintln!("backend: {backend}");
    }
    match command {
        Command::Pretrain {
            common,
            arm,
            seed,
            checkpoint_every,
            keep_last,
            resume,
            extend,
            fresh,
            nodes,
            node_rank,
            orchestrator,
            data_port,
            node_address,
            ..
        } => {
            let policy = CheckpointPolicy::new(checkpoint_every, keep_last)?;
            let existing = match (&resume, fresh) {
                (Some(None), _) => Existing::Resume,
                (_, true) => Existing::Fresh,
                _ => Existing::Refuse,
            };
            let from = match resume {
                Some(Some(path)) => Some((path, extend)),
                _ => None,
            };
            if extend && from.is_none() {
                return Err(
                    "`--extend` needs the checkpoint to extend: `--resume PATH --extend`".into(),
                );
            }
            let spec = RunSpec {
                seed,
                start: match from {
                    Some((checkpoint, extend)) => Start::From { checkpoint, extend },
                    None => Start::Existing(existing),
                },
                policy,
                nodes: match (nodes, orchestrator) {
                    (1, _) => None,
                    (_, None) => return Err("`--nodes` > 1 needs `--orchestrator ADDRESS`".into()),
                    (nodes, Some(orchestrator)) => Some(NodeOptions {
                        nodes,
                        node_rank,
                        orchestrator,
                        node_address: node_address
                            .unwrap_or_else(|| format!("ws://127.0.0.1:{data_port}")),
                        data_port,
                    }),
                },
            };
            let dir = match &study {
                Study::Text(s) => {
                    let data = studies::text::TextData::prepare(s, sink)?;
                    let l = studies::text::pretrain::<B>(
                        s,
                        &data,
                        s.arm(&arm)?,
                        &spec,
                        (device, peers),
                        sink,
                    )?;
                    if let Some(e) = l.state().evals.last() {
                        println!(
                            "step {}: held-out mlm_loss {:.4}, mlm_acc {:.2}%, perplexity {:.1}",
                            e.step,
                            e.metrics.mlm_loss,
                            e.metrics.mlm_acc * 100.0,
                            e.metrics.perplexity
                        );
                    }
                    l.run_dir().map(|r| r.root().to_path_buf())
                }
                Study::Multitask(_) => return Err(only_compare()),
                Study::Vision(s) => {
                    let data = studies::vision::VisionData::prepare(s)?;
                    let l = studies::vision::pretrain::<B>(
                        s,
                        &data,
                        s.arm(&arm)?,
                        &spec,
                        (device, peers),
                        sink,
                    )?;
                    if let Some(e) = l.state().evals.last() {
                        println!(
                            "step {}: masked-patch MSE {:.4} (pixels {:.5})",
                            e.step, e.metrics.recon_mse, e.metrics.recon_pixel_mse
                        );
                    }
                    l.run_dir().map(|r| r.root().to_path_buf())
                }
                Study::Recsys(s) => {
                    let data = studies::recsys::RecData::prepare(s, common.quick)?;
                    let l = studies::recsys::pretrain::<B>(
                        s,
                        &data,
                        s.arm(&arm)?,
                        &spec,
                        (device, peers),
                        sink,
                    )?;
                    if let Some(e) = l.state().evals.last() {
                        println!(
                            "step {}: validation HR@{k} {:.4}, NDCG@{k} {:.4}",
                            e.step,
                            e.metrics.hr,
                            e.metrics.ndcg,
                            k = s.k
                        );
                    }
                    l.run_dir().map(|r| r.root().to_path_buf())
                }
            };
            if let Some(d) = dir {
                println!("run directory {}", d.display());
            }
        }
        Command::Eval { common, checkpoint } => match &study {
            Study::Text(s) => {
                let data = studies::text::TextData::prepare(s, sink)?;
                let task = data.mlm_task(&s.arms[0])?;
                let model = load_model::<B, _>(&task, &checkpoint, device)?;
                let m = evaluate_mlm(&model.valid(), &data.eval, device)?;
                println!(
                    "mlm_loss {:.4}  mlm_acc {:.2}%  perplexity {:.1}  ({} masked tokens)",
                    m.mlm_loss(),
                    m.mlm_acc() * 100.0,
                    m.perplexity(),
                    m.tokens
                );
                let h = studies::text::heldout_protocol(s, &data, &model.valid(), device)?;
                println!(
                    "[MASK] positions under `{}`: loss {:.4} vs unigram {:.4} (gain {:.4} nats), \
                     acc {:.2}%",
                    s.eval_masks[0].name,
                    h.mask_token_loss,
                    h.unigram_loss,
                    h.unigram_loss - h.mask_token_loss,
                    h.mask_token_acc * 100.0
                );
                for m in &h.masks {
                    println!(
                        "  {}: loss {:.4} vs unigram {:.4} over {} masked tokens",
                        m.name,
                        m.breakdown.all.loss,
                        m.breakdown.all.unigram_loss,
                        m.breakdown.all.tokens
                    );
                }
            }
            Study::Multitask(_) => return Err(only_compare()),
            Study::Vision(s) => {
                let data = studies::vision::VisionData::prepare(s)?;
                let task = data.task(s, &s.arms[0])?;
                let model = load_model::<B, _>(&task, &checkpoint, device)?;
                let r = reconstruct(&model.valid(), &data.test, task.eval_masks(), 0, device)?;
                println!(
                    "masked-patch MSE {:.4} (normalised pixels), {:.5} (pixels)",
                    r.eval.recon_mse, r.eval.recon_pixel_mse
                );
            }
            Study::Recsys(s) => {
                let data = studies::recsys::RecData::prepare(s, common.quick)?;
                let task = data.task(s, &s.arms[0])?;
                let model = load_model::<B, _>(&task, &checkpoint, device)?.valid();
                for (name, eval) in [("validation", &*data.valid), ("test", &data.test)] {
                    let m = evaluate_ranking(&model, &data.model, eval, s.eval_batch_size, device)?;
                    println!(
                        "{name}: HR@{k} {:.4}  NDCG@{k} {:.4}  ({} users)",
                        m.hr,
                        m.ndcg,
                        m.users,
                        k = s.k
                    );
                }
            }
        },
        Command::Finetune {
            checkpoint, seed, ..
        } => match &study {
            Study::Text(s) => {
                let data = studies::text::TextData::prepare(s, sink)?;
                let task = data.mlm_task(&s.arms[0])?;
                let model = load_model::<B, _>(&task, &checkpoint, device)?;
                let c = studies::text::finetune::<B>(s, &data, &model, seed, device, sink)?;
                let r = &c.report;
                println!(
                    "accuracy {:.2}%  precision {:.2}%  recall {:.2}%  F1 {:.2}% (macro)",
                    r.accuracy * 100.0,
                    r.macro_precision * 100.0,
                    r.macro_recall * 100.0,
                    r.macro_f1 * 100.0
                );
                println!(
                    "confusion (rows true {}, columns predicted): {:?}",
                    data.classes.join("/"),
                    c.confusion
                );
            }
            Study::Multitask(_) => return Err(only_compare()),
            Study::Vision(s) => {
                let data = studies::vision::VisionData::prepare(s)?;
                let task = data.task(s, &s.arms[0])?;
                let model = load_model::<B, _>(&task, &checkpoint, device)?.valid();
                let c = studies::vision::probe::<B>(s, &data, Some(&model), seed, device, sink)?;
                println!(
                    "linear probe: accuracy {:.2}%, macro F1 {:.2}%",
                    c.report.accuracy * 100.0,
                    c.report.macro_f1 * 100.0
                );
            }
            Study::Recsys(_) => {
                return Err(StudyError::Config {
                    path: "finetune".into(),
                    reason: "a recsys study has no fine-tuning stage: BERT4Rec is evaluated as \
                             trained (use `dynmask eval`)"
                        .into(),
                }
                .into())
            }
        },
        Command::Export {
            checkpoint, out, ..
        } => {
            let Study::Text(s) = &study else {
                return Err(StudyError::Config {
                    path: "export".into(),
                    reason: "only text studies export to HF transformers (BertForMaskedLM)".into(),
                }
                .into());
            };
            let data = studies::text::TextData::prepare(s, sink)?;
            // Refuse a model HF BERT cannot represent before reading the checkpoint.
            let config = mask_model::hf_bert_config(&data.model.encoder, data.tokenizer.pad_id)?;
            let task = data.mlm_task(&s.arms[0])?;
            let model = load_model::<B, _>(&task, &checkpoint, device)?.valid();
            let written = export_hf(&model, &config, &data.tokenizer, &out)?;
            println!("wrote {} to {}", written.join(", "), out.display());
        }
        Command::Compare { .. } | Command::Report { .. } | Command::Orchestrator { .. } => {
            unreachable!("handled before the backend starts")
        }
    }
    Ok(())
}

/// Writes the HF folder of an MLM model; returns the file names.
fn export_hf<B: burn::tensor::backend::Backend>(
    model: &mask_model::MlmModel<B>,
    config: &serde_json::Value,
    tok: &mask_data::TextTokenizer,
    out: &Path,
) -> Result<Vec<&'static str>, Error> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<(), Error> {
        let path = out.join(name);
        mask_core::io::write_atomic(&path, bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()).into())
    };
    write(
        "config.json",
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    mask_model::NamedTensors::bert_mlm(model).save(&out.join("model.safetensors"), metadata)?;
    let vocab: Vec<String> = (0..tok.vocab_size() as u32)
        .map(|id| {
            tok.id_to_token(id)
                .ok_or_else(|| format!("the tokenizer has no token for id {id}"))
        })
        .collect::<Result<_, _>>()?;
    write("vocab.txt", (vocab.join("\n") + "\n").as_bytes())?;
    tok.save(&out.join("tokenizer.json"))?;
    Ok(vec![
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer.json",
    ])
}

fn plot(results: &Path, out: Option<PathBuf>) -> Result<(), Error> {
    let text = std::fs::read_to_string(results)
        .map_err(|e| format!("cannot read `{}`: {e}", results.display()))?;
    let not_results = |e: String| -> Error {
        format!(
            "`{}` is not the results.json of a study: {e}",
            results.display()
        )
        .into()
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not_results(e.to_string()))?;
    let kind = value["study"]["kind"].as_str().unwrap_or("").to_string();
    let out = out.unwrap_or_else(|| results.with_file_name("curves.svg"));
    let parse = |e: serde_json::Error| not_results(e.to_string());
    let (panels, table) = match kind.as_str() {
        "text" => {
            let r: studies::text::TextResults = serde_json::from_value(value).map_err(parse)?;
            (studies::text::panels(&r), studies::text::results_table(&r))
        }
        "vision" => {
            let r: studies::vision::VisionResults = serde_json::from_value(value).map_err(parse)?;
            (
                studies::vision::panels(&r),
                studies::vision::results_table(&r),
            )
        }
        "recsys" => {
            let r: studies::recsys::RecResults = serde_json::from_value(value).map_err(parse)?;
            (
                studies::recsys::panels(&r),
                studies::recsys::results_table(&r),
            )
        }
        "multitask" => {
            let r: studies::multitask::MultiResults =
                serde_json::from_value(value).map_err(parse)?;
            (
                studies::multitask::panels(&r),
                studies::multitask::results_table(&r),
            )
        }
        other => {
            return Err(not_results(format!(
                "no study of kind \"text\", \"vision\", \"recsys\" or \"multitask\" (found \
                 `{other}`)"
            )))
        }
    };
    studies::plot::plot_panels(&out, &panels)?;
    println!("{table}");
    println!("curves in {}", out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = (|| -> Result<(), Error> {
        let common = match &cli.command {
            Command::Report { results, out } => return plot(results, out.clone()),
            Command::Orchestrator { port } => {
                eprintln!("orchestrator listening on port {port} (Ctrl-C to stop)");
                tokio::runtime::Runtime::new()?
                    .block_on(burn_collective::start_global_orchestrator(*port));
                return Ok(());
            }
            Command::Compare { config, args } => {
                println!("{}", compare(load_study(config)?, args)?);
                return Ok(());
            }
            Command::Pretrain { common, .. }
            | Command::Eval { common, .. }
            | Command::Finetune { common, .. }
            | Command::Export { common, .. } => common.clone(),
        };
        init_tracing(common.quiet);
        let study = study(&common)?;
        let (device, peers) = match &cli.command {
            Command::Pretrain { devices, .. } if !devices.is_empty() => {
                (Some(devices[0]), devices[1..].to_vec())
            }
            _ => (common.device, vec![]),
        };
        dispatch_peers(
            common.backend,
            device,
            &peers,
            Job {
                command: cli.command,
                study,
            },
        )?
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
