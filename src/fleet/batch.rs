//! Many callers, one statement: lease operations of exchanges in flight at once are gathered
//! and sent together, so the database parses, plans and answers one statement for all of
//! them instead of one each. Nothing waits to gather: a batch goes as soon as a slot is free,
//! and what arrives while the slots are busy forms the next one, so a quiet replica sends
//! each operation alone and a busy one sends fewer, larger statements.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most operations in one statement.
const MOST: usize = 512;
/// Operations waiting for a batch before callers wait to queue.
const QUEUED: usize = 8192;

type Ask<Q, A> = (Q, oneshot::Sender<Option<A>>);

/// A queue of one kind of operation, answered in batches.
pub struct Batches<Q, A> {
    tx: mpsc::Sender<Ask<Q, A>>,
    bound: Duration,
}

impl<Q: Send + 'static, A: Send + 'static> Batches<Q, A> {
    /// Runs batches with `run` (one answer per question, in order, or `None` when the store
    /// failed), at most `slots` at a time; a caller waits at most `bound` for its answer.
    pub fn start<F, Fut>(slots: usize, bound: Duration, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Vec<A>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(gather(rx, Arc::new(Semaphore::new(slots)), Arc::new(run)));
        Self { tx, bound }
    }

    /// The answer to `question`, or `None` when the store failed or took too long.
    pub async fn ask(&self, question: Q) -> Option<A> {
        let (tell, answer) = oneshot::channel();
        self.tx.try_send((question, tell)).ok()?;
        tokio::time::timeout(self.bound, answer).await.ok()?.ok()?
    }
}

async fn gather<Q, A, F, Fut>(mut rx: mpsc::Receiver<Ask<Q, A>>, slots: Arc<Semaphore>, run: Arc<F>)
where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Vec<A>>> + Send + 'static,
{
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MOST {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let run = run.clone();
        tokio::spawn(async move {
            let (questions, tells): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
            let answers = run(questions).await;
            match answers {
                Some(answers) if answers.len() == tells.len() => {
                    for (tell, answer) in tells.into_iter().zip(answers) {
                        let _ = tell.send(Some(answer));
                    }
                }
                _ => {
                    for tell in tells {
                        let _ = tell.send(None);
                    }
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn callers_at_once_share_statements_and_each_gets_its_own_answer() {
        let statements = Arc::new(AtomicUsize::new(0));
        let counted = statements.clone();
        let batches = Arc::new(Batches::start(
            1,
            Duration::from_secs(5),
            move |qs: Vec<u32>| {
                counted.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some(qs.into_iter().map(|q| q * 2).collect())
                }
            },
        ));
        let mut asks = tokio::task::JoinSet::new();
        for q in 0..100u32 {
            let batches = batches.clone();
            asks.spawn(async move { (q, batches.ask(q).await) });
        }
        while let Some(done) = asks.join_next().await {
            let (q, answer) = done.unwrap();
            assert_eq!(answer, Some(q * 2));
        }
        let n = statements.load(Ordering::Relaxed);
        assert!(n < 100, "{n} statements for 100 callers");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_in_it() {
        let batches = Batches::start(2, Duration::from_secs(5), |_: Vec<u32>| async {
            None::<Vec<u32>>
        });
        assert_eq!(batches.ask(1).await, None);
    }

    #[tokio::test]
    async fn a_batch_that_takes_too_long_leaves_its_callers_at_the_bound() {
        let batches = Batches::start(1, Duration::from_millis(50), |qs: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Some(qs)
        });
        assert_eq!(batches.ask(1).await, None);
    }
}
