//! Decision links: capability URLs that decide one approval request. A link names the request,
//! the channel it was sent through and its expiry, and is signed with HMAC-SHA256 under a key
//! only the daemon holds, so it cannot be forged or stretched; once the request is decided the
//! daemon refuses it, so it works once.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Separates these MACs from any other use of the key.
const CONTEXT: &[u8] = b"celistra decision link v1\0";

/// The daemon's link-signing key (32 random bytes, kept in a 0600 file).
pub struct LinkKey([u8; 32]);

/// What a link grants: deciding `approval_id` until `expires_at_ms`, through channel `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub approval_id: String,
    /// The channel the link was sent through (`ntfy:phone`, `push:ps-…`); recorded with the
    /// decision.
    pub via: String,
    pub expires_at_ms: u64,
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this is not a decision link")]
    Malformed,
    #[error("this decision link was not issued by this daemon")]
    Forged,
    #[error("this decision link has expired")]
    Expired,
}

impl LinkKey {
    pub fn new(key: [u8; 32]) -> LinkKey {
        LinkKey(key)
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(CONTEXT);
        mac.update(payload.as_bytes());
        mac
    }

    /// The token for `link`: `<approval id>.<via>.<expiry ms>.<mac>`.
    pub fn mint(&self, link: &Link) -> String {
        let payload = format!("{}.{}.{}", link.approval_id, link.via, link.expires_at_ms);
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a token: its signature (in constant time), then its expiry.
    pub fn open(&self, token: &str, now_ms: u64) -> Result<Link, LinkError> {
        let (payload, tag) = token.rsplit_once('.').ok_or(LinkError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(approval_id), Some(via), Some(expiry), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let well_formed = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || extra.contains(&b)
                })
        };
        let expires_at_ms = expiry.parse::<u64>().map_err(|_| LinkError::Malformed)?;
        if !well_formed(approval_id, b"") || !well_formed(via, b":") {
            return Err(LinkError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Malformed)?;
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Forged)?;
        if now_ms >= expires_at_ms {
            return Err(LinkError::Expired);
        }
        Ok(Link {
            approval_id: approval_id.to_owned(),
            via: via.to_owned(),
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link {
            approval_id: "ap-0123456789ab".into(),
            via: "ntfy:phone".into(),
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn a_minted_link_opens_until_it_expires() {
        let key = LinkKey::new([7; 32]);
        let token = key.mint(&link());
        assert!(
            token.starts_with("ap-0123456789ab.ntfy:phone.2000."),
            "{token}"
        );
        assert_eq!(key.open(&token, 1_999), Ok(link()));
        assert_eq!(key.open(&token, 2_000), Err(LinkError::Expired));
    }

    #[test]
    fn changed_or_foreign_links_are_forged() {
        let key = LinkKey::new([7; 32]);
        let token = key.mint(&link());
        let stretched = token.replace(".2000.", ".9999.");
        assert_eq!(key.open(&stretched, 0), Err(LinkError::Forged));
        let other = token.replace("ap-0123456789ab", "ap-0123456789ac");
        assert_eq!(key.open(&other, 0), Err(LinkError::Forged));
        assert_eq!(
            LinkKey::new([8; 32]).open(&token, 0),
            Err(LinkError::Forged)
        );
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.open(std::str::from_utf8(&flipped).unwrap(), 0),
            Err(LinkError::Forged)
        );
    }

    #[test]
    fn junk_is_malformed() {
        let key = LinkKey::new([7; 32]);
        for junk in [
            "",
            "abc",
            "a.b.c",
            "a.b.notanumber.AAAA",
            "A.b.1.AAAA",
            "a.b.1.%%",
        ] {
            assert_eq!(key.open(junk, 0), Err(LinkError::Malformed), "{junk}");
        }
    }
}
