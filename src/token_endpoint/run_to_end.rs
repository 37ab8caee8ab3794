//! A future that finishes even when its caller stops waiting: it runs in the caller's task
//! (no task hand-off on the common path), and if the caller drops it unfinished, what is
//! left runs on a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rest: Option<Pin<Box<F>>>,
}

impl<F> RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Self {
        Self {
            rest: Some(Box::pin(future)),
        }
    }
}

impl<F> Future for RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(rest) = self.rest.as_mut() else {
            // Only a caller that polls after completion gets here; hyper never does.
            return Poll::Pending;
        };
        let output = std::task::ready!(rest.as_mut().poll(cx));
        self.rest = None;
        Poll::Ready(output)
    }
}

impl<F> Drop for RunToEnd<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_future_dropped_halfway_still_finishes() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let work = RunToEnd::new(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = done.send("finished");
        });
        // The caller gives up while the work is waiting.
        assert!(
            tokio::time::timeout(Duration::from_millis(5), work)
                .await
                .is_err()
        );
        let outcome = tokio::time::timeout(Duration::from_secs(2), finished).await;
        assert_eq!(outcome.unwrap().unwrap(), "finished");
    }

    #[tokio::test]
    async fn a_future_awaited_to_the_end_returns_its_output_in_place() {
        let task = tokio::task::try_id();
        let work = RunToEnd::new(async move { tokio::task::try_id() });
        assert_eq!(work.await, task);
    }
}
