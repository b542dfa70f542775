//! Data-parallel training on burn-collective: N peers, each a thread with its own device, its
//! own copy of the model and optimizer, and its own clone of the task.
//!
//! Every peer builds the *global* batch of step `s` itself (the same pure function of
//! `(seed, s)` the single-device run uses) and trains on its rows `rank, rank + N, ...`
//! ([`shard_rows`]). Peer `r`'s loss is weighted by its share of the global batch's items, so
//! the sum over peers is the single-device loss. One all-reduce (sum) per step then carries, in
//! one flat buffer:
//!
//! ```text
//! [ gradients, parameter by parameter (P values) | has-gradient flags (one per parameter)
//!   | weighted loss | peers with an output | per-item losses scattered to global order (L) ]
//! ```
//!
//! after which every peer holds the same summed gradients, loss and (adaptive tasks) the global
//! batch's per-item losses in [`TrainTask::observe`]'s order. Clipping, the non-finite guards,
//! the feedback and the AdamW step then run identically on every peer, so the replicas stay
//! bit-identical ([`ParallelOptions::verify_replicas`] checks it). Peer 0 is the learner itself:
//! it alone evaluates, logs and writes checkpoints, in the single-device format, so a run can
//! resume on another number of peers.
//!
//! Why one flat all-reduce and not burn-optim's `GradientsParams::all_reduce`: that makes one
//! collective call per parameter (about 100 for a small BERT, each a round trip through the
//! collective server), needs every peer to hold a gradient for the same parameters (a peer
//! whose rows have no masked token has none), and has no room for the loss and the feedback.
//! The reduction itself is burn-collective's (`burn_collective::all_reduce`); nothing here sums
//! across peers.
//!
//! Failure: every collective call runs on a helper thread and is given
//! [`ParallelOptions::timeout`]. A peer that fails (an error or a panic) resets the collective,
//! which releases the others at once; a peer that hangs is given up after the timeout. Peer 0
//! then stops the others and returns [`TrainError::PeerLost`] (the failing peer's own message)
//! or [`TrainError::Collective`]. Checkpoints are written by peer 0 between steps, atomically,
//! so the last one stays intact.
//!
//! Limits (burn-collective 0.21): one data-parallel session per process at a time (its local
//! server is one per backend type; sessions here queue on a lock); with three or more peers on
//! devices of one type its tree all-reduce adds in an order that can change from run to run,
//! so only runs on one or two peers are bit-reproducible.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::module::{ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, TensorPrimitive};
use burn_collective::{CollectiveConfig, CollectiveError, PeerId, ReduceOperation};

use super::prefetch::Prefetcher;
use super::{dropout_seed, update};
use crate::config::TrainConfig;
use crate::error::{invalid, Result, TrainError};
use crate::events::StepRecord;
use crate::task::{shard_rows, TrainTask};

/// The dropout key of peer `rank` at `step` of a run seeded `seed`: peer 0's is the
/// single-device key [`dropout_seed`], the others' are derived from it.
pub fn peer_dropout_seed(seed: u64, step: u64, rank: usize) -> u64 {
    let key = dropout_seed(seed, step);
    if rank == 0 {
        key
    } else {
        mask_core::mix64(key ^ (rank as u64).wrapping_mul(0xa076_1d64_78bd_642f))
    }
}

/// Several processes ("nodes") training together through burn-collective's global
/// orchestrator (`burn_collective::start_global_orchestrator`; `dynmask orchestrator`). Every
/// node runs the same number of peers; global peer `node_rank * peers + r` takes rows of the
/// global batch like a local peer would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOptions {
    /// Nodes in the run.
    pub nodes: u32,
    /// This node's index, `0..nodes`. Node 0's peer 0 alone writes logs and checkpoints.
    pub node_rank: u32,
    /// The orchestrator's address, e.g. `ws://10.0.0.1:3000`.
    pub orchestrator: String,
    /// This node's address as the other nodes reach its data service, e.g.
    /// `ws://10.0.0.2:3001`.
    pub node_address: String,
    /// The port this node's data service listens on (the port of `node_address`).
    pub data_port: u16,
}

/// Settings of data-parallel training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelOptions {
    /// How long a collective call (register, all-reduce) may wait for the other peers before
    /// the run fails with [`TrainError::Collective`]. Peers meet once per step, so this bounds
    /// the difference between the slowest and the fastest peer's step. Default 300 s.
    pub timeout: Duration,
    /// At the end of every session, compare each peer's model and task state with peer 0's,
    /// byte for byte, and fail with [`TrainError::ReplicaDiverged`] if they differ. Costs one
    /// serialisation of the model per peer and session. Default off.
    pub verify_replicas: bool,
    /// Train across processes (nodes) as well; `None` (default): this process only.
    pub nodes: Option<NodeOptions>,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            verify_replicas: false,
            nodes: None,
        }
    }
}

/// What a peer reports at the end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer.
    pub rank: usize,
    /// Steps it trained in the session.
    pub steps: u64,
    /// Its parameters' raw bytes, in module order (with
    /// [`ParallelOptions::verify_replicas`]).
    pub model: Option<Vec<u8>>,
    /// Its task's state sections (an adaptive policy's state).
    pub task_state: Vec<(String, Vec<u8>)>,
}

/// The AdamW optimizer of a `T` model.
pub(crate) type Optim<B, T> = OptimizerAdaptor<AdamW, <T as TrainTask<B>>::Model, B>;

/// burn-collective's local server is one per backend type and process: sessions queue here.
static SESSION: Mutex<()> = Mutex::new(());
/// Bumped when a session ends, so that a peer given up on (still running) cannot reset the
/// collective of a later session.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One peer's handle on the collective.
#[derive(Debug, Clone)]
pub(crate) struct Comm {
    /// Peer id on this node.
    rank: usize,
    /// Which rows of the global batch: `rank` among `world` peers of all nodes.
    shard_rank: usize,
    shard_world: usize,
    config: CollectiveConfig,
    generation: u64,
    timeout: Duration,
}

fn describe(e: &CollectiveError) -> String {
    match e {
        CollectiveError::LocalServerMissing => {
            "the collective was reset (another peer stopped)".into()
        }
        CollectiveError::RegisterNotFirstOperation => {
            "this peer is no longer registered (another peer stopped)".into()
        }
        other => format!("{other:?}"),
    }
}

impl Comm {
    /// Runs `f` on a helper thread and waits at most `timeout` for it.
    fn bounded<R: Send + 'static>(
        &self,
        op: &'static str,
        step: u64,
        f: impl FnOnce() -> std::result::Result<R, CollectiveError> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let failed = |reason: String| TrainError::Collective {
            op,
            rank: self.shard_rank,
            step,
            reason,
        };
        if GENERATION.load(Ordering::SeqCst) != self.generation {
            // A peer given up on must not join a later session's operations.
            return Err(failed("its session has ended".into()));
        }
        std::thread::Builder::new()
            .name(format!("dynmask-collective-{}", self.rank))
            .spawn(move || {
                let _ = tx.send(f());
            })
            .map_err(|e| failed(format!("cannot start a thread: {e}")))?;
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(failed(describe(&e))),
            Err(RecvTimeoutError::Timeout) => Err(failed(format!(
                "no answer from the other peers within {:?}",
                self.timeout
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(failed("the collective panicked".into())),
        }
    }

    fn register<B: Backend>(&self, device: &B::Device) -> Result<()> {
        let (id, device) = (PeerId::from(self.rank), device.clone());
        let config = self.config.clone();
        self.bounded("register", 0, move || {
            burn_collective::register::<B>(id, device, config)
        })
    }

    fn all_reduce<B: Backend>(&self, x: Tensor<B, 1>, step: u64) -> Result<Tensor<B, 1>> {
        let id = PeerId::from(self.rank);
        let primitive = x.into_primitive().tensor();
        let summed = self.bounded("all-reduce", step, move || {
            burn_collective::all_reduce::<B>(id, primitive, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    fn finish<B: Backend>(&self, step: u64) -> Result<()> {
        let id = PeerId::from(self.rank);
        self.bounded("finish", step, move || {
            burn_collective::finish_collective::<B>(id)
        })
    }

    /// Releases every peer blocked in a collective call of this session.
    fn reset<B: Backend>(&self) {
        if GENERATION.load(Ordering::SeqCst) == self.generation {
            burn_collective::reset_collective::<B>();
        }
    }
}

/// Gradients of the parameters that take one, flattened in visiting order; a parameter
/// without a gradient on this peer contributes zeros and flag 0.
struct Flatten<'a, B: AutodiffBackend> {
    grads: Option<&'a GradientsParams>,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    flags: Vec<f64>,
    dtype: Option<DType>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let value = param.val();
        let (shape, device) = (value.shape(), value.device());
        let dtype = *self.dtype.get_or_insert(value.dtype());
        let n = shape.num_elements();
        match self
            .grads
            .and_then(|g| g.get::<B::InnerBackend, D>(param.id))
        {
            Some(g) => {
                self.parts.push(g.reshape([n]));
                self.flags.push(1.0);
            }
            None => {
                self.parts.push(Tensor::zeros([n], (&device, dtype)));
                self.flags.push(0.0);
            }
        }
    }
}

/// The summed gradients back into [`GradientsParams`], for the parameters some peer had one
/// for (as the single-device run would).
struct Unflatten<'a, B: AutodiffBackend> {
    summed: Tensor<B::InnerBackend, 1>,
    flags: &'a [f64],
    offset: usize,
    index: usize,
    grads: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    #[allow(clippy::single_range_in_vec_init)] // burn slices take one range per dimension
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let shape = param.val().shape();
        let n = shape.num_elements();
        if self.flags[self.index] > 0.0 {
            let g = self
                .summed
                .clone()
                .slice([self.offset..self.offset + n])
                .reshape(shape);
            self.grads.register::<B::InnerBackend, D>(param.id, g);
        }
        self.offset += n;
        self.index += 1;
    }
}

/// The raw bytes of every float parameter of a model, in visiting order (records would also
/// hold the parameter ids, which are not the point).
struct ParamBytes(Vec<u8>);

impl<B: Backend> ModuleVisitor<B> for ParamBytes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.extend_from_slice(param.val().into_data().as_bytes());
    }
}

/// [`ParamBytes`] of `model`: equal vectors mean bit-identical parameters.
pub(crate) fn param_bytes<B: Backend, M: Module<B>>(model: &M) -> Vec<u8> {
    let mut v = ParamBytes(vec![]);
    model.visit(&mut v);
    v.0
}

/// One peer's part of a data-parallel step; the same on every peer.
pub(crate) struct PeerStep<'a, B: AutodiffBackend, T: TrainTask<B>> {
    pub(crate) comm: &'a Comm,
    pub(crate) task: &'a mut T,
    pub(crate) model: &'a mut T::Model,
    pub(crate) optim: &'a mut Optim<B, T>,
    pub(crate) config: &'a TrainConfig,
    pub(crate) device: &'a B::Device,
}

impl<B: AutodiffBackend, T: TrainTask<B>> PeerStep<'_, B, T> {
    /// Trains this peer's shard of `batch` (the global batch of `step`), all-reduces, and
    /// applies the global update.
    #[allow(clippy::single_range_in_vec_init)] // burn slices take one range per dimension
    pub(crate) fn run(self, step: u64, batch: &T::Batch) -> Result<StepRecord> {
        let (rank, world) = (self.comm.shard_rank, self.comm.shard_world);
        let _dropout =
            mask_model::mask_attn::dropout_scope(peer_dropout_seed(self.config.seed, step, rank));
        let info = self.task.describe(batch);
        let lr = self.config.lr_at(step);
        let shard = self.task.shard(batch, rank, world).ok_or_else(|| {
            invalid(
                "peers",
                world,
                format!(
                    "1, since the `{}` task cannot be split by rows (TrainTask::shard)",
                    self.task.kind()
                ),
            )
        })?;
        let weight = if info.items > 0 {
            self.task.describe(&shard).items as f64 / info.items as f64
        } else {
            1.0 / world as f64
        };
        let adaptive = self.task.is_adaptive();
        // Where this peer's per-item losses go in the global order.
        let feedback_slots: Option<(usize, Vec<std::ops::Range<usize>>)> = if adaptive {
            let per_row = self.task.items_per_row(batch).ok_or_else(|| {
                invalid(
                    "peers",
                    world,
                    format!(
                        "1, since the adaptive `{}` task does not say how many losses each row \
                         has (TrainTask::items_per_row)",
                        self.task.kind()
                    ),
                )
            })?;
            let mut starts = Vec::with_capacity(per_row.len() + 1);
            starts.push(0);
            for n in &per_row {
                starts.push(starts.last().unwrap() + n);
            }
            let ranges = shard_rows(per_row.len(), rank, world)
                .into_iter()
                .map(|r| starts[r]..starts[r + 1])
                .collect();
            Some((*starts.last().unwrap(), ranges))
        } else {
            None
        };

        let out = self.task.forward(self.model, &shard, self.device)?;
        let (grads, loss_part, per_item) = match out {
            None => (None, 0.0, None),
            Some(out) => {
                let loss = out.loss.clone().into_scalar().elem::<f64>();
                let per_item = match (adaptive, out.per_item) {
                    (true, Some(p)) => Some(
                        p.into_data()
                            .convert::<f32>()
                            .to_vec::<f32>()
                            .map_err(|e| invalid("per_item", format!("{e:?}"), "f32 losses"))?,
                    ),
                    _ => None,
                };
                let grads =
                    GradientsParams::from_grads(out.loss.mul_scalar(weight).backward(), self.model);
                (Some(grads), loss * weight, per_item)
            }
        };

        let mut flat = Flatten::<B> {
            grads: grads.as_ref(),
            parts: vec![],
            flags: vec![],
            dtype: None,
        };
        self.model.visit(&mut flat);
        let Flatten {
            mut parts,
            flags,
            dtype,
            ..
        } = flat;
        let n_grad: usize = parts.iter().map(|p| p.dims()[0]).sum();
        let n_params = flags.len();
        let mut extras = flags;
        extras.push(loss_part);
        extras.push(if grads.is_some() { 1.0 } else { 0.0 });
        if let Some((len, ranges)) = &feedback_slots {
            let mut scattered = vec![0.0f64; *len];
            if let Some(losses) = &per_item {
                let mut k = 0;
                for range in ranges {
                    for slot in range.clone() {
                        scattered[slot] = *losses.get(k).ok_or_else(|| {
                            invalid(
                                "per_item",
                                losses.len(),
                                "one loss per item of the peer's rows",
                            )
                        })? as f64;
                        k += 1;
                    }
                }
            }
            extras.extend(scattered);
        }
        let n_extras = extras.len();
        let dtype = dtype.unwrap_or(DType::F32);
        let inner_device = self.device.clone();
        parts.push(Tensor::from_data(
            TensorData::new(extras, [n_extras]).convert_dtype(dtype),
            (&inner_device, dtype),
        ));
        drop(grads);
        let summed = self
            .comm
            .all_reduce::<B::InnerBackend>(Tensor::cat(parts, 0), step)?;

        let extras: Vec<f64> = summed
            .clone()
            .slice([n_grad..n_grad + n_extras])
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .map_err(|e| invalid("all-reduce", format!("{e:?}"), "float values"))?;
        let (flags, rest) = extras.split_at(n_params);
        let (loss, outputs, feedback) = (rest[0], rest[1], &rest[2..]);
        let mut record = StepRecord {
            step,
            epoch: info.epoch,
            loss: 0.0,
            lr,
            grad_norm: 0.0,
            items: info.items,
            tokens: info.tokens,
            digest: info.digest,
            task: info.task,
        };
        if outputs == 0.0 {
            return Ok(record); // nothing to learn from on any peer: the step counts, no update
        }
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                what: "loss".into(),
                step,
                value: loss,
            });
        }
        if adaptive {
            let losses: Vec<f32> = feedback.iter().map(|&l| l as f32).collect();
            self.task.observe(batch, &losses)?;
        }
        let mut unflat = Unflatten::<B> {
            summed,
            flags,
            offset: 0,
            index: 0,
            grads: GradientsParams::new(),
        };
        self.model.visit(&mut unflat);
        let norm = update(
            self.model,
            self.optim,
            unflat.grads,
            lr,
            self.config.grad_clip,
            step,
        )?;
        record.loss = loss;
        record.grad_norm = norm;
        Ok(record)
    }
}

/// How a peer thread ended.
struct PeerExit {
    rank: usize,
    result: std::result::Result<PeerReport, PeerFailure>,
}

struct PeerFailure {
    step: u64,
    /// Its own fault (an error or a panic), not a collective call released by another's.
    cause: bool,
    reason: String,
}

/// What a peer thread starts with (made on the learner's thread, so nothing can fail before
/// the peer registers).
pub(crate) struct PeerSetup<B: AutodiffBackend, T: TrainTask<B>> {
    pub(crate) task: T,
    pub(crate) model: T::Model,
    pub(crate) optim: Optim<B, T>,
    pub(crate) device: B::Device,
}

/// A running data-parallel session, owned by peer 0 (the learner).
pub(crate) struct Session {
    _guard: MutexGuard<'static, ()>,
    pub(crate) comm: Comm,
    commands: Vec<Sender<u64>>,
    exits: Receiver<PeerExit>,
    handles: Vec<JoinHandle<()>>,
    verify: bool,
}

impl Session {
    /// Starts peers `1..=setups.len()` on their own threads for steps `start..until`, and
    /// registers peer 0 (`device`).
    pub(crate) fn start<B: AutodiffBackend, T: TrainTask<B>>(
        setups: Vec<PeerSetup<B, T>>,
        device: &B::Device,
        train: &TrainConfig,
        options: &ParallelOptions,
        (start, until): (u64, u64),
    ) -> Result<Self> {
        let guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
        // Leftovers of a session that was given up on.
        burn_collective::reset_collective::<B::InnerBackend>();
        let world = setups.len() + 1;
        let generation = GENERATION.load(Ordering::SeqCst);
        let mut config = CollectiveConfig::default().with_num_devices(world);
        let (node_rank, nodes) = match &options.nodes {
            None => (0, 1),
            Some(n) => {
                let address = |a: &str| {
                    a.parse::<burn_communication::Address>()
                        .map_err(|e| invalid("address", a, e))
                };
                config = config
                    .with_num_nodes(n.nodes)
                    .with_global_address(address(&n.orchestrator)?)
                    .with_node_address(address(&n.node_address)?)
                    .with_data_service_port(n.data_port);
                (n.node_rank as usize, n.nodes as usize)
            }
        };
        let comm = |rank| Comm {
            rank,
            shard_rank: node_rank * world + rank,
            shard_world: nodes * world,
            config: config.clone(),
            generation,
            timeout: options.timeout,
        };
        let (exit_tx, exits) = mpsc::channel();
        let mut commands = Vec::with_capacity(world - 1);
        let mut handles = Vec::with_capacity(world - 1);
        for (i, setup) in setups.into_iter().enumerate() {
            let rank = i + 1;
            let (tx, rx) = mpsc::channel();
            commands.push(tx);
            let (comm, config, exit_tx) = (comm(rank), train.clone(), exit_tx.clone());
            let verify = options.verify_replicas;
            let handle = std::thread::Builder::new()
                .name(format!("dynmask-peer-{rank}"))
                .spawn(move || {
                    let result = run_peer(setup, comm, &config, rx, (start, until), verify);
                    let _ = exit_tx.send(PeerExit { rank, result });
                })
                .map_err(|e| invalid("peers", world, format!("threads to start ({e})")))?;
            handles.push(handle);
        }
        let session = Self {
            _guard: guard,
            comm: comm(0),
            commands,
            exits,
            handles,
            verify: options.verify_replicas,
        };
        // On failure the caller closes the session, which releases the peers.
        session.comm.register::<B::InnerBackend>(device)?;
        Ok(session)
    }

    /// Tells the peers to run `step`.
    pub(crate) fn go(&self, step: u64) -> Result<()> {
        for (i, tx) in self.commands.iter().enumerate() {
            tx.send(step).map_err(|_| TrainError::PeerLost {
                rank: i + 1,
                step,
                reason: "its thread has stopped".into(),
            })?;
        }
        Ok(())
    }

    /// Ends the session after peer 0's `result`: stops the peers, collects their reports, and
    /// names the peer at fault when one failed. With `verify`, compares every replica with
    /// peer 0's `model` and `task_state`.
    pub(crate) fn close<B: AutodiffBackend>(
        mut self,
        result: Result<()>,
        step: u64,
        reference: impl FnOnce() -> Result<(Vec<u8>, Vec<(String, Vec<u8>)>)>,
    ) -> Result<Vec<PeerReport>> {
        // Peer 0 finishes first: finishing does not wait for the others.
        let result = result.and_then(|()| self.comm.finish::<B::InnerBackend>(step));
        if result.is_err() {
            self.comm.reset::<B::InnerBackend>();
        }
        self.commands.clear(); // the peers' next wait ends: they finish
        let mut reports = Vec::new();
        let mut cause: Option<TrainError> = None;
        let mut collateral: Option<TrainError> = None;
        let mut pending = self.handles.len();
        while pending > 0 {
            match self.exits.recv_timeout(self.comm.timeout) {
                Ok(PeerExit { rank, result }) => {
                    pending -= 1;
                    match result {
                        Ok(r) => reports.push(r),
                        Err(f) => {
                            let e = TrainError::PeerLost {
                                rank,
                                step: f.step,
                                reason: f.reason,
                            };
                            if f.cause && cause.is_none() {
                                self.comm.reset::<B::InnerBackend>();
                                cause = Some(e);
                            } else if collateral.is_none() {
                                collateral = Some(e);
                            }
                        }
                    }
                }
                Err(_) => {
                    // A peer that does not stop in time is left running (detached); the
                    // generation bump below keeps it away from later sessions.
                    self.comm.reset::<B::InnerBackend>();
                    collateral.get_or_insert(TrainError::Collective {
                        op: "finish",
                        rank: 0,
                        step,
                        reason: format!(
                            "{pending} peer(s) did not stop within {:?}",
                            self.comm.timeout
                        ),
                    });
                    break;
                }
            }
        }
        if pending == 0 {
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
        GENERATION.fetch_add(1, Ordering::SeqCst);
        reports.sort_by_key(|r| r.rank);
        match (result, cause, collateral) {
            // Peer 0's own failure is the cause unless it was only released by another's.
            (Err(e @ TrainError::Collective { .. }), Some(c), _) => {
                let _ = e;
                Err(c)
            }
            (Err(e), _, _) => Err(e),
            (Ok(()), Some(c), _) | (Ok(()), None, Some(c)) => Err(c),
            (Ok(()), None, None) => {
                if self.verify {
                    let (model, state) = reference()?;
                    for r in &reports {
                        if r.model.as_deref() != Some(model.as_slice()) {
                            return Err(TrainError::ReplicaDiverged {
                                rank: r.rank,
                                step,
                                what: "model".into(),
                            });
                        }
                        if r.task_state != state {
                            let what = r
                                .task_state
                                .iter()
                                .zip(&state)
                                .find(|(a, b)| a != b)
                                .map_or("task state".to_string(), |(a, _)| a.0.clone());
                            return Err(TrainError::ReplicaDiverged {
                                rank: r.rank,
                                step,
                                what,
                            });
                        }
                    }
                }
                Ok(reports)
            }
        }
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// A peer's thread: register, then one step per command until the commands end.
fn run_peer<B: AutodiffBackend, T: TrainTask<B>>(
    setup: PeerSetup<B, T>,
    comm: Comm,
    config: &TrainConfig,
    commands: Receiver<u64>,
    (start, until): (u64, u64),
    verify: bool,
) -> std::result::Result<PeerReport, PeerFailure> {
    let mut step = start;
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<PeerReport> {
        let PeerSetup {
            mut task,
            mut model,
            mut optim,
            device,
        } = setup;
        comm.register::<B::InnerBackend>(&device)?;
        let (seed, batch_size) = (config.seed, config.batch_size);
        let mut prefetch = (!task.is_adaptive()).then(|| {
            let mut task = task.clone();
            Prefetcher::spawn(
                move |s| task.batch(seed, s, batch_size),
                start,
                until,
                config.workers,
                config.prefetch,
            )
        });
        let mut steps = 0;
        while let Ok(s) = commands.recv() {
            if s != step {
                return Err(invalid(
                    "step",
                    s,
                    format!("step {step}, the next one of this peer"),
                ));
            }
            let batch = match prefetch.as_mut() {
                Some(p) => p
                    .next_batch()
                    .map(|(b, _)| b)
                    .unwrap_or(Err(TrainError::WorkerStopped { step }))?,
                None => task.batch(seed, step, batch_size)?,
            };
            PeerStep {
                comm: &comm,
                task: &mut task,
                model: &mut model,
                optim: &mut optim,
                config,
                device: &device,
            }
            .run(step, &batch)?;
            step += 1;
            steps += 1;
        }
        drop(prefetch);
        comm.finish::<B::InnerBackend>(step)?;
        Ok(PeerReport {
            rank: comm.rank,
            steps,
            model: verify.then(|| param_bytes::<B, T::Model>(&model)),
            task_state: task.state_sections(),
        })
    }));
    let failure = match outcome {
        Ok(Ok(report)) => return Ok(report),
        Ok(Err(e @ TrainError::Collective { .. })) => PeerFailure {
            step,
            cause: false,
            reason: e.to_string(),
        },
        Ok(Err(e)) => PeerFailure {
            step,
            cause: true,
            reason: e.to_string(),
        },
        Err(panic) => PeerFailure {
            step,
            cause: true,
            reason: format!("panicked: {}", panic_text(panic.as_ref())),
        },
    };
    if failure.cause {
        comm.reset::<B::InnerBackend>(); // release peer 0 and the others at once
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_interleave_rows_and_cover_each_once() {
        assert_eq!(shard_rows(7, 0, 3), vec![0, 3, 6]);
        assert_eq!(shard_rows(7, 1, 3), vec![1, 4]);
        assert_eq!(shard_rows(7, 2, 3), vec![2, 5]);
        assert_eq!(shard_rows(2, 2, 3), Vec::<usize>::new());
        assert_eq!(shard_rows(4, 0, 1), vec![0, 1, 2, 3]);
        for (rows, world) in [(1, 1), (5, 2), (32, 4), (9, 5)] {
            let mut all: Vec<usize> = (0..world)
                .flat_map(|r| shard_rows(rows, r, world))
                .collect();
            all.sort();
            assert_eq!(all, (0..rows).collect::<Vec<_>>());
        }
    }

    #[test]
    fn peer_zero_keeps_the_single_device_dropout_key() {
        assert_eq!(peer_dropout_seed(7, 3, 0), dropout_seed(7, 3));
        let keys: std::collections::HashSet<u64> =
            (0..4).map(|r| peer_dropout_seed(7, 3, r)).collect();
        assert_eq!(keys.len(), 4);
        assert_ne!(peer_dropout_seed(7, 3, 1), peer_dropout_seed(7, 4, 1));
    }
}
