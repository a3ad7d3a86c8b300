//! The engine interface: one channel's 8 kHz samples in, time-aligned phrases out.
//!
//! [`Engine`] is asynchronous and object-safe (engines are chosen by configuration and held
//! as `Arc<dyn Engine>`). An engine that computes on the CPU (PocketSphinx) implements the
//! blocking [`BlockingEngine`] instead and runs on a [`WorkerPool`]: dedicated threads at the
//! lowest CPU priority, so transcription only takes CPU time the call path leaves idle and
//! never occupies tokio's workers or its blocking pool (which the recorder's file work uses).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Phrase, TranscriptError};

/// A boxed future, so that [`Engine`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One channel to transcribe.
#[derive(Debug, Clone)]
pub struct Request {
    /// 8 kHz 16-bit mono samples.
    pub samples: Arc<[i16]>,
    /// BCP 47 language tag (`en`, `en-US`, `de`...).
    pub language: String,
    /// Give up after this long (the engine answers [`TranscriptError::Timeout`]).
    pub timeout: Duration,
}

/// A speech recogniser behind tapir's transcripts.
pub trait Engine: Send + Sync + Debug {
    /// The name stored with each transcript (`pocketsphinx`, `http`, `none`).
    fn name(&self) -> &str;

    /// Transcribes one channel. Phrases are ordered by start, times in ms from the start of
    /// the samples.
    fn transcribe(&self, request: Request) -> BoxFuture<'_, Result<Vec<Phrase>, TranscriptError>>;

    /// CPU time this engine has spent on this node so far, when it computes here (the
    /// offline engine's threads); `None` for engines that compute elsewhere.
    fn cpu_time(&self) -> Option<Duration> {
        None
    }
}

/// A recogniser that computes on the calling thread.
pub trait BlockingEngine: Send + Sync + Debug + 'static {
    fn name(&self) -> &str;

    /// Transcribes one channel, giving up with [`TranscriptError::Timeout`] once `deadline`
    /// has passed (checked between chunks of work).
    fn transcribe_blocking(
        &self,
        samples: &[i16],
        language: &str,
        deadline: Instant,
    ) -> Result<Vec<Phrase>, TranscriptError>;
}

/// The `none` engine: transcribes nothing (every channel has no phrases).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEngine;

impl Engine for NoEngine {
    fn name(&self) -> &str {
        "none"
    }

    fn transcribe(&self, _: Request) -> BoxFuture<'_, Result<Vec<Phrase>, TranscriptError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Phrase>, TranscriptError>>;

struct Task {
    request: Request,
    deadline: Instant,
    reply: Reply,
}

/// Runs a [`BlockingEngine`] on `threads` dedicated threads at idle CPU priority (Linux
/// `SCHED_IDLE`, else `nice 19`), as an [`Engine`]. Requests beyond the number of threads
/// wait their turn in a queue; the job scheduler above keeps that queue short.
pub struct WorkerPool<E: BlockingEngine> {
    engine: Arc<E>,
    /// CPU nanoseconds the workers spent in the engine.
    cpu_ns: Arc<AtomicU64>,
    queue: Mutex<Option<mpsc::Sender<Task>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl<E: BlockingEngine> Debug for WorkerPool<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// The CPU priority of a [`WorkerPool`]'s threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Linux `SCHED_IDLE` (else `nice 19`): runs only on CPU time nothing else wants. The
    /// default, so that transcription never competes with the call path.
    #[default]
    Idle,
    /// `nice 19`: a small share (about 1.5 %) of a contended CPU, never starved outright.
    Low,
    /// The process's own priority (tests that measure recognition, not scheduling).
    Normal,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Lowers the calling thread's CPU priority; failures are logged, not fatal (a container
/// may forbid it).
fn lower_priority(priority: Priority) {
    if priority == Priority::Normal {
        return;
    }
    #[cfg(target_os = "linux")]
    if priority == Priority::Idle {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        if idle {
            return;
        }
    }
    // SAFETY: plain libc call on the calling thread (who = 0), no pointers involved.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
    if !niced {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "transcription worker runs at normal CPU priority"
        );
    }
}

impl<E: BlockingEngine> WorkerPool<E> {
    /// Starts `threads` (at least one) workers named `transcribe-N` at [`Priority::Idle`].
    pub fn new(engine: E, threads: usize) -> Self {
        Self::with_priority(engine, threads, Priority::Idle)
    }

    /// [`WorkerPool::new`] at the given priority.
    pub fn with_priority(engine: E, threads: usize, priority: Priority) -> Self {
        let engine = Arc::new(engine);
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let engine = engine.clone();
                let cpu_ns = cpu_ns.clone();
                std::thread::Builder::new()
                    .name(format!("transcribe-{i}"))
                    .spawn(move || {
                        lower_priority(priority);
                        loop {
                            // The lock is held only to take one task.
                            let task = match rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(task) = task else { return };
                            if task.reply.is_closed() {
                                continue;
                            }
                            let result = if Instant::now() >= task.deadline {
                                Err(TranscriptError::Timeout(task.request.timeout))
                            } else {
                                let c0 = thread_cpu();
                                let r = engine.transcribe_blocking(
                                    &task.request.samples,
                                    &task.request.language,
                                    task.deadline,
                                );
                                let spent = thread_cpu().saturating_sub(c0);
                                cpu_ns.fetch_add(
                                    u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
                                    Ordering::Relaxed,
                                );
                                r
                            };
                            let _ = task.reply.send(result);
                        }
                    })
                    .expect("spawning a transcription thread")
            })
            .collect();
        WorkerPool {
            engine,
            cpu_ns,
            queue: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
        }
    }

    /// The engine the workers run.
    pub fn engine(&self) -> &E {
        &self.engine
    }
}

impl<E: BlockingEngine> Drop for WorkerPool<E> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        // Workers end once the queue is closed and their current task is done; they are not
        // joined here, so dropping the pool never blocks an async caller.
        if let Ok(mut t) = self.threads.lock() {
            t.clear();
        }
    }
}

impl<E: BlockingEngine> Engine for WorkerPool<E> {
    fn name(&self) -> &str {
        self.engine.name()
    }

    fn cpu_time(&self) -> Option<Duration> {
        Some(Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed)))
    }

    fn transcribe(&self, request: Request) -> BoxFuture<'_, Result<Vec<Phrase>, TranscriptError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            let deadline = Instant::now() + timeout;
            let (reply, answer) = tokio::sync::oneshot::channel();
            let sent = self.queue.lock().ok().and_then(|q| {
                q.as_ref().map(|q| {
                    q.send(Task {
                        request,
                        deadline,
                        reply,
                    })
                })
            });
            if !matches!(sent, Some(Ok(()))) {
                return Err(TranscriptError::Engine("the worker pool is stopped".into()));
            }
            // The worker checks the same deadline; waiting a little longer lets it say so
            // itself (and release its decoder) rather than leave it running unobserved.
            match tokio::time::timeout(timeout + Duration::from_secs(1), answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(TranscriptError::Engine(
                    "a transcription worker stopped".into(),
                )),
                Err(_) => Err(TranscriptError::Timeout(timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Word;

    #[derive(Debug)]
    struct Slow;

    impl BlockingEngine for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn transcribe_blocking(
            &self,
            samples: &[i16],
            _: &str,
            deadline: Instant,
        ) -> Result<Vec<Phrase>, TranscriptError> {
            // "Works" 10 ms per sample, checking the deadline as a real engine does.
            for _ in samples {
                if Instant::now() >= deadline {
                    return Err(TranscriptError::Timeout(Duration::ZERO));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(vec![Phrase {
                start_ms: 0,
                end_ms: samples.len() as u64,
                text: "done".into(),
                words: vec![Word {
                    start_ms: 0,
                    end_ms: 1,
                    text: "done".into(),
                    confidence: None,
                }],
            }])
        }
    }

    fn request(n: usize, timeout_ms: u64) -> Request {
        Request {
            samples: vec![0i16; n].into(),
            language: "en".into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn the_pool_answers_and_times_out() {
        // Normal priority: this measures the pool, not the scheduler; idle threads on a machine
        // busy with builds would wait for a free core.
        let pool = WorkerPool::with_priority(Slow, 2, Priority::Normal);
        assert_eq!(pool.name(), "slow");
        let ok = pool.transcribe(request(3, 5000)).await.unwrap();
        assert_eq!(ok[0].end_ms, 3);
        // Sleeping costs (almost) no CPU, but the clock is read.
        assert!(pool.cpu_time().unwrap() < Duration::from_millis(20));
        let t0 = Instant::now();
        let err = pool.transcribe(request(1000, 100)).await.unwrap_err();
        assert!(matches!(err, TranscriptError::Timeout(_)), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // Two requests run side by side on two threads.
        let t0 = Instant::now();
        let (a, b) = tokio::join!(
            pool.transcribe(request(30, 5000)),
            pool.transcribe(request(30, 5000))
        );
        assert!(a.is_ok() && b.is_ok());
        assert!(
            t0.elapsed() < Duration::from_millis(550),
            "{:?}",
            t0.elapsed()
        );
    }

    #[derive(Debug)]
    struct Spin;

    impl BlockingEngine for Spin {
        fn name(&self) -> &str {
            "spin"
        }
        fn transcribe_blocking(
            &self,
            _: &[i16],
            _: &str,
            _: Instant,
        ) -> Result<Vec<Phrase>, TranscriptError> {
            // Until the thread has used 30 ms of CPU (however long a busy machine makes that).
            let (t0, c0) = (Instant::now(), thread_cpu());
            let mut x = 0u64;
            while thread_cpu() - c0 < Duration::from_millis(30)
                && t0.elapsed() < Duration::from_secs(20)
            {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn the_pool_counts_its_cpu_time() {
        // Idle priority: it must not take CPU from the timing test beside it.
        let pool = WorkerPool::new(Spin, 1);
        pool.transcribe(request(1, 30_000)).await.unwrap();
        let cpu = pool.cpu_time().unwrap();
        assert!(
            cpu >= Duration::from_millis(30) && cpu < Duration::from_secs(1),
            "{cpu:?}"
        );
    }

    #[tokio::test]
    async fn the_none_engine_transcribes_nothing() {
        assert!(NoEngine
            .transcribe(request(8000, 10))
            .await
            .unwrap()
            .is_empty());
        let e: Arc<dyn Engine> = Arc::new(NoEngine);
        assert_eq!(e.name(), "none");
        assert_eq!(e.cpu_time(), None);
    }
}
