//! The journal's writer: a thread of its own, at the lowest CPU priority, that runs the
//! embedded store's commits and syncs for the sink chain.
//!
//! A commit of a few hundred events holds a core for up to a millisecond (redb's page
//! management). On the blocking pool, at normal priority, a call whose reply was ready
//! could wait for that core. Unary `Score` p99 at half of peak on two cores (`cargo
//! bench --bench grpc grpc/unary_score`, five runs alternated with the blocking-pool
//! build): 0.53-0.88 ms, median 0.68, against 0.79-5.9 ms, median 1.36. Nice 19
//! instead of `SCHED_IDLE` helped less (median 1.07 against 0.80 ms over seven
//! alternated pairs): an idle-policy thread gives up its core to whatever else wakes.
//! The batch ratio did not move.
//!
//! The journal still gets every moment nothing else wants; if it falls behind, the
//! queue's bound holds back intake until it catches up, which frees the cores for it,
//! so it is delayed, never starved for good. (Beside a busy process outside rcfd's own
//! cgroup it gets little: run rcfd in a container or a systemd unit, where the policy
//! only ranks rcfd's own threads.)

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The writer thread ended or the job panicked, so the job's result never came.
#[derive(Debug, thiserror::Error)]
#[error("the journal's writer thread did not finish the write (it panicked or stopped)")]
pub struct WriterGone;

/// Runs jobs one at a time, in order, on the writer thread; the thread ends when this
/// is dropped, after the jobs already sent.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("rcfd-journal".into()).spawn(move || {
            lower_priority();
            for job in queue {
                // A job that panics fails its own call (its reply is dropped), not the writer.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
        Ok(Writer { jobs })
    }

    /// Runs `job` on the writer thread and waits for its result.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, WriterGone> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(job());
            }))
            .map_err(|_| WriterGone)?;
        result.await.map_err(|_| WriterGone)
    }
}

/// `SCHED_IDLE` for the calling thread. Linux sets the policy per thread; elsewhere the
/// writer keeps normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call, which only reads it; `0` names the calling thread.
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "could not lower the journal writer's priority; commits may delay replies");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_at_low_priority_and_a_panic_fails_only_its_own_job() {
        let writer = Writer::start().expect("thread");
        let first = writer.run(|| 1).await.expect("ran");
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sched_getscheduler only reads its argument; `0` names the calling thread.
            let policy = writer.run(|| unsafe { libc::sched_getscheduler(0) }).await.expect("ran");
            assert_eq!(policy, libc::SCHED_IDLE, "the writer runs at the lowest priority");
        }
        let panicked = writer.run(|| -> u32 { panic!("a failing write") }).await;
        assert!(panicked.is_err(), "a panicking job reports that its result never came");
        let after = writer.run(|| 2).await.expect("the writer survives a panicking job");
        assert_eq!((first, after), (1, 2));
    }
}
