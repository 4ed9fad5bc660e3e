//! Sending one notification: an HTTP request per attempt, retried with exponential backoff and
//! jitter on network errors, timeouts, 408, 429 and 5xx, never past a deadline. Redirects are not
//! followed, so a signed body or a decision link only ever goes where it was configured to.

use std::time::Duration;

use crate::NotifyError;

/// Longest a single attempt may take, connect included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between attempts, `Retry-After` included.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// The HTTP client every channel shares (TLS by rustls, the system's roots).
pub struct Sender {
    client: reqwest::Client,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub initial: Duration,
    /// Milliseconds since the epoch after which trying is pointless (the request expired).
    pub deadline_ms: Option<u64>,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// The receiver answered with a status retrying cannot change (4xx other than 408/429).
    Refused {
        status: u16,
        error: String,
    },
    /// Every attempt failed, or the deadline came first.
    Failed {
        attempts: u32,
        error: String,
    },
}

impl Sender {
    pub fn new() -> Result<Sender, NotifyError> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("celistrad/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(|client| Sender { client })
            .map_err(|e| NotifyError::Client(chain(&e)))
    }

    /// Sends what `build` makes (called again for each attempt, so signatures stay fresh).
    pub async fn deliver(
        &self,
        mut build: impl FnMut() -> Result<http::Request<Vec<u8>>, NotifyError>,
        retry: &Retry,
        now_ms: impl Fn() -> u64,
    ) -> Outcome {
        let mut delay = retry.initial;
        let attempts = retry.attempts.max(1);
        for attempt in 1..=attempts {
            let request = match build().and_then(|request| {
                reqwest::Request::try_from(request)
                    .map_err(|e| NotifyError::Invalid(format!("bad request: {}", chain(&e))))
            }) {
                Ok(request) => request,
                Err(e) => {
                    return Outcome::Failed {
                        attempts: attempt,
                        error: e.to_string(),
                    };
                }
            };
            let mut retry_after = None;
            let error = match self.client.execute(request).await {
                Ok(response) if response.status().is_success() => {
                    return Outcome::Delivered { attempts: attempt };
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    retry_after = response
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let error = format!("HTTP {status}: {}", crate::shorten(text.trim(), 200));
                    if !(status == 408 || status == 429 || status >= 500) {
                        return Outcome::Refused { status, error };
                    }
                    error
                }
                Err(e) => chain(&e),
            };
            if attempt == attempts {
                return Outcome::Failed {
                    attempts: attempt,
                    error,
                };
            }
            let wait = retry_after
                .unwrap_or_else(|| jittered(delay))
                .min(MAX_DELAY);
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            if retry
                .deadline_ms
                .is_some_and(|deadline| now_ms().saturating_add(wait_ms) >= deadline)
            {
                return Outcome::Failed {
                    attempts: attempt,
                    error: format!("{error} (no retry: the request expires first)"),
                };
            }
            tokio::time::sleep(wait).await;
            delay = delay.saturating_mul(2).min(MAX_DELAY);
        }
        unreachable!("the last attempt returns")
    }
}

/// `delay` give or take a fifth, so retries from many daemons do not arrive together.
fn jittered(delay: Duration) -> Duration {
    let spread = getrandom::u32().unwrap_or(0) % 401;
    delay.mul_f64(0.8 + f64::from(spread) / 1000.0)
}

/// An error with its causes (`error sending request: connection refused`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_millis(1000));
            assert!((800..=1200).contains(&wait.as_millis()), "{wait:?}");
        }
    }
}
