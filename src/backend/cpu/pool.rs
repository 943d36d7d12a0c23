//! A persistent worker pool for many tiny parallel operations.
//!
//! A 135M-parameter decode step is ~150 parallel ops of 5–50 µs each. A general-purpose pool
//! (rayon's `install` + `par_iter`) put a thread to sleep and woke it for each of them: ~40% of
//! decode time went to `sched_yield`, futex waits and wake-ups (perf, see PERFORMANCE.md). Here
//! the workers stay awake, spinning on one atomic word, for [`SPIN`] after each job, and only
//! then park on a condition variable; the caller runs tasks too and spins until the last one
//! finishes. Publishing a job is one store; claiming a task is one compare-and-swap.
//!
//! Tasks are claimed dynamically (`0..n_tasks`, each exactly once), so a slow-to-wake worker
//! costs nothing: the caller simply claims more.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker keeps spinning before it parks. Longer than the gap between two ops
/// of a forward pass (a few µs) and than a sampling step; short enough that an idle process
/// gives its cores back almost at once.
const SPIN: Duration = Duration::from_millis(2);

/// The job being run: a borrowed closure with its lifetime erased (see [`WorkerPool::run`]).
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// `epoch << 32 | next task index`: bumping the epoch publishes a job, and a claim is a
    /// compare-and-swap that fails if the job changed — so a late worker can never run a task
    /// of a job that has already finished.
    state: AtomicU64,
    /// Tasks in the current job.
    n_tasks: AtomicUsize,
    /// Tasks of the current job not yet finished.
    pending: AtomicUsize,
    /// Written only by the caller, before the epoch that publishes it; read only by a thread
    /// holding a claimed, unfinished task of that epoch (so the caller is still waiting).
    job: UnsafeCell<Option<Job>>,
    /// The first panic of the current job, re-raised in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is the only non-`Sync` field; it is written by the one caller of `run` (which
// holds `&mut`-like exclusivity through `run_lock`) only while no task of any epoch is claimed,
// and read by workers only while they hold a claimed task of the epoch that published it (see
// `Shared::job`). The closure it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under the same protocol.
unsafe impl Send for Shared {}

const INDEX_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

impl Shared {
    /// Claims and runs tasks of epoch `epoch` until none is left.
    fn work(&self, epoch: u64) {
        loop {
            let s = self.state.load(Acquire);
            let index = (s & INDEX_MASK) as usize;
            if s >> INDEX_BITS != epoch || index >= self.n_tasks.load(Acquire) {
                return;
            }
            if self.state.compare_exchange_weak(s, s + 1, AcqRel, Relaxed).is_err() {
                continue;
            }
            // We hold the unfinished task `index` of `epoch`, so the caller that published this
            // job is still inside `run`, waiting for `pending` to reach 0: the job slot holds
            // its closure and the closure is alive.
            // SAFETY: see the comment above.
            let job = unsafe { (*self.job.get()).expect("published with the epoch") };
            // SAFETY: as above — the pointee outlives this call.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index) }));
            if let Err(p) = result {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
            }
            self.pending.fetch_sub(1, AcqRel);
        }
    }

    fn worker_loop(&self) {
        let mut seen = self.state.load(Acquire) >> INDEX_BITS;
        loop {
            let epoch = self.wait_for_new_epoch(seen);
            if self.shutdown.load(Acquire) {
                return;
            }
            seen = epoch;
            self.work(epoch);
        }
    }

    /// Spins for [`SPIN`], then parks, until the epoch differs from `seen` or shutdown.
    fn wait_for_new_epoch(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = self.state.load(Acquire) >> INDEX_BITS;
            if epoch != seen || self.shutdown.load(Relaxed) {
                return epoch;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sleepers.fetch_add(1, SeqCst);
            loop {
                let epoch = self.state.load(SeqCst) >> INDEX_BITS;
                if epoch != seen || self.shutdown.load(SeqCst) {
                    self.sleepers.fetch_sub(1, SeqCst);
                    return epoch;
                }
                guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn wake_sleepers(&self) {
        if self.sleepers.load(SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }
}

/// `threads − 1` spinning workers plus the calling thread.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time (a `Cpu` may be shared between threads).
    run_lock: Mutex<()>,
}

impl WorkerPool {
    /// A pool that runs jobs on `threads` threads: the caller and `threads − 1` workers.
    pub fn new(threads: usize) -> std::io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            n_tasks: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panic: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut pool = WorkerPool { shared, workers: vec![], run_lock: Mutex::new(()) };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            // On error, dropping `pool` stops the workers already started.
            let handle = std::thread::Builder::new().name(format!("sparq-{i}")).spawn(move || shared.worker_loop())?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Threads that run a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(0) … task(n_tasks − 1)`, each exactly once, spread over the pool and the
    /// calling thread; returns when all have finished. A panic in a task is re-raised here
    /// after every task has finished.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if n_tasks <= 1 || self.workers.is_empty() {
            (0..n_tasks).for_each(task);
            return;
        }
        let _one_job = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let epoch = ((s.state.load(Relaxed) >> INDEX_BITS) + 1) & INDEX_MASK;
        // Lifetime erasure: the pointer is only dereferenced by threads holding a claimed,
        // unfinished task of this epoch, and we do not return (or unwind: tasks' panics are
        // caught) before `pending` reaches 0, i.e. before every claimed task has finished.
        // SAFETY: see the comment above.
        let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(task) };
        // No task of any epoch is claimed now (the previous job's `pending` reached 0 and stale
        // claims fail on the epoch), so no thread reads the slot while we write it.
        // SAFETY: see the comment above.
        unsafe { *s.job.get() = Some(job) };
        s.n_tasks.store(n_tasks, Relaxed);
        s.pending.store(n_tasks, Relaxed);
        s.state.store(epoch << INDEX_BITS, SeqCst);
        s.wake_sleepers();
        s.work(epoch);
        let mut spins = 0u32;
        while s.pending.load(Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if let Some(p) = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(p);
        }
    }

    /// Calls `f(i, &mut items[i])` for every item, spread over the pool.
    pub fn for_each_mut<T: Send>(&self, items: &mut [T], f: &(dyn Fn(usize, &mut T) + Sync)) {
        let base = SendPtr(items.as_mut_ptr());
        let len = items.len();
        self.run(len, &|i| {
            assert!(i < len);
            // `run` calls each index exactly once, so the `&mut` references are disjoint;
            // SAFETY: and `items` is mutably borrowed for the whole call.
            f(i, unsafe { &mut *base.get().add(i) })
        });
    }
}

/// A raw pointer that may cross threads (used only as [`WorkerPool::for_each_mut`] explains).
struct SendPtr<T>(*mut T);
// SAFETY: only dereferenced at distinct indices by `for_each_mut`, whose items are `Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = WorkerPool::new(3).unwrap();
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "n = {n}");
        }
    }

    #[test]
    fn many_back_to_back_jobs_and_parked_workers() {
        let pool = WorkerPool::new(2).unwrap();
        let total = AtomicUsize::new(0);
        for round in 0..20_000 {
            pool.run(3, &|i| {
                total.fetch_add(i + 1, Relaxed);
            });
            if round == 10_000 {
                std::thread::sleep(SPIN * 3); // the worker parks; the next job must wake it
            }
        }
        assert_eq!(total.load(Relaxed), 20_000 * 6);
    }

    #[test]
    fn for_each_mut_hands_out_disjoint_items() {
        let pool = WorkerPool::new(2).unwrap();
        let mut v = vec![0usize; 513];
        pool.for_each_mut(&mut v, &|i, x| *x += i);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i));
    }

    #[test]
    fn a_panicking_task_is_reraised_after_the_job_and_the_pool_survives() {
        let pool = WorkerPool::new(2).unwrap();
        let done = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| {
                if i == 5 {
                    panic!("task 5");
                }
                done.fetch_add(1, Relaxed);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Relaxed), 7);
        let after = AtomicUsize::new(0);
        pool.run(4, &|_| {
            after.fetch_add(1, Relaxed);
        });
        assert_eq!(after.load(Relaxed), 4);
    }

    #[test]
    fn shared_between_callers() {
        let pool = WorkerPool::new(2).unwrap();
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..500 {
                        pool.run(4, &|_| {
                            total.fetch_add(1, Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Relaxed), 3 * 500 * 4);
    }
}
