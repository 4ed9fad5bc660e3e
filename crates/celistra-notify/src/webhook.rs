//! Signed webhooks: each notice as JSON, with `X-Celistra-Signature: t=<unix seconds>,v1=<hex>`
//! where `v1` is HMAC-SHA256 over `<t>.<body>` under the channel's secret. Receivers check the
//! signature and reject old timestamps; `X-Celistra-Delivery` stays the same across retries so
//! they can drop duplicates.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::NotifyError;

type HmacSha256 = hmac::Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-celistra-signature";
pub const DELIVERY_HEADER: &str = "x-celistra-delivery";
pub const EVENT_HEADER: &str = "x-celistra-event";

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// What a receiver does: the header parses, the MAC matches (in constant time) and the
/// timestamp is within `tolerance_secs` of `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut timestamp = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => tag = decode_hex(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(tag)) = (timestamp, tag) else {
        return false;
    };
    now.abs_diff(timestamp) <= tolerance_secs
        && mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The POST for one attempt, signed now.
pub fn request(
    url: &str,
    secret: &[u8],
    event: &str,
    delivery: &str,
    body: &[u8],
    now: u64,
) -> Result<http::Request<Vec<u8>>, NotifyError> {
    http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, event)
        .header(DELIVERY_HEADER, delivery)
        .header(SIGNATURE_HEADER, signature(secret, now, body))
        .body(body.to_vec())
        .map_err(|e| NotifyError::Invalid(format!("webhook address: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_over_time_and_body_and_expire() {
        // What a receiver computes by hand: HMAC-SHA256 over "<t>.<body>".
        let mut expected = HmacSha256::new_from_slice(b"secret").unwrap();
        expected.update(b"1700000000.{\"a\":1}");
        let hex: String = expected
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{\"a\":1}"),
            format!("t=1700000000,v1={hex}")
        );

        let header = signature(b"secret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert!(verify(b"secret", &header, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(
            b"secret",
            &header,
            b"{\"a\":2}",
            1_700_000_100,
            300
        ));
        assert!(!verify(b"other", &header, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(
            b"secret",
            &header,
            b"{\"a\":1}",
            1_700_001_000,
            300
        ));
        assert!(!verify(b"secret", "t=1,v1=zz", b"", 1, 300));
        assert!(!verify(b"secret", "garbage", b"", 1, 300));
    }

    #[test]
    fn the_request_carries_event_delivery_and_signature() {
        let request = request(
            "https://hooks.example.net/in",
            b"k",
            "approval_requested",
            "dl-1",
            b"{}",
            5,
        )
        .unwrap();
        let headers = request.headers();
        assert_eq!(headers[EVENT_HEADER], "approval_requested");
        assert_eq!(headers[DELIVERY_HEADER], "dl-1");
        assert!(verify(
            b"k",
            headers[SIGNATURE_HEADER].to_str().unwrap(),
            b"{}",
            5,
            0
        ));
    }
}
