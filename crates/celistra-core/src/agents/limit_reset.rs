//! STUB.
pub fn parse_reset(message: &str, now_ms: u64, local: chrono_tz::Tz) -> Option<u64> {
    None
}
