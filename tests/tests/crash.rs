//! Crash safety: under a steady stream of orders (and some cancels), each
//! service in turn is SIGKILLed at a random moment and restarted. After a
//! quiet period every order must be final and money and stock conserved
//! exactly, with nothing charged twice and nothing left in outboxes or DLQs.
//!
//! CRASH_TEST_SECONDS (default 20) sets how long load and kills go on;
//! `CRASH_TEST_SECONDS=300 cargo test -p saga-tests --test crash -- --nocapture`
//! runs a longer soak.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use saga_tests::{Options, Platform, Svc, shop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_any_service_mid_saga_loses_nothing() {
    let seconds: u64 = std::env::var("CRASH_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let options = Options { step_timeout: Duration::from_secs(3), ..Options::default() };
    let mut platform = Platform::start(options).await;
    shop::seed(&platform).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = shop::shop(&platform, 1, Duration::ZERO, stop.clone()).await;
    let stop_at = Instant::now() + Duration::from_secs(seconds);

    // Kill order, payment, inventory in turn, each at a random moment.
    let mut kills = 0;
    let mut turn = 0;
    while Instant::now() < stop_at {
        let pause = rand::rng().random_range(800..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let svc = Svc::ALL[turn % 3];
        turn += 1;
        let down_for = rand::rng().random_range(0..800);
        platform.kill(svc, 0);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(down_for)).await;
        platform.restart(svc, 0);
    }
    stop.store(true, Ordering::Relaxed);
    platform.wait_ready().await;
    let (accepted, refused) = (counts.accepted.load(Ordering::Relaxed), counts.refused.load(Ordering::Relaxed));
    println!(
        "crash test: {seconds}s, {kills} SIGKILLs, {accepted} orders accepted ({:.0}/s), {refused} POSTs failed while the order service was down",
        accepted as f64 / seconds as f64
    );
    assert!(accepted > 0);

    shop::wait_until_quiet(&platform, Duration::from_secs(90)).await;
    // Nothing dead-lettered: no poison was injected in this test.
    shop::check_invariants(&platform, &BTreeSet::new()).await;
    platform.shutdown().await;
}
