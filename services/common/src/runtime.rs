//! Process lifecycle: graceful shutdown on SIGTERM / Ctrl-C.

use std::future::Future;

use tokio::sync::watch;

use crate::amqp::Backoff;

/// A cloneable "stop now" signal for background tasks.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub struct ShutdownTrigger(watch::Sender<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown was requested (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs a background task and starts it again, with backoff, whenever it
/// panics, so a bug triggered by one input cannot silently stop the outbox
/// relay or a consumer for good. Returns once the task returns normally
/// (at shutdown) or shutdown is requested.
pub async fn supervise<F, Fut>(name: &'static str, mut shutdown: Shutdown, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::new();
    loop {
        let mut task = tokio::spawn(start());
        let outcome = tokio::select! {
            outcome = &mut task => outcome,
            _ = shutdown.wait() => task.await,
        };
        match outcome {
            Err(error) if error.is_panic() => {
                tracing::error!(task = name, "background task panicked; restarting it");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = shutdown.wait() => return,
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted() {
        let (_trigger, shutdown) = shutdown_pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        supervise("test", shutdown, move || {
            let runs = counter.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
