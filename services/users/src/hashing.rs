//! Password hashing on a bounded pool, so a burst of sign-ups cannot exhaust memory.
//!
//! An argon2id hash at the crate's default cost fills 19 MiB of memory blocks and keeps a core
//! busy for tens of milliseconds. Hashing each request on tokio's blocking pool (up to 512
//! threads, each allocating its own 19 MiB) let 200 concurrent sign-ups take the process to
//! 5.6 GB, and glibc kept most of it after the burst.
//!
//! The model: [`HashLimits::workers`] OS threads (about one per core), each owning one set of
//! memory blocks, allocated on its first hash and reused by every later one
//! (`Argon2::hash_password_into_with_memory`); in front of them a queue that holds at most
//! [`HashLimits::queue`] waiting passwords. Submitting to a full queue fails at once and the
//! producer answers `503` with `Retry-After`. Memory for hashing is therefore bounded by
//! construction, `workers × m_cost` KiB plus `queue` passwords of at most 1 KiB, however many
//! requests arrive. A worker idle for [`KEEP_MEMORY`] frees its blocks, so the memory goes
//! back after a burst: a block is one allocation far above glibc's mmap threshold, so freeing
//! it unmaps it.
//!
//! Threads: the workers are plain threads blocked on the queue; the async request handler
//! waits on a oneshot channel for its hash. Dropping the pool (the service stopped) closes the
//! queue and the workers finish their current job and exit. A job whose requester went away
//! (the client disconnected) is skipped, not hashed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

/// How long a worker keeps its memory blocks without a job before it frees them.
pub const KEEP_MEMORY: Duration = Duration::from_secs(10);

/// How much hashing may happen at once and how much may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashLimits {
    /// Hashes computed at once, each on its own thread with its own memory. At least 1.
    pub workers: usize,
    /// Passwords waiting for a worker; one more is refused (503). 0 refuses a password unless a
    /// worker is idle at that moment.
    pub queue: usize,
    /// The argon2id cost. The default is the crate's (19 MiB, 2 passes, 1 lane), OWASP's
    /// minimum recommendation; hashes record their parameters, so a change applies to new
    /// hashes only.
    pub params: Params,
}

impl Default for HashLimits {
    /// One worker per core, and 16 waiting per worker: a full queue is about 16 hash times of
    /// waiting (well under a second at the default cost), longer than which a client is better
    /// told to come back.
    fn default() -> HashLimits {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        HashLimits {
            workers,
            queue: 16 * workers,
            params: Params::DEFAULT,
        }
    }
}

/// Why a password was not hashed.
#[derive(Debug)]
pub(crate) enum HashError {
    /// The queue is full: try again after about this long.
    Busy(Duration),
    /// The hasher failed or is gone: a fault of ours.
    Failed(String),
}

struct Job {
    password: String,
    reply: oneshot::Sender<Result<String, password_hash::Error>>,
}

/// The pool. Cheap to share behind an `Arc`; dropping the last handle stops the workers.
pub(crate) struct HashPool {
    jobs: Sender<Job>,
    workers: usize,
    queue: usize,
    /// Mean time of one hash, in microseconds (an exponential moving average), for
    /// `Retry-After`.
    mean_micros: Arc<AtomicU64>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl HashPool {
    /// Starts `limits.workers` threads (named `users-hash-N`).
    pub(crate) fn start(limits: &HashLimits) -> std::io::Result<HashPool> {
        let (pool, receiver) = HashPool::unstarted(limits);
        for n in 0..pool.workers {
            let receiver = receiver.clone();
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, limits.params.clone());
            let mean = pool.mean_micros.clone();
            std::thread::Builder::new()
                .name(format!("users-hash-{n}"))
                .spawn(move || work(&receiver, &argon, &mean))?;
        }
        Ok(pool)
    }

    /// The pool and its queue's receiving end, with no worker taking jobs yet.
    fn unstarted(limits: &HashLimits) -> (HashPool, Receiver<Job>) {
        // A multi-consumer channel, so each worker waits (and times out) on its own.
        let (jobs, receiver) = crossbeam_channel::bounded(limits.queue);
        let pool = HashPool {
            jobs,
            workers: limits.workers.max(1),
            queue: limits.queue,
            // A first guess until hashes are timed: 50 ms, about one default-cost hash.
            mean_micros: Arc::new(AtomicU64::new(50_000)),
        };
        (pool, receiver)
    }

    /// The PHC string of `password`'s argon2id hash with a random salt; [`HashError::Busy`] at
    /// once if the queue is full.
    pub(crate) async fn hash(&self, password: String) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job { password, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Busy(self.retry_after())),
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Failed("the hashing workers stopped".into()));
            }
        }
        match answer.await {
            Ok(Ok(hash)) => Ok(hash),
            Ok(Err(e)) => Err(HashError::Failed(e.to_string())),
            Err(_) => Err(HashError::Failed("a hashing worker stopped".into())),
        }
    }

    /// About how long until the queue has room: the time the workers take to go through a full
    /// queue, rounded up to whole seconds (`Retry-After` has no finer unit).
    fn retry_after(&self) -> Duration {
        let mean = Duration::from_micros(self.mean_micros.load(Ordering::Relaxed));
        let drain = mean * u32::try_from(self.queue + self.workers).unwrap_or(u32::MAX)
            / u32::try_from(self.workers).unwrap_or(1);
        Duration::from_secs(drain.as_secs_f64().ceil().clamp(1.0, 60.0) as u64)
    }
}

/// One worker: takes jobs until the pool is dropped, hashing in the same memory each time and
/// freeing it when idle for [`KEEP_MEMORY`].
fn work(receiver: &Receiver<Job>, argon: &Argon2<'_>, mean_micros: &AtomicU64) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = if memory.is_empty() {
            receiver.recv().ok()
        } else {
            match receiver.recv_timeout(KEEP_MEMORY) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    memory = Vec::new();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(job) = job else {
            return;
        };
        if job.reply.is_closed() {
            continue;
        }
        if memory.is_empty() {
            memory = vec![Block::default(); argon.params().block_count()];
        }
        let started = Instant::now();
        let hash = hash_with(argon, job.password.as_bytes(), &mut memory);
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Moving average over about the last eight hashes; racing updates lose a sample, which
        // does not matter for an estimate.
        let old = mean_micros.load(Ordering::Relaxed);
        mean_micros.store(old - old / 8 + took / 8, Ordering::Relaxed);
        let _ = job.reply.send(hash);
    }
}

/// What `PasswordHasher::hash_password` makes, with the memory blocks supplied by the caller.
fn hash_with(
    argon: &Argon2<'_>,
    password: &[u8],
    memory: &mut [Block],
) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes)?;
    let len = argon
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        Ok(argon.hash_password_into_with_memory(password, raw_salt, out, &mut *memory)?)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    /// A cheap cost, so tests do not wait on hashing.
    fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_look_like_the_crates_own() {
        let pool = HashPool::start(&HashLimits::default()).unwrap();
        let first = pool.hash("correct horse".into()).await.unwrap();
        // The second hash reuses the worker's memory: it must be just as right.
        let second = pool.hash("correct horse".into()).await.unwrap();
        assert_ne!(first, second, "a fresh salt each time");
        for hash in [&first, &second] {
            assert!(
                hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{hash}"
            );
            let parsed = PasswordHash::new(hash).unwrap();
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .unwrap();
            assert!(
                Argon2::default()
                    .verify_password(b"wrong horse", &parsed)
                    .is_err()
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_with_a_retry_time() {
        let limits = HashLimits {
            workers: 1,
            queue: 2,
            params: cheap(),
        };
        // No worker yet: what is submitted stays in the queue until the test starts one.
        let (pool, receiver) = HashPool::unstarted(&limits);
        let mut waiting: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|p| Box::pin(pool.hash(p.to_owned())))
            .collect();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for job in &mut waiting {
            // The first poll queues the job, then waits for its hash.
            assert!(job.as_mut().poll(&mut cx).is_pending());
        }
        match pool.hash("third".into()).await {
            Err(HashError::Busy(retry)) => assert_eq!(retry, Duration::from_secs(1)),
            other => panic!("a third password must be refused, not {other:?}"),
        }
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, cheap());
        let mean = pool.mean_micros.clone();
        std::thread::spawn(move || work(&receiver, &argon, &mean));
        for (job, password) in waiting.into_iter().zip(["first", "second"]) {
            let hash = job.await.unwrap();
            let parsed = PasswordHash::new(&hash).unwrap();
            Argon2::new(Algorithm::Argon2id, Version::V0x13, cheap())
                .verify_password(password.as_bytes(), &parsed)
                .unwrap();
        }
        // Room again.
        assert!(pool.hash("fourth".into()).await.is_ok());
    }
}
