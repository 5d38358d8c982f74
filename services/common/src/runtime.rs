//! Process lifecycle: graceful shutdown on SIGTERM / Ctrl-C.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

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

/// The state of the supervised background tasks, for `/readyz`: how many
/// times each was restarted after a panic, and which are down right now
/// (between a panic and their restart).
#[derive(Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<&'static str, TaskState>>>);

#[derive(Debug, Clone, Copy, Default)]
struct TaskState {
    /// Instances of the task currently down after a panic.
    down: usize,
    panics: u64,
}

impl TaskHealth {
    fn update(&self, name: &'static str, change: impl FnOnce(&mut TaskState)) {
        change(self.0.lock().expect("task health lock poisoned").entry(name).or_default());
    }

    /// `true` when every task is running; the text says which are down and
    /// which were restarted ("ok" if none ever panicked).
    pub fn summary(&self) -> (bool, String) {
        let tasks = self.0.lock().expect("task health lock poisoned");
        let down: Vec<&str> = tasks.iter().filter(|(_, s)| s.down > 0).map(|(name, _)| *name).collect();
        let restarted: Vec<String> =
            tasks.iter().filter(|(_, s)| s.panics > 0).map(|(name, s)| format!("{name} ×{}", s.panics)).collect();
        let mut text =
            if down.is_empty() { "ok".to_owned() } else { format!("down after a panic: {}", down.join(", ")) };
        if !restarted.is_empty() {
            text.push_str(&format!("; restarted after a panic: {}", restarted.join(", ")));
        }
        (down.is_empty(), text)
    }
}

/// Runs a background task and starts it again, with backoff, whenever it
/// panics, so a bug triggered by one input cannot silently stop the outbox
/// relay or a consumer for good; `/readyz` reports the task as down until it
/// runs again. Returns once the task returns normally (at shutdown) or
/// shutdown is requested.
pub async fn supervise<F, Fut>(name: &'static str, health: TaskHealth, mut shutdown: Shutdown, mut start: F)
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
                health.update(name, |s| {
                    s.down += 1;
                    s.panics += 1;
                });
                let stopped = tokio::select! {
                    _ = backoff.wait() => false,
                    _ = shutdown.wait() => true,
                };
                health.update(name, |s| s.down -= 1);
                if stopped {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted() {
        let (_trigger, shutdown) = shutdown_pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let health = TaskHealth::default();
        assert_eq!(health.summary(), (true, "ok".to_owned()));
        supervise("test", health.clone(), shutdown, move || {
            let runs = counter.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(health.summary(), (true, "ok; restarted after a panic: test ×2".to_owned()));
        health.update("relay", |s| s.down += 1);
        assert!(!health.summary().0);
        assert!(health.summary().1.starts_with("down after a panic: relay;"));
    }
}
