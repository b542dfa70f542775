//! The backends a binary can run on, named once: every command and example takes `--backend`
//! and `--device` and calls [`dispatch`], which instantiates the generic code for the chosen
//! backend.
//!
//! - `flex` (default): burn-flex, burn's gemm-based SIMD CPU backend; the fastest on CPU here
//!   (docs/benchmarks.md).
//! - `ndarray`: burn's NdArray CPU backend, the reference the design names.
//! - `wgpu`: burn's wgpu backend without operation fusion (a block-sparse attention forward is
//!   wrong under `Autodiff<Fusion<Wgpu>>` in burn 0.21; see docs/architecture.md). On a machine
//!   without a GPU it runs on Mesa's software Vulkan driver (lavapipe) when installed.

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Flex, NdArray};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// NdArray (f32) with autodiff.
pub type NdArrayBackend = Autodiff<NdArray<f32>>;
/// burn-flex (f32) with autodiff.
pub type FlexBackend = Autodiff<Flex>;
/// wgpu without fusion, with autodiff.
pub type WgpuBackend = Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>;

/// A backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn-flex on the CPU (gemm, SIMD, threads).
    #[default]
    Flex,
    /// burn's NdArray on the CPU.
    Ndarray,
    /// burn's wgpu backend (GPU, or lavapipe on the CPU), without fusion.
    Wgpu,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
        })
    }
}

/// Why a backend could not be started.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The CPU backends have one device.
    #[error("`--device {index}` is invalid for the {backend} backend: it has one device, 0")]
    NoSuchCpuDevice {
        /// The backend.
        backend: BackendKind,
        /// The index asked for.
        index: usize,
    },
    /// wgpu found no usable adapter (no GPU, no Vulkan driver).
    #[error(
        "the wgpu backend found no usable graphics adapter{device} ({reason}); run on the CPU with \
         `--backend flex` or `--backend ndarray`, or install a Vulkan driver (on Debian: \
         `apt-get install mesa-vulkan-drivers libvulkan1`)"
    )]
    NoAdapter {
        /// The device asked for, if any.
        device: String,
        /// What wgpu said.
        reason: String,
    },
}

/// Generic code to run on the chosen backend.
pub trait WithBackend {
    /// What it returns.
    type Output;
    /// Runs on backend `B` with `device`.
    fn run<B: AutodiffBackend>(self, backend: BackendKind, device: B::Device) -> Self::Output;
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown failure".into())
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Starts the wgpu device (wgpu panics when no adapter exists; the panic is caught, silenced
/// and turned into [`BackendError::NoAdapter`]).
fn probe_wgpu(device: &WgpuDevice, index: Option<usize>) -> Result<(), BackendError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = catch_unwind(AssertUnwindSafe(|| {
        type B = CubeBackend<WgpuRuntime, f32, i32, u32>;
        Tensor::<B, 1>::zeros([1], device).into_data()
    }));
    std::panic::set_hook(hook);
    probe.map(|_| ()).map_err(|e| BackendError::NoAdapter {
        device: index.map_or(String::new(), |i| format!(" for --device {i}")),
        reason: panic_message(e.as_ref()),
    })
}

/// Generic code to run on the chosen backend with data-parallel peers.
pub trait WithPeers {
    /// What it returns.
    type Output;
    /// Runs on backend `B`: peer 0 on `device`, peers 1, 2, ... on `peers`.
    fn run<B: AutodiffBackend>(
        self,
        backend: BackendKind,
        device: B::Device,
        peers: Vec<B::Device>,
    ) -> Self::Output;
}

/// Runs `job` on `backend` (device `index`, default 0 / the default GPU).
pub fn dispatch<W: WithBackend>(
    backend: BackendKind,
    index: Option<usize>,
    job: W,
) -> Result<W::Output, BackendError> {
    struct One<W>(W);
    impl<W: WithBackend> WithPeers for One<W> {
        type Output = W::Output;
        fn run<B: AutodiffBackend>(
            self,
            backend: BackendKind,
            device: B::Device,
            _: Vec<B::Device>,
        ) -> W::Output {
            self.0.run::<B>(backend, device)
        }
    }
    dispatch_peers(backend, index, &[], One(job))
}

/// Runs `job` on `backend` with peer 0 on device `index` (default 0 / the default GPU) and one
/// more data-parallel peer per entry of `peers` (device indices; the CPU backends have one
/// device, 0, which several peers share).
pub fn dispatch_peers<W: WithPeers>(
    backend: BackendKind,
    index: Option<usize>,
    peers: &[usize],
    job: W,
) -> Result<W::Output, BackendError> {
    let cpu = |b| match index
        .into_iter()
        .chain(peers.iter().copied())
        .find(|&i| i != 0)
    {
        None => Ok(peers.len()),
        Some(i) => Err(BackendError::NoSuchCpuDevice {
            backend: b,
            index: i,
        }),
    };
    Ok(match backend {
        BackendKind::Flex => {
            let n = cpu(backend)?;
            job.run::<FlexBackend>(backend, Default::default(), vec![Default::default(); n])
        }
        BackendKind::Ndarray => {
            let n = cpu(backend)?;
            job.run::<NdArrayBackend>(backend, Default::default(), vec![Default::default(); n])
        }
        BackendKind::Wgpu => {
            let device = index.map_or(WgpuDevice::DefaultDevice, WgpuDevice::DiscreteGpu);
            probe_wgpu(&device, index)?;
            let mut others = Vec::with_capacity(peers.len());
            for &i in peers {
                let d = WgpuDevice::DiscreteGpu(i);
                probe_wgpu(&d, Some(i))?;
                others.push(d);
            }
            job.run::<WgpuBackend>(backend, device, others)
        }
    })
}
