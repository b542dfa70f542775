//! The terminal front end of the binaries: renders study events as a progress bar per run (ETA,
//! steps/s, tokens/s, loss; `indicatif`), or, when stderr is not a terminal, as one line per
//! tenth of a run; installs a `tracing` subscriber for the setup phases (`RUST_LOG` respected).
//! The libraries never print: everything a user sees comes through here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

use crate::studies::StudyEvent;

/// Installs the `tracing` subscriber: setup spans with their duration on stderr at `info`
/// (`warn` with `quiet`), unless `RUST_LOG` says otherwise.
pub fn init_tracing(quiet: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { "info" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

struct RunProgress {
    bar: Option<ProgressBar>,
    start: Instant,
    first_done: u64,
    steps: u64,
    tokens: u64,
    last_tenth: u64,
}

/// Renders [`StudyEvent`]s on stderr.
pub struct Renderer {
    quiet: bool,
    tty: bool,
    runs: HashMap<String, RunProgress>,
    bars: MultiProgress,
}

impl Renderer {
    /// A renderer; `quiet` shows nothing but errors.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            runs: HashMap::new(),
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// Renders one event.
    pub fn event(&mut self, e: StudyEvent<'_>) {
        if self.quiet {
            return;
        }
        match e {
            StudyEvent::Note(text) => self.line(text),
            StudyEvent::RunStarted { run, done, steps } => {
                let bar = self.tty.then(|| {
                    // One bar per run, stacked: a study may train several runs at once.
                    let bar = self.bars.add(ProgressBar::new(steps));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>22} [{bar:24}] {pos}/{len} {msg} | {per_sec} | ETA {eta}",
                        )
                        .expect("a valid template")
                        .progress_chars("#>-"),
                    );
                    bar.set_prefix(run.to_string());
                    bar.set_position(done);
                    bar.enable_steady_tick(Duration::from_millis(500));
                    bar
                });
                self.runs.insert(
                    run.to_string(),
                    RunProgress {
                        bar,
                        start: Instant::now(),
                        first_done: done,
                        steps,
                        tokens: 0,
                        last_tenth: done * 10 / steps.max(1),
                    },
                );
            }
            StudyEvent::Step { run, record, .. } => {
                let Some(p) = self.runs.get_mut(run) else {
                    return;
                };
                p.tokens += record.tokens as u64;
                let done = record.step + 1;
                let secs = p.start.elapsed().as_secs_f64().max(1e-9);
                let msg = format!(
                    "loss {:.3} | {:.0} tok/s",
                    record.loss,
                    p.tokens as f64 / secs
                );
                match &p.bar {
                    Some(bar) => {
                        bar.set_position(done);
                        bar.set_message(msg);
                    }
                    None => {
                        let tenth = done * 10 / p.steps.max(1);
                        if tenth > p.last_tenth || done == p.steps {
                            p.last_tenth = tenth;
                            let per_step = secs / (done - p.first_done).max(1) as f64;
                            let eta = per_step * p.steps.saturating_sub(done) as f64;
                            eprintln!("{run}: {done}/{} {msg} | ETA {}", p.steps, format_secs(eta));
                        }
                    }
                }
            }
            StudyEvent::Eval { run, step, score } => {
                let text = format!("{run}: step {step}, held-out score {score:.4}");
                match self.runs.get(run).and_then(|p| p.bar.as_ref()) {
                    Some(bar) => bar.println(text),
                    None => eprintln!("{text}"),
                }
            }
            StudyEvent::RunFinished { run, reused } => {
                if let Some(bar) = self.runs.remove(run).and_then(|p| p.bar) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
                if reused {
                    self.line(&format!("{run}: finished earlier, result reused"));
                }
            }
        }
    }

    fn line(&self, text: &str) {
        if self.tty {
            let _ = self.bars.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

/// `73.4` -> `1m13s`.
pub fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_formatted_as_minutes_and_seconds() {
        assert_eq!(format_secs(73.4), "1m13s");
        assert_eq!(format_secs(9.6), "10s");
        assert_eq!(format_secs(-1.0), "0s");
    }
}

/// The flags of every study entry point (`dynmask compare` and the study examples).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Backend: flex and ndarray on the CPU, wgpu on a GPU.
    #[arg(long, value_enum, default_value_t = crate::backend::BackendKind::Flex)]
    pub backend: crate::backend::BackendKind,
    /// Device index (wgpu: the n-th discrete GPU; the CPU backends have only 0).
    #[arg(long)]
    pub device: Option<usize>,
    /// Output directory (overrides `out_dir`).
    #[arg(long)]
    pub out_dir: Option<String>,
    /// Training steps (overrides `train.steps`).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seeds 0..N (overrides `seeds`).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// The smoke version of the study (seconds to a minute).
    #[arg(long)]
    pub quick: bool,
    /// Continue: reuse finished runs, resume unfinished ones from their newest checkpoint.
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Delete the state of the study's runs and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Text studies: continue as `--resume`, but score finished runs again under the current
    /// held-out protocol from their newest checkpoint (training records kept).
    #[arg(long, conflicts_with_all = ["fresh", "resume"])]
    pub rescore: bool,
    /// No progress output (errors only).
    #[arg(long)]
    pub quiet: bool,
    /// Text studies: runs trained at once, one thread each (overrides `jobs`; results do not
    /// depend on it).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// An error of a binary: anything displayable.
pub type Error = Box<dyn std::error::Error>;

impl RunArgs {
    /// What to do with runs already on disk.
    pub fn existing(&self) -> crate::studies::Existing {
        use crate::studies::Existing;
        match (self.resume, self.fresh, self.rescore) {
            (_, _, true) => Existing::Rescore,
            (true, _, _) => Existing::Resume,
            (_, true, _) => Existing::Fresh,
            _ => Existing::Refuse,
        }
    }

    /// `study` (validated as written) with `--quick` and the overrides applied, validated again.
    pub fn apply(&self, study: crate::studies::Study) -> Result<crate::studies::Study, Error> {
        use crate::studies::Study;
        study.validate()?;
        let mut s = if self.quick {
            match study {
                Study::Text(t) => Study::Text(t.quick()),
                Study::Vision(v) => Study::Vision(v.quick()),
                Study::Recsys(r) => Study::Recsys(r.quick()),
                Study::Multitask(m) => Study::Multitask(m.quick()),
            }
        } else {
            study
        };
        let seeds: Option<Vec<u64>> = match self.seeds {
            Some(0) => return Err("`--seeds` = 0 is invalid: at least 1".into()),
            n => n.map(|n| (0..n).collect()),
        };
        macro_rules! apply {
            ($x:expr) => {{
                if let Some(d) = &self.out_dir {
                    $x.out_dir = d.clone();
                }
                if let Some(n) = self.steps {
                    $x.train.steps = n;
                }
                if let Some(s) = &seeds {
                    $x.seeds = s.clone();
                }
            }};
        }
        if self.rescore && !matches!(s, Study::Text(_)) {
            return Err(
                "`--rescore` applies to text studies only (the held-out protocol is \
                        theirs)"
                    .into(),
            );
        }
        match (&mut s, self.jobs) {
            (Study::Text(t), Some(j)) => t.jobs = j,
            (Study::Multitask(m), Some(j)) => m.jobs = j,
            (_, Some(j)) if j != 1 => {
                return Err(format!(
                "`--jobs` = {j} applies to text studies only (this study runs one run at a time)"
            )
                .into())
            }
            _ => {}
        }
        match &mut s {
            Study::Text(t) => apply!(t),
            Study::Vision(v) => apply!(v),
            Study::Recsys(r) => apply!(r),
            Study::Multitask(m) => apply!(m),
        }
        s.validate()?;
        Ok(s)
    }
}

struct CompareJob {
    study: crate::studies::Study,
    args: RunArgs,
}

impl crate::backend::WithBackend for CompareJob {
    type Output = Result<String, Error>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        backend: crate::backend::BackendKind,
        device: B::Device,
    ) -> Self::Output {
        use crate::studies::{multitask, recsys, text, vision, Study};
        let mut renderer = Renderer::new(self.args.quiet);
        let sink = &mut |e: StudyEvent<'_>| renderer.event(e);
        sink(StudyEvent::Note(&format!("backend: {backend}")));
        let existing = self.args.existing();
        let table = match &self.study {
            Study::Text(s) => {
                text::results_table(&text::run_study::<B>(s, existing, &device, sink)?)
            }
            Study::Vision(s) => {
                vision::results_table(&vision::run_study::<B>(s, existing, &device, sink)?)
            }
            Study::Recsys(s) => recsys::results_table(&recsys::run_study::<B>(
                s,
                self.args.quick,
                existing,
                &device,
                sink,
            )?),
            Study::Multitask(s) => {
                multitask::results_table(&multitask::run_study::<B>(s, existing, &device, sink)?)
            }
        };
        Ok(format!(
            "{table}\nresults.json, report.md and curves.svg in {}",
            self.study.out_dir()
        ))
    }
}

/// Runs a whole study on the backend `args` name (after [`RunArgs::apply`]); returns its
/// results table and where the outputs are. Progress goes to stderr unless `--quiet`.
pub fn compare(study: crate::studies::Study, args: &RunArgs) -> Result<String, Error> {
    init_tracing(args.quiet);
    let study = args.apply(study)?;
    crate::backend::dispatch(
        args.backend,
        args.device,
        CompareJob {
            study,
            args: args.clone(),
        },
    )?
}
