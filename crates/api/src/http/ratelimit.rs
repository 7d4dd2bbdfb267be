//! Per-tenant request rate limits: a token bucket per tenant on each
//! replica, so one noisy tenant cannot take every request slot from the
//! others. A request over the limit gets 429 with `Retry-After` (whole
//! seconds until a token is there) before its handler runs.
//!
//! Per replica, not cluster-wide: N replicas let a tenant through at up to
//! N times the rate. Keeping it out of the store costs no write per read.
//! System admins and operators (the cloud's own automation) are not
//! limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::problem::Problem;

/// Requests per second and burst per tenant, unless told otherwise.
pub const DEFAULT_RATE: f64 = 2_000.0;
pub const DEFAULT_BURST: f64 = 4_000.0;

/// Buckets of tenants idle longer than this are forgotten (a full bucket
/// and a missing one behave the same).
const IDLE: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    inner: Mutex<Inner>,
}

struct Inner {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
    next_purge: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            inner: Mutex::new(Inner {
                rate: DEFAULT_RATE,
                burst: DEFAULT_BURST,
                buckets: HashMap::new(),
                next_purge: Instant::now() + IDLE,
            }),
        }
    }
}

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`, per tenant.
    pub fn set(&self, rate: f64, burst: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.rate = rate.max(f64::MIN_POSITIVE);
        s.burst = burst.max(1.0);
        s.buckets.clear();
    }

    /// Takes a token for `tenant`, or says how long until one is there.
    pub fn take(&self, tenant: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now >= s.next_purge {
            s.buckets.retain(|_, b| now.duration_since(b.at) < IDLE);
            s.next_purge = now + IDLE;
        }
        let (rate, burst) = (s.rate, s.burst);
        let b = s.buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// The 429 answer.
pub fn too_many(tenant: &str, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = Problem::too_many_requests(format!(
        "tenant {tenant:?} is over its request rate limit; retry after {secs} s"
    ))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_the_rate_and_caps_at_the_burst() {
        let l = RateLimiter::default();
        l.set(10.0, 5.0);
        for _ in 0..5 {
            l.take("a").unwrap();
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another tenant has its own bucket.
        l.take("b").unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        l.take("a").unwrap();
        assert!(l.take("a").is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            l.take("a").unwrap();
        }
        assert!(l.take("a").is_err(), "the burst caps the refill");
    }
}
