//! Worker threads that make the host batches of steps `start..end` ahead of the training thread,
//! in order. Worker `w` makes the steps `s` with `s % workers == w` on its own clone of the task;
//! the consumer reads the workers' channels round-robin, so the sequence is the same for any
//! number of workers (batches are pure functions of `(seed, step)`).

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::{Result, TrainError};

/// A batch with the wall time its worker spent making it.
pub(crate) type Made<T> = (Result<T>, f64);

/// Prefetching workers.
pub(crate) struct Prefetcher<T: Send + 'static> {
    receivers: Vec<Receiver<Made<T>>>,
    handles: Vec<JoinHandle<()>>,
    next: u64,
    end: u64,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts `workers` threads, each keeping up to `depth` batches ready; `make` is cloned
    /// into each worker and called with the step.
    pub(crate) fn spawn<F>(make: F, start: u64, end: u64, workers: usize, depth: usize) -> Self
    where
        F: FnMut(u64) -> Result<T> + Clone + Send + 'static,
    {
        let workers = workers.max(1) as u64;
        let mut receivers = Vec::with_capacity(workers as usize);
        let mut handles = Vec::with_capacity(workers as usize);
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth.max(1));
            let mut make = make.clone();
            handles.push(std::thread::spawn(move || {
                let mut step = start + (w + workers - start % workers) % workers;
                while step < end {
                    let t = Instant::now();
                    let batch = make(step);
                    let failed = batch.is_err();
                    if tx.send((batch, t.elapsed().as_secs_f64())).is_err() || failed {
                        return; // consumer gone, or nothing sensible after an error
                    }
                    step += workers;
                }
            }));
            receivers.push(rx);
        }
        Self {
            receivers,
            handles,
            next: start,
            end,
        }
    }

    /// The next step's batch, or `None` after the last.
    pub(crate) fn next_batch(&mut self) -> Option<Made<T>> {
        if self.next >= self.end {
            return None;
        }
        let step = self.next;
        let w = (step % self.receivers.len() as u64) as usize;
        self.next += 1;
        Some(
            self.receivers[w]
                .recv()
                .unwrap_or_else(|_| (Err(TrainError::WorkerStopped { step }), 0.0)),
        )
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.receivers.clear(); // unblock workers waiting to send
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_depend_on_workers_and_errors_arrive_in_place() {
        let make = |s: u64| -> Result<u64> {
            if s == 7 {
                Err(crate::error::invalid("step", s, "not 7"))
            } else {
                Ok(s * s)
            }
        };
        for workers in [1, 2, 3] {
            let mut p = Prefetcher::spawn(make, 2, 7, workers, 2);
            let got: Vec<u64> = std::iter::from_fn(|| p.next_batch())
                .map(|(b, _)| b.unwrap())
                .collect();
            assert_eq!(got, vec![4, 9, 16, 25, 36]);
        }
        let mut p = Prefetcher::spawn(make, 6, 9, 2, 2);
        assert_eq!(p.next_batch().unwrap().0.unwrap(), 36);
        assert!(p.next_batch().unwrap().0.is_err());
    }
}
