//! The operator's two Kubernetes clients, both with bounded calls.
//!
//! kube's defaults leave an ordinary request unbounded once connected (no
//! read timeout since kube 3: it would cut exec/attach sessions, kube-rs
//! #1945) and retry 429/503/504 up to 15 times with exponential backoff,
//! silently. Behind a half-open partition (nothing answers, nothing closes)
//! one request of a reconcile then waits forever, and kube-runtime holds every
//! later trigger of that resource behind it.
//!
//! - **calls** (reconciles, events, the lease): connect timeout, and a read
//!   timeout counted from the request's write (`reset_reader_on_write`), so it
//!   bounds the wait for the response headers, never the time a pooled
//!   connection sat idle. No silent retry layer: a failed call fails the
//!   reconcile, which the controller retries with its own logged backoff.
//! - **watches**: the same connect timeout, no read timeout (a watch is a long
//!   poll and may be quiet for minutes); a silent watch is ended by
//!   kube-runtime's idle timeout, `timeoutSeconds` + 5 s ([`WATCH_TIMEOUT_SECS`]),
//!   and the watcher reconnects with its backoff.

use std::time::Duration;

use kube::{Client, Config};

/// `timeoutSeconds` of every watch: the API server ends each watch after it
/// (the watcher resumes from the last resourceVersion), and kube-runtime
/// treats a watch silent for it + 5 s as dead and reconnects.
pub const WATCH_TIMEOUT_SECS: u32 = 30;

/// Bounds of the calls to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTimeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// From a request's write to its response's headers (and between reads of its body).
    pub read: Duration,
}

/// The configuration of the client for ordinary calls.
pub fn calls_config(mut config: Config, timeouts: ApiTimeouts) -> Config {
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.read);
    config.reset_reader_on_write = true;
    config.write_timeout = Some(timeouts.read);
    config.default_retry = false;
    config
}

/// The configuration of the client for watches.
pub fn watches_config(mut config: Config, timeouts: ApiTimeouts) -> Config {
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = None;
    config.write_timeout = Some(timeouts.read);
    config.default_retry = false;
    config
}

/// The two clients (calls, watches) from the inferred configuration (in-cluster or KUBECONFIG).
pub async fn clients(timeouts: ApiTimeouts) -> Result<(Client, Client), String> {
    let config = Config::infer().await.map_err(|error| error.to_string())?;
    let calls = Client::try_from(calls_config(config.clone(), timeouts)).map_err(|error| error.to_string())?;
    let watches = Client::try_from(watches_config(config, timeouts)).map_err(|error| error.to_string())?;
    Ok((calls, watches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_bounded_and_watches_are_not_cut() {
        let timeouts = ApiTimeouts { connect: Duration::from_secs(5), read: Duration::from_secs(20) };
        let base = Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert!(base.read_timeout.is_none() && base.default_retry, "kube's defaults, which this module changes");
        let calls = calls_config(base.clone(), timeouts);
        assert_eq!(calls.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(calls.read_timeout, Some(Duration::from_secs(20)));
        assert!(calls.reset_reader_on_write, "the read timeout counts from the request, not the idle pool");
        assert!(!calls.default_retry, "no silent retries");
        let watches = watches_config(base, timeouts);
        assert_eq!(watches.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(watches.read_timeout, None, "a quiet watch is not cut by a read timeout");
        assert!(!watches.default_retry);
    }
}
