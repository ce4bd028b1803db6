//! Background CPU: the threads bulk signature work runs on, at a lower
//! scheduling priority than everything else in the process.
//!
//! A draining backlog keeps both cores busy signing (intake), checking
//! envelope signatures (receiver) and checking receipts (origin). Urgent
//! work needs the same cores for a few milliseconds at a time: the async
//! threads that carry it, and the database writer threads that commit it.
//! Bulk signature work done on tokio's blocking pool competes with them as
//! an equal, so an urgent report's every step waits behind whole batches of
//! signature checks. Here the same work runs on a few threads at a lower
//! priority (`nice` +10: the kernel gives them about a tenth of a core's
//! share against a normal thread that wants it, and everything when
//! nothing else does), so urgent work is scheduled first and bulk work uses
//! whatever is left. Urgent work keeps using `spawn_blocking`.
//!
//! One pool per process (the bench runs many nodes in one process; they
//! share it), started on first use. A job that panics answers `Err` and the
//! thread goes on.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// How much lower than the rest of the process the pool's threads run
/// (added to the process's `nice` value; 19 is the lowest priority).
pub const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("alertrelay-bulk-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only to take one job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a background thread");
            }
        }
        Pool {
            jobs: Mutex::new(tx),
        }
    })
}

/// Lowers the calling thread's scheduling priority by `NICENESS`. On Linux
/// `setpriority(PRIO_PROCESS, tid)` applies to one thread; raising one's
/// own niceness needs no privilege. Elsewhere, or if refused, the thread
/// runs at normal priority (correct, only without the preference).
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                (now + NICENESS).min(19),
            )
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "background thread keeps normal priority"
            );
        }
    }
}

/// The job could not be run to its end (it panicked, or the pool is gone).
#[derive(Debug, thiserror::Error)]
#[error("background job failed")]
pub struct Failed;

/// Runs `f` on a low-priority background thread and waits for its answer.
/// For bulk work only: anything an urgent report waits on uses
/// `tokio::task::spawn_blocking`.
pub async fn run<F, T>(f: F) -> Result<T, Failed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // Nobody waits for it any more (the caller was cancelled).
        if tx.is_closed() {
            return;
        }
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if let Ok(answer) = answer {
            let _ = tx.send(answer);
        }
    });
    let sent = pool()
        .jobs
        .lock()
        .map_err(|_| Failed)
        .and_then(|jobs| jobs.send(job).map_err(|_| Failed));
    sent?;
    rx.await.map_err(|_| Failed)
}

/// Runs `f` at normal priority when `urgent`, on the background pool
/// otherwise.
pub async fn run_for<F, T>(urgent: bool, f: F) -> Result<T, Failed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if urgent {
        tokio::task::spawn_blocking(f).await.map_err(|_| Failed)
    } else {
        run(f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's niceness, from `/proc/thread-self/stat` (field
    /// 19, after the parenthesised command name).
    #[cfg(target_os = "linux")]
    fn niceness() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn jobs_run_on_threads_of_lower_priority_and_survive_a_panic() {
        let name = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("alertrelay-bulk-"));
        #[cfg(target_os = "linux")]
        {
            let there = run(niceness).await.unwrap();
            let here = niceness();
            assert_eq!(there, (here + NICENESS).min(19), "pool thread priority");
            let urgent = run_for(true, niceness).await.unwrap();
            assert_eq!(urgent, here, "urgent work keeps normal priority");
        }
        assert!(run(|| panic!("boom")).await.is_err());
        // The pool still answers after a job panicked.
        for i in 0..8 {
            assert_eq!(run(move || i * 2).await.unwrap(), i * 2);
        }
        assert_eq!(run_for(true, || 7).await.unwrap(), 7);
    }
}
