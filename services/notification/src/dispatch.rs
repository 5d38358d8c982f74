//! The dispatcher: claims due deliveries (`FOR UPDATE SKIP LOCKED`, with a
//! lease), sends several at once (bounded), and records each attempt and
//! what follows (delivered, retry later, failed for good) in one
//! transaction. A dispatcher that dies mid-send leaves its lease to expire:
//! the delivery is claimed and sent again (at least once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use saga_common::runtime::Shutdown;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::email::Mailer;
use crate::metrics::NotificationMetrics;
use crate::ssrf::{self, AllowList};
use crate::store::EMAIL;
use crate::store::{self, AttemptRecord, Claimed, DisablePolicy, Next};
use saga_common::webhook_signature as signing;

/// Retries: exponential backoff with full jitter. The n-th retry waits a
/// uniformly random time in `[0, min(max_delay, initial_delay * 2^(n-1))]`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all (the first included) before a delivery fails for good.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The ceiling of the wait before retry `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(30));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// What follows a failed attempt, the `attempts`-th (1-based).
    pub fn after_failure(&self, attempts: u32) -> Next {
        if attempts >= self.max_attempts {
            return Next::Failed;
        }
        let ceiling = self.ceiling(attempts);
        Next::RetryAfter(ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)))
    }

    /// The longest time from the first attempt to the last (the sum of the ceilings).
    pub fn horizon(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.ceiling(n)).sum()
    }
}

pub struct Dispatcher {
    pub pool: PgPool,
    pub retry: RetryPolicy,
    pub disable: DisablePolicy,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    /// Response bytes read at most (the rest is not read).
    pub max_response_bytes: usize,
    /// How long a claim holds before another dispatcher may take it over.
    pub lease: Duration,
    pub allow: AllowList,
    pub mailer: Option<Mailer>,
    pub metrics: NotificationMetrics,
}

/// The bytes of a response kept in an attempt's log.
pub const EXCERPT_BYTES: usize = 1024;

/// What one attempt produced.
pub struct Outcome {
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

impl Outcome {
    fn error(error: impl Into<String>) -> Outcome {
        Outcome { succeeded: false, status_code: None, error: Some(error.into()), response_excerpt: None }
    }
}

impl Dispatcher {
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = running.join_next() => continue,
                    _ = shutdown.wait() => break,
                }
            }
            let claimed = match store::claim(&self.pool, free as i64, self.lease).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim deliveries");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(self.poll_interval) => continue,
                    _ = shutdown.wait() => break,
                }
            }
            for delivery in claimed {
                let permit = slots.clone().try_acquire_owned().expect("claimed no more than the free slots");
                let this = self.clone();
                running.spawn(async move {
                    this.deliver(delivery).await;
                    drop(permit);
                });
            }
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = std::future::ready(()) => {}
            }
        }
        // In-flight sends finish (their results are recorded); leases cover the rest.
        while running.join_next().await.is_some() {}
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, channel = %delivery.channel,
        event_type = %delivery.event_type, order_id = ?delivery.order_id, customer_id = %delivery.customer_id))]
    async fn deliver(&self, delivery: Claimed) {
        let started_at = Utc::now();
        let started = Instant::now();
        let outcome = if delivery.channel == EMAIL {
            match &self.mailer {
                Some(mailer) => mailer.send(&delivery).await,
                None => Outcome::error("no SMTP server is configured (SMTP_URL)"),
            }
        } else {
            self.send_webhook(&delivery).await
        };
        let attempt = AttemptRecord {
            started_at,
            duration: started.elapsed(),
            succeeded: outcome.succeeded,
            status_code: outcome.status_code,
            error: outcome.error,
            response_excerpt: outcome.response_excerpt,
        };
        let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let next = if attempt.succeeded { Next::Delivered } else { self.retry.after_failure(attempts) };
        self.metrics.attempt(&delivery.channel, attempt.succeeded);
        match store::record_attempt(&self.pool, &delivery, &attempt, next, self.disable).await {
            Ok(recorded) => {
                match next {
                    Next::Delivered => self.metrics.delivery(&delivery.channel, "delivered"),
                    Next::Failed => self.metrics.delivery(&delivery.channel, "failed"),
                    Next::RetryAfter(_) => {}
                }
                if let Some(reason) = recorded.disabled {
                    tracing::warn!(reason, "endpoint disabled");
                }
                tracing::info!(
                    succeeded = attempt.succeeded,
                    error = attempt.error,
                    ?next,
                    current = recorded.current,
                    "attempt recorded"
                );
            }
            // The lease runs out and the delivery is sent again.
            Err(error) => tracing::warn!(%error, "cannot record the attempt"),
        }
    }

    async fn send_webhook(&self, delivery: &Claimed) -> Outcome {
        // Checked again before each send, and the connection goes to the
        // address checked: no window for DNS rebinding.
        let vetted = match ssrf::vet(&delivery.target, &self.allow).await {
            Ok(vetted) => vetted,
            Err(refused) => return Outcome::error(refused.to_string()),
        };
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout)
            .resolve(&vetted.host, vetted.addr)
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(error) => return Outcome::error(format!("cannot build the HTTP client: {error}")),
        };
        let id = delivery.id.to_string();
        let timestamp = Utc::now().timestamp();
        let mut secrets: Vec<&str> = delivery.secret.iter().map(String::as_str).collect();
        if let (Some(previous), Some(until)) = (&delivery.previous_secret, delivery.previous_secret_until)
            && until > Utc::now()
        {
            secrets.push(previous);
        }
        let signature = match signing::header(&secrets, &id, timestamp, delivery.body.as_bytes()) {
            Ok(signature) => signature,
            Err(error) => return Outcome::error(error.to_string()),
        };
        let sent = client
            .post(vetted.url.clone())
            .header("content-type", "application/json")
            .header("user-agent", "saga-notification-service")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Outcome::error(format!("timed out after {} ms", self.request_timeout.as_millis()));
            }
            Err(error) => return Outcome::error(format!("request failed: {}", error_chain(&error))),
        };
        let status = response.status();
        let mut body = Vec::new();
        let read = async {
            while body.len() < self.max_response_bytes {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        };
        let read = read.await;
        body.truncate(EXCERPT_BYTES);
        let excerpt = Some(String::from_utf8_lossy(&body).into_owned());
        let code = Some(i32::from(status.as_u16()));
        if let Err(error) = read {
            let error = if error.is_timeout() {
                format!("timed out reading the response after {} ms", self.request_timeout.as_millis())
            } else {
                format!("reading the response failed: {}", error_chain(&error))
            };
            return Outcome { succeeded: false, status_code: code, error: Some(error), response_excerpt: excerpt };
        }
        let error = if status.is_success() {
            None
        } else if status.is_redirection() {
            let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("nowhere");
            Some(format!("HTTP {status}: redirects are not followed (to {location:.200})"))
        } else {
            Some(format!("HTTP {status}"))
        };
        Outcome { succeeded: status.is_success(), status_code: code, error, response_excerpt: excerpt }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_stops_after_the_last_attempt() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(6 * 3600),
            max_attempts: 12,
        };
        assert_eq!(policy.ceiling(1), Duration::from_secs(30));
        assert_eq!(policy.ceiling(2), Duration::from_secs(60));
        assert_eq!(policy.ceiling(11), Duration::from_secs(6 * 3600));
        assert_eq!(policy.ceiling(40), Duration::from_secs(6 * 3600));
        for attempts in 1..12 {
            match policy.after_failure(attempts) {
                Next::RetryAfter(delay) => assert!(delay <= policy.ceiling(attempts)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(policy.after_failure(12), Next::Failed);
        // The documented horizon of the defaults: 30 s * (2^10 - 1) + 6 h.
        assert_eq!(policy.horizon(), Duration::from_secs(30 * 1023 + 6 * 3600));
    }
}
