//! One run at a time of an expensive answer that concurrent requests can
//! share (`/metrics`' render, `GET /v1/log/verify`'s walk of the chain). A
//! request is answered with a run that started after it arrived, its own or
//! a concurrent one's, so a flood of such requests costs one run at a time,
//! and no answer is older than its request. A failed run is not shared: the
//! next waiting request starts its own (a run cancelled with its request,
//! `crate::cancel`, does not fail the others).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SingleFlight<T> {
    /// The last successful run's number and answer.
    last: tokio::sync::Mutex<Option<(u64, T)>>,
    /// How many runs have started.
    started: AtomicU64,
}

impl<T: Clone> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            last: tokio::sync::Mutex::new(None),
            started: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// The answer of a run of `work` that started after this call.
    pub async fn run<E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = self.started.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((n, answer)) = &*last {
            if *n > arrived {
                return Ok(answer.clone());
            }
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = work().await?;
        *last = Some((n, answer.clone()));
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_a_run_that_started_after_they_arrived() {
        let flight = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        // The first caller's run waits at the gate; five more arrive meanwhile.
        let first = {
            let (flight, runs, gate) = (flight.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                flight
                    .run(|| async {
                        gate.notified().await;
                        Ok::<_, ()>(runs.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        while flight.started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let (flight, runs) = (flight.clone(), runs.clone());
                tokio::spawn(async move {
                    flight
                        .run(|| async { Ok::<_, ()>(runs.fetch_add(1, Ordering::SeqCst) + 1) })
                        .await
                })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Ok(1));
        // They arrived during run 1, so they need a later one: exactly one more.
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(2));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A failed run is not shared; the next caller runs again.
        assert_eq!(
            flight.run(|| async { Err::<usize, _>("failed") }).await,
            Err("failed")
        );
        assert_eq!(flight.run(|| async { Ok::<_, ()>(7) }).await, Ok(7));
    }
}
