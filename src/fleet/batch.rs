//! Many callers, one statement: lease operations of exchanges in flight at once are gathered
//! and sent together, so the database parses, plans and answers one statement for all of
//! them instead of one each. Nothing waits to gather: a batch goes as soon as a slot is free,
//! and what arrives while the slots are busy forms the next one, so a quiet replica sends
//! each operation alone and a busy one sends fewer, larger statements.
//!
//! Questions wait in one of two queues ([`Lane`]), each with slots of its own: a busy queue
//! never holds the other's questions back, and a statement sent for either carries what waits
//! in both, so that two kinds of operation share statements without sharing a wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most operations in one statement.
const MOST: usize = 512;
/// Operations waiting for a batch before callers wait to queue.
const QUEUED: usize = 8192;

type Ask<Q, A> = (Q, oneshot::Sender<Result<A, Failed>>);

/// Why a question got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// It never reached the database (the queue was full, or no connection was up).
    Unsent,
    /// It may have: the statement failed, timed out or lost its connection, and it may still
    /// run (or have run) on the server.
    Lost,
}

/// Two queues of operations, answered in batches.
pub struct Batches<Q, A> {
    lanes: [mpsc::Sender<Ask<Q, A>>; 2],
    bound: Duration,
}

/// Which of the two queues a question waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    One,
    Two,
}

impl<Q: Send + 'static, A: Send + 'static> Batches<Q, A> {
    /// Runs batches with `run` (one answer per question, in order, or why there is none),
    /// at most `slots` at a time for each queue; a caller waits at most `bound` for its
    /// answer.
    pub fn start<F, Fut>(slots: usize, bound: Duration, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, Failed>> + Send + 'static,
    {
        let (one, one_rx) = mpsc::channel(QUEUED);
        let (two, two_rx) = mpsc::channel(QUEUED);
        let slots = [(); 2].map(|_| Arc::new(Semaphore::new(slots)));
        tokio::spawn(gather([one_rx, two_rx], slots, Arc::new(run)));
        Self {
            lanes: [one, two],
            bound,
        }
    }

    /// The answer to `question`, or why there is none (a caller that gave up at the bound
    /// may have had its question sent).
    pub async fn ask(&self, lane: Lane, question: Q) -> Result<A, Failed> {
        let (tell, answer) = oneshot::channel();
        self.lanes[lane as usize]
            .try_send((question, tell))
            .map_err(|_| Failed::Unsent)?;
        match tokio::time::timeout(self.bound, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => Err(Failed::Lost),
        }
    }
}

async fn gather<Q, A, F, Fut>(
    lanes: [mpsc::Receiver<Ask<Q, A>>; 2],
    slots: [Arc<Semaphore>; 2],
    run: Arc<F>,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<A>, Failed>> + Send + 'static,
{
    let [mut one, mut two] = lanes;
    loop {
        // Both futures are cancel-safe: the one not chosen gives its slot back, and a
        // question it did not receive stays queued.
        let (slot, first) = tokio::select! {
            next = next_in(&slots[0], &mut one) => next,
            next = next_in(&slots[1], &mut two) => next,
        };
        let (Some(slot), Some(first)) = (slot, first) else {
            return;
        };
        let mut batch = vec![first];
        for lane in [&mut one, &mut two] {
            while batch.len() < MOST {
                match lane.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
        }
        let run = run.clone();
        tokio::spawn(async move {
            let (questions, tells): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
            let answers = run(questions).await;
            match answers {
                Ok(answers) if answers.len() == tells.len() => {
                    for (tell, answer) in tells.into_iter().zip(answers) {
                        let _ = tell.send(Ok(answer));
                    }
                }
                failed => {
                    let why = failed.err().unwrap_or(Failed::Lost);
                    for tell in tells {
                        let _ = tell.send(Err(why));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// A free slot of a queue, then its next question (`None`s once the batcher is gone).
async fn next_in<Q, A>(
    slots: &Arc<Semaphore>,
    lane: &mut mpsc::Receiver<Ask<Q, A>>,
) -> (Option<tokio::sync::OwnedSemaphorePermit>, Option<Ask<Q, A>>) {
    let Ok(slot) = slots.clone().acquire_owned().await else {
        return (None, None);
    };
    (Some(slot), lane.recv().await)
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
                    Ok(qs.into_iter().map(|q| q * 2).collect())
                }
            },
        ));
        let mut asks = tokio::task::JoinSet::new();
        for q in 0..100u32 {
            let batches = batches.clone();
            asks.spawn(async move { (q, batches.ask(Lane::One, q).await) });
        }
        while let Some(done) = asks.join_next().await {
            let (q, answer) = done.unwrap();
            assert_eq!(answer, Ok(q * 2));
        }
        let n = statements.load(Ordering::Relaxed);
        assert!(n < 100, "{n} statements for 100 callers");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_in_it_as_it_failed() {
        let unsent = Batches::start(2, Duration::from_secs(5), |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(Failed::Unsent)
        });
        assert_eq!(unsent.ask(Lane::One, 1).await, Err(Failed::Unsent));
        let lost = Batches::start(2, Duration::from_secs(5), |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(Failed::Lost)
        });
        assert_eq!(lost.ask(Lane::Two, 1).await, Err(Failed::Lost));
    }

    #[tokio::test]
    async fn a_batch_that_takes_too_long_leaves_its_callers_at_the_bound() {
        let batches = Batches::start(1, Duration::from_millis(50), |qs: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(qs)
        });
        assert_eq!(batches.ask(Lane::One, 1).await, Err(Failed::Lost));
    }

    #[tokio::test]
    async fn a_busy_queue_holds_the_other_back_never_and_a_statement_for_either_carries_both() {
        let (started, mut first_started) = mpsc::channel::<()>(1);
        let release = Arc::new(tokio::sync::Notify::new());
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (held, seen) = (release.clone(), sizes.clone());
        let batches = Arc::new(Batches::start(
            1,
            Duration::from_secs(5),
            move |qs: Vec<u32>| {
                let (started, held, seen) = (started.clone(), held.clone(), seen.clone());
                async move {
                    seen.lock().unwrap().push(qs.clone());
                    // The first statement (question 0) stays in flight until released.
                    if qs == [0] {
                        let _ = started.send(()).await;
                        held.notified().await;
                    }
                    Ok(qs)
                }
            },
        ));
        let busy = {
            let batches = batches.clone();
            tokio::spawn(async move { batches.ask(Lane::One, 0).await })
        };
        first_started.recv().await.unwrap();
        // Queue one's only slot is busy: its next question waits...
        let waiting = {
            let batches = batches.clone();
            tokio::spawn(async move { batches.ask(Lane::One, 1).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        // ...until a statement for queue two takes it along.
        assert_eq!(batches.ask(Lane::Two, 2).await, Ok(2));
        assert_eq!(waiting.await.unwrap(), Ok(1));
        assert!(!busy.is_finished());
        release.notify_one();
        assert_eq!(busy.await.unwrap(), Ok(0));
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes[1].len(), 2, "{sizes:?}");
    }
}
