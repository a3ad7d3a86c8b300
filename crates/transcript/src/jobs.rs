//! Scheduling of transcription jobs, sans-IO: one job per recording, at most
//! [`JobsConfig::concurrency`] running, each allowed [`JobsConfig::timeout_ms`], a failure
//! retried with exponential backoff up to [`JobsConfig::max_attempts`] and then marked
//! failed with its reason.
//!
//! [`Jobs`] never reads a clock nor does IO: the caller passes `now` (unix ms) and gets back
//! which jobs to start, which job rows changed (to persist, the catalog being the journal)
//! and when to call [`Jobs::poll`] again. It holds only active jobs (queued or running); a
//! job that ends is handed back once, for the caller to persist, and forgotten.
//!
//! After a restart the caller restores the persisted active jobs with [`Jobs::restore`]: a
//! job that was running is queued again (its attempt counted, so a recording that crashes
//! the process every time still ends up failed rather than looping).
//!
//! A result that arrives for an attempt the machine already gave up on (it timed out and was
//! retried) is ignored, so a slow engine can never overwrite a newer attempt.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to start, at `next_at_ms` at the earliest.
    Queued,
    Running,
    /// The transcript is stored.
    Done,
    /// Given up after the last attempt; `error` says why.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

/// One recording's job, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub contact_id: String,
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// When a queued job may start (unix ms).
    pub next_at_ms: i64,
    /// The last failure's reason.
    pub error: Option<String>,
    /// The language to transcribe in.
    pub language: String,
    /// When the job last changed (unix ms).
    pub updated_ms: i64,
}

impl Job {
    /// A new job, due at `now_ms`.
    pub fn queued(contact_id: &str, language: &str, now_ms: i64) -> Job {
        Job {
            contact_id: contact_id.to_string(),
            state: JobState::Queued,
            attempts: 0,
            next_at_ms: now_ms,
            error: None,
            language: language.to_string(),
            updated_ms: now_ms,
        }
    }
}

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsConfig {
    /// Jobs running at once (at least 1).
    pub concurrency: usize,
    /// Attempts before a job is marked failed (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff_ms: i64,
    /// The longest delay between attempts.
    pub backoff_max_ms: i64,
    /// How long one attempt may run before it counts as failed.
    pub timeout_ms: i64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            concurrency: 1,
            max_attempts: 3,
            backoff_ms: 30_000,
            backoff_max_ms: 3_600_000,
            timeout_ms: 1_800_000,
        }
    }
}

/// A job to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub contact_id: String,
    /// The attempt number (1 for the first); pass it back to [`Jobs::finish`].
    pub attempt: u32,
    pub language: String,
    /// The attempt counts as failed (timed out) at this time.
    pub deadline_ms: i64,
}

/// What [`Jobs::poll`] asks the caller to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Poll {
    /// Jobs to start.
    pub start: Vec<Start>,
    /// Jobs whose row changed (started, timed out, retried, failed): persist them.
    pub changed: Vec<Job>,
    /// Call `poll` again at this time at the latest (`None`: only on new input).
    pub wake_at_ms: Option<i64>,
}

/// Counts of active jobs, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub running: usize,
}

#[derive(Debug, Clone)]
struct Active {
    job: Job,
    /// Enqueue order, for FIFO among jobs due at the same time.
    seq: u64,
    deadline_ms: i64,
}

/// The scheduler (see the module docs).
#[derive(Debug, Clone)]
pub struct Jobs {
    config: JobsConfig,
    active: HashMap<String, Active>,
    seq: u64,
}

impl Jobs {
    pub fn new(config: JobsConfig) -> Jobs {
        Jobs {
            config: JobsConfig {
                concurrency: config.concurrency.max(1),
                max_attempts: config.max_attempts.max(1),
                backoff_ms: config.backoff_ms.max(0),
                backoff_max_ms: config.backoff_max_ms.max(config.backoff_ms.max(0)),
                timeout_ms: config.timeout_ms.max(1),
            },
            active: HashMap::new(),
            seq: 0,
        }
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Resumes from persisted jobs (inactive ones are ignored). Running jobs are queued again
    /// (due at once) or, when they had used their last attempt, failed; the changed rows are
    /// returned for persisting.
    pub fn restore(
        config: JobsConfig,
        persisted: impl IntoIterator<Item = Job>,
        now_ms: i64,
    ) -> (Jobs, Vec<Job>) {
        let mut jobs = Jobs::new(config);
        let changed = jobs.adopt(persisted, now_ms);
        (jobs, changed)
    }

    /// Takes up persisted active jobs beside the ones held: a restart's own jobs (see
    /// [`Jobs::restore`]) or those of a node gone for good. A job that was running is queued
    /// again with its attempt counted, or failed when that was its last; one already held is
    /// left as it is. Returns the rows that changed, to persist.
    pub fn adopt(&mut self, persisted: impl IntoIterator<Item = Job>, now_ms: i64) -> Vec<Job> {
        let jobs = self;
        let mut changed = Vec::new();
        let mut persisted: Vec<Job> = persisted
            .into_iter()
            .filter(|j| j.state.is_active() && !jobs.active.contains_key(&j.contact_id))
            .collect();
        // Oldest first keeps the original order among the resumed.
        persisted.sort_by(|a, b| (a.next_at_ms, &a.contact_id).cmp(&(b.next_at_ms, &b.contact_id)));
        for mut job in persisted {
            if job.state == JobState::Running {
                job.updated_ms = now_ms;
                if job.attempts >= jobs.config.max_attempts {
                    job.state = JobState::Failed;
                    job.error = Some(format!(
                        "interrupted by a restart or its node stopping, on attempt {}",
                        job.attempts
                    ));
                    changed.push(job);
                    continue;
                }
                job.state = JobState::Queued;
                job.next_at_ms = now_ms;
                changed.push(job.clone());
            }
            jobs.insert(job);
        }
        changed
    }

    fn insert(&mut self, job: Job) {
        self.seq += 1;
        let id = job.contact_id.clone();
        self.active.insert(
            id,
            Active {
                job,
                seq: self.seq,
                deadline_ms: i64::MAX,
            },
        );
    }

    /// Queues a job for `contact_id`, due at once; returns its row to persist. `None` when
    /// the contact already has an active job.
    pub fn enqueue(&mut self, contact_id: &str, language: &str, now_ms: i64) -> Option<Job> {
        if self.active.contains_key(contact_id) {
            return None;
        }
        let job = Job::queued(contact_id, language, now_ms);
        self.insert(job.clone());
        Some(job)
    }

    /// The active job of a contact.
    pub fn get(&self, contact_id: &str) -> Option<&Job> {
        self.active.get(contact_id).map(|a| &a.job)
    }

    pub fn counts(&self) -> Counts {
        let running = self
            .active
            .values()
            .filter(|a| a.job.state == JobState::Running)
            .count();
        Counts {
            queued: self.active.len() - running,
            running,
        }
    }

    fn backoff(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.config
            .backoff_ms
            .saturating_mul(1i64 << doublings)
            .min(self.config.backoff_max_ms)
    }

    /// The attempt failed: queue a retry after the backoff, or mark the job failed (and
    /// forget it) after its last attempt. Returns the row to persist.
    fn fail(&mut self, contact_id: &str, reason: String, now_ms: i64) -> Option<Job> {
        let attempts = self.active.get(contact_id)?.job.attempts;
        let exhausted = attempts >= self.config.max_attempts;
        let delay = self.backoff(attempts);
        let a = self.active.get_mut(contact_id)?;
        a.job.error = Some(reason);
        a.job.updated_ms = now_ms;
        a.deadline_ms = i64::MAX;
        if exhausted {
            a.job.state = JobState::Failed;
            return self.active.remove(contact_id).map(|a| a.job);
        }
        a.job.state = JobState::Queued;
        a.job.next_at_ms = now_ms.saturating_add(delay);
        Some(a.job.clone())
    }

    /// Times out overdue attempts, starts due jobs up to the concurrency limit, and says when
    /// to come back.
    pub fn poll(&mut self, now_ms: i64) -> Poll {
        let mut poll = Poll::default();
        let overdue: Vec<(String, u32)> = self
            .active
            .values()
            .filter(|a| a.job.state == JobState::Running && a.deadline_ms <= now_ms)
            .map(|a| (a.job.contact_id.clone(), a.job.attempts))
            .collect();
        for (id, attempt) in overdue {
            let reason = format!(
                "attempt {attempt} timed out after {} s",
                self.config.timeout_ms / 1000
            );
            if let Some(job) = self.fail(&id, reason, now_ms) {
                poll.changed.push(job);
            }
        }
        let running = self.counts().running;
        let mut due: Vec<(i64, u64, String)> = self
            .active
            .values()
            .filter(|a| a.job.state == JobState::Queued && a.job.next_at_ms <= now_ms)
            .map(|a| (a.job.next_at_ms, a.seq, a.job.contact_id.clone()))
            .collect();
        due.sort_unstable();
        let free = self.config.concurrency.saturating_sub(running);
        for (_, _, id) in due.into_iter().take(free) {
            let timeout = self.config.timeout_ms;
            let Some(a) = self.active.get_mut(&id) else {
                continue;
            };
            a.job.state = JobState::Running;
            a.job.attempts += 1;
            a.job.updated_ms = now_ms;
            a.deadline_ms = now_ms.saturating_add(timeout);
            poll.start.push(Start {
                contact_id: id.clone(),
                attempt: a.job.attempts,
                language: a.job.language.clone(),
                deadline_ms: a.deadline_ms,
            });
            poll.changed.push(a.job.clone());
        }
        let at_capacity = self.counts().running >= self.config.concurrency;
        poll.wake_at_ms = self
            .active
            .values()
            .filter_map(|a| match a.job.state {
                JobState::Running => Some(a.deadline_ms),
                // A queued job can only start once a slot frees, which is new input (a
                // finish) or a running job's deadline, both covered.
                JobState::Queued if !at_capacity => Some(a.job.next_at_ms.max(now_ms)),
                _ => None,
            })
            .min();
        poll
    }

    /// Reports how attempt `attempt` of a running job ended. Returns the row to persist
    /// (done, queued for a retry, or failed), or `None` when the report is stale (the job is
    /// not running that attempt any more) and is ignored.
    pub fn finish(
        &mut self,
        contact_id: &str,
        attempt: u32,
        result: Result<(), String>,
        now_ms: i64,
    ) -> Option<Job> {
        let a = self.active.get(contact_id)?;
        if a.job.state != JobState::Running || a.job.attempts != attempt {
            return None;
        }
        match result {
            Ok(()) => {
                let mut job = self.active.remove(contact_id)?.job;
                job.state = JobState::Done;
                job.error = None;
                job.updated_ms = now_ms;
                Some(job)
            }
            Err(reason) => self.fail(contact_id, reason, now_ms),
        }
    }

    /// The delay before retry `attempts + 1` (for documentation and tests).
    pub fn retry_delay_ms(&self, attempts: u32) -> i64 {
        self.backoff(attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JobsConfig {
        JobsConfig {
            concurrency: 2,
            max_attempts: 3,
            backoff_ms: 1000,
            backoff_max_ms: 3000,
            timeout_ms: 10_000,
        }
    }

    fn ids(p: &Poll) -> Vec<&str> {
        p.start.iter().map(|s| s.contact_id.as_str()).collect()
    }

    #[test]
    fn jobs_start_in_order_up_to_the_limit() {
        let mut jobs = Jobs::new(config());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let job = jobs.enqueue(id, "en", 100 + i as i64).unwrap();
            assert_eq!(job.state, JobState::Queued);
        }
        assert_eq!(
            jobs.enqueue("a", "en", 200),
            None,
            "one active job per recording"
        );
        let p = jobs.poll(1000);
        assert_eq!(ids(&p), ["a", "b"]);
        assert_eq!(p.start[0].attempt, 1);
        assert_eq!(p.start[0].deadline_ms, 11_000);
        assert_eq!(p.changed.len(), 2);
        assert!(p.changed.iter().all(|j| j.state == JobState::Running));
        // At capacity: wake at the first deadline, not for the queued job.
        assert_eq!(p.wake_at_ms, Some(11_000));
        assert_eq!(
            jobs.counts(),
            Counts {
                queued: 1,
                running: 2
            }
        );
        assert!(jobs.poll(1001).start.is_empty());
        let done = jobs.finish("a", 1, Ok(()), 2000).unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(jobs.get("a"), None, "an ended job is forgotten");
        assert_eq!(ids(&jobs.poll(2000)), ["c"]);
    }

    #[test]
    fn failures_are_retried_with_backoff_then_marked_failed() {
        let mut jobs = Jobs::new(config());
        jobs.enqueue("a", "en", 0);
        let mut now = 0;
        let mut delays = Vec::new();
        for attempt in 1..=3 {
            let p = jobs.poll(now);
            assert_eq!(ids(&p), ["a"], "attempt {attempt}");
            let job = jobs
                .finish("a", attempt, Err(format!("boom {attempt}")), now + 5)
                .unwrap();
            assert_eq!(job.attempts, attempt);
            assert_eq!(
                job.error.as_deref(),
                Some(format!("boom {attempt}").as_str())
            );
            if attempt < 3 {
                assert_eq!(job.state, JobState::Queued);
                delays.push(job.next_at_ms - (now + 5));
                // Not before its time.
                assert!(jobs.poll(job.next_at_ms - 1).start.is_empty());
                assert_eq!(
                    jobs.poll(job.next_at_ms - 1).wake_at_ms,
                    Some(job.next_at_ms)
                );
                now = job.next_at_ms;
            } else {
                assert_eq!(job.state, JobState::Failed);
            }
        }
        assert_eq!(delays, [1000, 2000]);
        assert_eq!(jobs.get("a"), None);
        assert_eq!(jobs.poll(now + 100_000), Poll::default());
        // Backoff is capped.
        assert_eq!(jobs.retry_delay_ms(10), 3000);
    }

    #[test]
    fn a_hung_attempt_times_out_and_its_late_result_is_ignored() {
        let mut jobs = Jobs::new(config());
        jobs.enqueue("a", "en", 0);
        jobs.enqueue("b", "en", 0);
        assert_eq!(ids(&jobs.poll(0)), ["a", "b"]);
        assert!(jobs.finish("b", 1, Ok(()), 50).is_some());
        let p = jobs.poll(10_000);
        let job = &p.changed[0];
        assert_eq!(job.contact_id, "a");
        assert_eq!(job.state, JobState::Queued);
        assert!(
            job.error.as_deref().unwrap().contains("timed out"),
            "{job:?}"
        );
        assert_eq!(job.next_at_ms, 11_000);
        // The hung attempt answers late: ignored.
        assert_eq!(jobs.finish("a", 1, Ok(()), 10_500), None);
        let p = jobs.poll(11_000);
        assert_eq!(p.start[0].attempt, 2);
        assert_eq!(jobs.finish("a", 1, Ok(()), 11_001), None, "still stale");
        assert_eq!(
            jobs.finish("a", 2, Ok(()), 11_002).unwrap().state,
            JobState::Done
        );
        // Unknown jobs and jobs that are not running are ignored.
        assert_eq!(jobs.finish("zz", 1, Ok(()), 0), None);
        jobs.enqueue("q", "en", 20_000);
        assert_eq!(jobs.finish("q", 0, Ok(()), 20_000), None);
    }

    /// Jobs of a node gone join those held: a running one is queued again with its attempt
    /// counted, one already held (a recording both nodes had) and ended ones are left out.
    #[test]
    fn adopted_jobs_join_the_held_ones() {
        let mut jobs = Jobs::new(config());
        jobs.enqueue("mine", "en", 0).unwrap();
        let started = jobs.poll(0);
        assert_eq!(ids(&started), ["mine"]);
        let mut running = Job::queued("theirs-running", "de", 5);
        running.state = JobState::Running;
        running.attempts = 1;
        let queued = Job::queued("theirs-queued", "en", 7);
        let mut dup = Job::queued("mine", "en", 1);
        dup.state = JobState::Running;
        let mut done = Job::queued("theirs-done", "en", 1);
        done.state = JobState::Done;
        let changed = jobs.adopt([queued, running, dup, done], 100);
        let changed: Vec<(&str, JobState, u32)> = changed
            .iter()
            .map(|j| (j.contact_id.as_str(), j.state, j.attempts))
            .collect();
        assert_eq!(changed, [("theirs-running", JobState::Queued, 1)]);
        assert_eq!(
            jobs.counts(),
            Counts {
                queued: 2,
                running: 1
            }
        );
        assert_eq!(jobs.get("mine").unwrap().state, JobState::Running);
        // One slot is free: the adopted job that was due first starts.
        assert_eq!(ids(&jobs.poll(100)), ["theirs-queued"]);
    }

    #[test]
    fn a_restart_resumes_running_jobs_and_fails_exhausted_ones() {
        let mut before = Jobs::new(config());
        before.enqueue("a", "en", 0);
        before.enqueue("b", "de", 1);
        before.enqueue("c", "en", 2);
        let mut persisted: HashMap<String, Job> = HashMap::new();
        for j in before.poll(10).changed {
            persisted.insert(j.contact_id.clone(), j);
        }
        // "c" stayed queued; "x" is on its last attempt when the node dies; "d" was done.
        persisted.insert("c".into(), before.get("c").unwrap().clone());
        let mut x = persisted["a"].clone();
        x.contact_id = "x".into();
        x.attempts = 3;
        persisted.insert("x".into(), x);
        let mut d = persisted["a"].clone();
        d.contact_id = "d".into();
        d.state = JobState::Done;
        persisted.insert("d".into(), d);

        let (mut jobs, changed) = Jobs::restore(config(), persisted.into_values(), 50_000);
        let mut changed_ids: Vec<(&str, JobState)> = changed
            .iter()
            .map(|j| (j.contact_id.as_str(), j.state))
            .collect();
        changed_ids.sort_by_key(|(id, _)| *id);
        assert_eq!(
            changed_ids,
            [
                ("a", JobState::Queued),
                ("b", JobState::Queued),
                ("x", JobState::Failed)
            ]
        );
        assert!(changed
            .iter()
            .find(|j| j.contact_id == "x")
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("restart"));
        assert_eq!(
            jobs.counts(),
            Counts {
                queued: 3,
                running: 0
            }
        );
        let p = jobs.poll(50_000);
        assert_eq!(p.start.len(), 2);
        // The attempt of the interrupted run counted: this is attempt 2.
        let a = p.start.iter().find(|s| s.contact_id == "a").unwrap();
        assert_eq!(a.attempt, 2);
        let b = p.start.iter().find(|s| s.contact_id == "b");
        if let Some(b) = b {
            assert_eq!(b.language, "de");
        }
    }

    #[test]
    fn an_empty_machine_sleeps_until_input() {
        let mut jobs = Jobs::new(JobsConfig {
            concurrency: 0,
            max_attempts: 0,
            ..config()
        });
        assert_eq!(jobs.poll(0).wake_at_ms, None);
        assert_eq!(jobs.config().concurrency, 1);
        jobs.enqueue("a", "en", 500);
        assert_eq!(jobs.poll(0).wake_at_ms, Some(500));
        let p = jobs.poll(500);
        assert_eq!(ids(&p), ["a"]);
        // One attempt only.
        assert_eq!(
            jobs.finish("a", 1, Err("x".into()), 600).unwrap().state,
            JobState::Failed
        );
    }
}
