//! The load generators: a closed loop (a fixed number of workers, each sending its
//! next request when the previous one is answered) and an open loop paced at a fixed
//! rate. Both record each operation's latency and the wall-clock time it completed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One completed operation.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Which operation (0-based).
    pub index: usize,
    /// From sending to the answer.
    pub latency: Duration,
    /// The wall-clock time of the answer.
    pub done_at: DateTime<Utc>,
}

/// A finished load run.
#[derive(Debug)]
pub struct Run {
    /// Every operation, in completion order per worker.
    pub samples: Vec<Sample>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
}

impl Run {
    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latencies.
    pub fn latencies(&self) -> Vec<Duration> {
        self.samples.iter().map(|s| s.latency).collect()
    }
}

/// Runs `op(0)` … `op(count - 1)` with `concurrency` operations in flight. The first
/// failure stops the run and is returned.
pub async fn closed_loop<F, Fut>(count: usize, concurrency: usize, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(count / concurrency.max(1) + 1);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(samples);
                }
                let sent = Instant::now();
                op(index)
                    .await
                    .with_context(|| format!("operation {index} failed"))?;
                samples.push(Sample {
                    index,
                    latency: sent.elapsed(),
                    done_at: Utc::now(),
                });
            }
        });
    }
    let mut samples = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a load task panicked")? {
            Ok(mut part) => samples.append(&mut part),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok(Run {
        samples,
        elapsed: started.elapsed(),
    })
}

/// Starts `op(i)` at `i / rate_per_s` seconds after the start, whether or not earlier
/// operations were answered (up to `max_in_flight` at once). The first failure stops
/// the run and is returned.
pub async fn paced<F, Fut>(
    count: usize,
    rate_per_s: f64,
    max_in_flight: usize,
    op: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if rate_per_s <= 0.0 {
        bail!("a paced run needs a positive rate, not {rate_per_s}");
    }
    let op = Arc::new(op);
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut samples = Vec::with_capacity(count);
    for index in 0..count {
        tokio::time::sleep_until(started + Duration::from_secs_f64(index as f64 / rate_per_s))
            .await;
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let op = Arc::clone(&op);
        tasks.spawn(async move {
            let sent = Instant::now();
            let done = op(index)
                .await
                .with_context(|| format!("operation {index} failed"));
            drop(permit);
            done.map(|()| Sample {
                index,
                latency: sent.elapsed(),
                done_at: Utc::now(),
            })
        });
        // Collect what has finished so that a failure stops the run early.
        while let Some(joined) = tasks.try_join_next() {
            samples.push(joined.context("a load task panicked")??);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        samples.push(joined.context("a load task panicked")??);
    }
    Ok(Run {
        samples,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_runs_each_index_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let run = closed_loop(100, 8, move |i| {
            let record = Arc::clone(&record);
            async move {
                record.lock().unwrap().push(i);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(run.samples.len(), 100);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn closed_loop_reports_the_failure() {
        let err = closed_loop(10, 2, |i| async move {
            if i == 5 {
                bail!("boom");
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("operation 5 failed: boom"));
    }

    #[tokio::test]
    async fn paced_keeps_the_rate() {
        let run = paced(20, 200.0, 4, |_| async { Ok(()) }).await.unwrap();
        assert_eq!(run.samples.len(), 20);
        // 20 operations at 200/s start over 95 ms.
        assert!(
            run.elapsed >= Duration::from_millis(90),
            "{:?}",
            run.elapsed
        );
    }
}
