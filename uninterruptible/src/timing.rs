//! How long a start by restart takes, step by step. The old process stamps the moment it starts
//! the new copy (`CLOCK_MONOTONIC`, shared by every process of the machine); the new process
//! marks each step after it, and logs them once it has said `ready`:
//!
//! ```text
//! ready 2.73 ms after the restart started: exec and load 1.89 ms, runtime 0.56 ms, TLS 0.04 ms, handoff 0.03 ms, init 0.01 ms, pidfile and accept 0.22 ms
//! ```

use std::sync::Mutex;

/// Set by the old process for the new one: when it started it, in nanoseconds of
/// `CLOCK_MONOTONIC`.
pub(crate) const SPAWNED_AT: &str = "UNINTERRUPTIBLE_SPAWNED_AT";

/// When this process was started by a restart, and each step since.
static MARKS: Mutex<Option<Marks>> = Mutex::new(None);

struct Marks {
    spawned: u64,
    steps: Vec<(&'static str, u64)>,
}

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub(crate) fn now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or_default()
}

/// Reads (and removes) the old process's stamp, and marks the first step.
pub(crate) fn begin(first_step: &'static str) {
    let entered = now();
    let Some(spawned) = std::env::var(SPAWNED_AT).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    // SAFETY: the standard library's environment functions hold a lock; another thread's direct
    // `getenv(3)` would race, which no runtime thread does.
    unsafe { std::env::remove_var(SPAWNED_AT) };
    *MARKS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Marks {
        spawned,
        steps: vec![(first_step, entered)],
    });
}

/// The step `name` has just ended.
pub(crate) fn mark(name: &'static str) {
    let at = now();
    if let Some(marks) = MARKS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        marks.steps.push((name, at));
    }
}

/// Logs the steps of a start by restart, once; nothing for a first start.
pub(crate) fn report() {
    let Some(marks) = MARKS.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut previous = marks.spawned;
    let steps: Vec<String> = marks
        .steps
        .iter()
        .map(|(name, at)| {
            let took = at.saturating_sub(previous);
            previous = *at;
            format!("{name} {:.2} ms", ms(took))
        })
        .collect();
    tracing::info!(
        "ready {:.2} ms after the restart started: {}",
        ms(previous.saturating_sub(marks.spawned)),
        steps.join(", ")
    );
}
