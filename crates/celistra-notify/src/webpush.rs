//! Web Push (RFC 8030) to dashboards installed on phones: the VAPID key that identifies this
//! daemon to push services (RFC 8292) and payloads encrypted for one browser (RFC 8291,
//! aes128gcm), both by the `web-push-native` crate.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use celistra_proto::{Notice, PushSubscriptionRequest};
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::p256::PublicKey;
use web_push_native::{Auth, WebPushBuilder};

use crate::NotifyError;

/// Push services take at most 4096 bytes per message; this leaves room for the encryption.
pub const MAX_PAYLOAD: usize = 3800;

/// This daemon's VAPID key pair (P-256).
pub struct VapidKey(ES256KeyPair);

impl VapidKey {
    pub fn generate() -> VapidKey {
        VapidKey(ES256KeyPair::generate())
    }

    /// From the 32-byte private scalar [`VapidKey::to_bytes`] gave.
    pub fn from_bytes(bytes: &[u8]) -> Result<VapidKey, NotifyError> {
        ES256KeyPair::from_bytes(bytes)
            .map(VapidKey)
            .map_err(|e| NotifyError::Invalid(format!("not a P-256 private key: {e}")))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// The public key browsers subscribe with (`applicationServerKey`): base64url, uncompressed.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.public_key().public_key().to_bytes_uncompressed())
    }
}

/// A browser that gets messages: where, and the keys to encrypt for it.
#[derive(Debug, Clone)]
pub struct Device {
    endpoint: http::Uri,
    key: PublicKey,
    auth: Auth,
}

impl Device {
    /// Checks a subscription a dashboard sent: an https endpoint (or http to loopback), a P-256
    /// point and a 16-byte secret. The error says which part is wrong.
    pub fn parse(request: &PushSubscriptionRequest) -> Result<Device, NotifyError> {
        let invalid = |what: &str| NotifyError::Invalid(what.to_owned());
        celistra_core::notifications::check_url(&request.endpoint, false)
            .map_err(|why| NotifyError::Invalid(format!("endpoint: {why}")))?;
        let endpoint = request
            .endpoint
            .parse::<http::Uri>()
            .map_err(|e| NotifyError::Invalid(format!("endpoint: {e}")))?;
        let key = URL_SAFE_NO_PAD
            .decode(request.keys.p256dh.trim_end_matches('='))
            .ok()
            .and_then(|bytes| PublicKey::from_sec1_bytes(&bytes).ok())
            .ok_or_else(|| {
                invalid("keys.p256dh: not a base64url P-256 public key (as PushSubscription.toJSON() gives)")
            })?;
        let auth = URL_SAFE_NO_PAD
            .decode(request.keys.auth.trim_end_matches('='))
            .ok()
            .filter(|bytes| bytes.len() == 16)
            .ok_or_else(|| invalid("keys.auth: not 16 bytes of base64url"))?;
        Ok(Device {
            endpoint,
            key,
            auth: Auth::clone_from_slice(&auth),
        })
    }

    /// An encrypted, VAPID-signed push request carrying `payload`, kept by the push service for
    /// `ttl` while the phone is unreachable.
    pub fn request(
        &self,
        vapid: &VapidKey,
        contact: &str,
        payload: &[u8],
        ttl: Duration,
    ) -> Result<http::Request<Vec<u8>>, NotifyError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(NotifyError::Invalid(format!(
                "push payload of {} bytes is over {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        let mut request = WebPushBuilder::new(self.endpoint.clone(), self.key, self.auth)
            .with_valid_duration(ttl)
            .build(payload.to_vec())
            .map_err(|e| NotifyError::Encrypt(e.to_string()))?;
        // Signed here rather than by `web-push-native`'s `with_vapid`, whose audience drops the
        // port of a push service on a non-default one.
        let claims = Claims::create(ttl.into())
            .with_audience(origin(&self.endpoint))
            .with_subject(contact);
        let token = vapid
            .0
            .sign(claims)
            .map_err(|e| NotifyError::Encrypt(format!("cannot sign the VAPID token: {e}")))?;
        let authorization = format!("vapid t={token}, k={}", vapid.public_key());
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::try_from(authorization)
                .map_err(|e| NotifyError::Encrypt(e.to_string()))?,
        );
        // Approval requests are time-critical: ask push services to wake the phone now.
        request
            .headers_mut()
            .insert("urgency", http::HeaderValue::from_static("high"));
        Ok(request)
    }
}

/// A VAPID token's audience (RFC 8292 section 2): the push resource's origin, `scheme://host`
/// with `:port` when the port is not the scheme's default (RFC 6454).
fn origin(endpoint: &http::Uri) -> String {
    let scheme = endpoint.scheme_str().unwrap_or("https");
    let host = endpoint.host().unwrap_or("");
    let default = match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    match endpoint.port_u16() {
        Some(port) if Some(port) != default => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    }
}

/// `notice` as the push message's JSON, its detail and then its prompt shortened until it fits
/// in [`MAX_PAYLOAD`].
pub fn payload(notice: &Notice) -> Vec<u8> {
    let mut notice = notice.clone();
    loop {
        let json = serde_json::to_vec(&notice).expect("a notice serialises");
        let excess = json.len().saturating_sub(MAX_PAYLOAD);
        let Some(approval) = notice.approval.as_mut().filter(|_| excess > 0) else {
            return json;
        };
        // JSON escapes make text longer than its bytes, so cut by the excess and check again.
        let cut = |text: &str| crate::shorten(text, text.len().saturating_sub(excess + 8));
        match &approval.detail {
            Some(detail) if detail.len() > 16 => approval.detail = Some(cut(detail)),
            Some(_) => approval.detail = None,
            None if approval.prompt.len() > 16 => approval.prompt = cut(&approval.prompt),
            None => {
                approval.detail = None;
                approval.key = None;
                if serde_json::to_vec(&notice).map_or(0, |j| j.len()) > MAX_PAYLOAD {
                    notice.approval = None;
                }
            }
        }
    }
}

/// The receiving end of a subscription, as a browser holds it: for loopback receivers that check
/// what the daemon sends (tests, the benchmark).
pub struct Browser {
    private_key: [u8; 32],
    auth: [u8; 16],
}

impl Browser {
    pub fn generate() -> Result<Browser, NotifyError> {
        let random = |buf: &mut [u8]| {
            getrandom::fill(buf).map_err(|e| NotifyError::Invalid(format!("no randomness: {e}")))
        };
        let mut auth = [0u8; 16];
        random(&mut auth)?;
        loop {
            let mut private_key = [0u8; 32];
            random(&mut private_key)?;
            // Nearly every 32 bytes are a valid scalar; draw again otherwise.
            if web_push_native::p256::SecretKey::from_slice(&private_key).is_ok() {
                return Ok(Browser { private_key, auth });
            }
        }
    }

    /// The keys a browser's `PushSubscription.toJSON()` shows.
    pub fn keys(&self) -> celistra_proto::PushKeys {
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let secret = web_push_native::p256::SecretKey::from_slice(&self.private_key)
            .expect("checked when generated");
        celistra_proto::PushKeys {
            p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(self.auth),
        }
    }

    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, NotifyError> {
        decrypt(body, &self.private_key, &self.auth)
    }
}

/// Decrypts a message as a browser would.
pub fn decrypt(body: &[u8], private_key: &[u8], auth: &[u8]) -> Result<Vec<u8>, NotifyError> {
    let secret = web_push_native::p256::SecretKey::from_slice(private_key)
        .map_err(|_| NotifyError::Invalid("not a P-256 private key".into()))?;
    if auth.len() != 16 {
        return Err(NotifyError::Invalid("auth secret must be 16 bytes".into()));
    }
    web_push_native::decrypt(body.to_vec(), &secret, &Auth::clone_from_slice(auth))
        .map_err(|e| NotifyError::Encrypt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use celistra_proto::PushKeys;
    use web_push_native::jwt_simple::prelude::{
        ECDSAP256PublicKeyLike, ES256PublicKey, NoCustomClaims,
    };

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    // RFC 8291, Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn rfc_device() -> Device {
        Device::parse(&PushSubscriptionRequest {
            endpoint: "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV".into(),
            keys: PushKeys {
                p256dh: UA_PUBLIC.into(),
                auth: AUTH.into(),
            },
            expiration_time: None,
            label: None,
        })
        .unwrap()
    }

    #[test]
    fn the_rfc_8291_message_decrypts_to_its_plaintext() {
        let body = b64(BODY);
        // The header the RFC gives: salt, record size 4096, the sender's public key as key id.
        assert_eq!(&body[..16], b64(SALT).as_slice());
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().unwrap()), 4096);
        assert_eq!(&body[21..21 + 65], b64(AS_PUBLIC).as_slice());
        let plain = decrypt(&body, &b64(UA_PRIVATE), &b64(AUTH)).unwrap();
        assert_eq!(plain, PLAINTEXT.as_bytes());
        let mut altered = body.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(decrypt(&altered, &b64(UA_PRIVATE), &b64(AUTH)).is_err());
    }

    #[test]
    fn a_request_to_the_rfc_browser_decrypts_there_and_carries_vapid() {
        let vapid = VapidKey::generate();
        let request = rfc_device()
            .request(
                &vapid,
                "mailto:ops@example.net",
                PLAINTEXT.as_bytes(),
                Duration::from_secs(300),
            )
            .unwrap();
        let headers = request.headers();
        assert_eq!(headers["content-encoding"], "aes128gcm");
        assert_eq!(headers["ttl"], "300");
        assert_eq!(headers["urgency"], "high");
        let body = request.body();
        assert_ne!(
            &body[..16],
            b64(SALT).as_slice(),
            "a fresh salt per message"
        );
        let plain = decrypt(body, &b64(UA_PRIVATE), &b64(AUTH)).unwrap();
        assert_eq!(plain, PLAINTEXT.as_bytes());

        // RFC 8292: `vapid t=<JWT signed ES256>, k=<public key>`, audience the push origin.
        let authorization = headers["authorization"].to_str().unwrap();
        let (token, key) = authorization
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(key, vapid.public_key());
        let public = ES256PublicKey::from_bytes(&b64(key)).unwrap();
        let claims = public
            .verify_token::<NoCustomClaims>(token, None)
            .expect("signed by the VAPID key");
        assert_eq!(
            claims.audiences.unwrap().into_string().unwrap(),
            "https://push.example.net"
        );
        assert_eq!(claims.subject.as_deref(), Some("mailto:ops@example.net"));
        let other = VapidKey::generate();
        let other_public = ES256PublicKey::from_bytes(&b64(&other.public_key())).unwrap();
        assert!(
            other_public
                .verify_token::<NoCustomClaims>(token, None)
                .is_err()
        );
    }

    #[test]
    fn the_vapid_audience_is_the_origin_with_a_non_default_port() {
        for (endpoint, audience) in [
            (
                "https://push.example.net/wpush/v2/x",
                "https://push.example.net",
            ),
            ("https://push.example.net:443/x", "https://push.example.net"),
            (
                "https://push.example.net:8443/x",
                "https://push.example.net:8443",
            ),
            ("http://127.0.0.1:4000/push/1", "http://127.0.0.1:4000"),
            ("http://localhost:80/push/1", "http://localhost"),
        ] {
            assert_eq!(origin(&endpoint.parse().unwrap()), audience, "{endpoint}");
        }
    }

    #[test]
    fn long_requests_are_shortened_to_fit_a_push_message() {
        let approval: celistra_proto::Approval = serde_json::from_value(serde_json::json!({
            "id": "ap-000000000001", "agent_id": "ag-1", "agent_name": "coder", "origin": "ask",
            "prompt": "p\"".repeat(600), "detail": "d\\\n".repeat(4000),
            "created_at_ms": 1, "expires_at_ms": 2, "on_timeout": "deny", "status": "pending"
        }))
        .unwrap();
        let notice = Notice {
            kind: celistra_proto::NoticeKind::ApprovalRequested,
            machine: "m-1".into(),
            approval: Some(approval),
            decide_url: Some("https://x/d/token".into()),
            activity: None,
            sent_at_ms: 1,
        };
        let bytes = payload(&notice);
        assert!(bytes.len() <= MAX_PAYLOAD, "{}", bytes.len());
        let back: Notice = serde_json::from_slice(&bytes).unwrap();
        let approval = back.approval.unwrap();
        assert_eq!(approval.id, "ap-000000000001");
        assert_eq!(back.decide_url, notice.decide_url);
        assert!(approval.detail.is_none_or(|d| d.ends_with('…')));
        let small = Notice {
            approval: None,
            ..notice
        };
        assert_eq!(payload(&small), serde_json::to_vec(&small).unwrap());
    }

    #[test]
    fn a_generated_browser_reads_what_is_sent_to_it() {
        let browser = Browser::generate().unwrap();
        let device = Device::parse(&PushSubscriptionRequest {
            endpoint: "https://push.example.net/x".into(),
            keys: browser.keys(),
            expiration_time: None,
            label: None,
        })
        .unwrap();
        let request = device
            .request(
                &VapidKey::generate(),
                "mailto:a@b",
                b"hello",
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(browser.decrypt(request.body()).unwrap(), b"hello");
        let stranger = Browser::generate().unwrap();
        assert!(stranger.decrypt(request.body()).is_err());
    }

    #[test]
    fn keys_survive_a_round_trip_and_bad_subscriptions_are_named() {
        let key = VapidKey::generate();
        let again = VapidKey::from_bytes(&key.to_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(b64(&key.public_key()).len(), 65);

        let mut request = PushSubscriptionRequest {
            endpoint: "http://push.example.net/x".into(),
            keys: PushKeys {
                p256dh: UA_PUBLIC.into(),
                auth: AUTH.into(),
            },
            expiration_time: None,
            label: None,
        };
        let why = |r: &PushSubscriptionRequest| Device::parse(r).unwrap_err().to_string();
        assert!(why(&request).starts_with("endpoint:"), "{}", why(&request));
        request.endpoint = "http://127.0.0.1:9/push".into();
        assert!(Device::parse(&request).is_ok());
        request.keys.p256dh = "AAAA".into();
        assert!(why(&request).starts_with("keys.p256dh"));
        request.keys.p256dh = UA_PUBLIC.into();
        request.keys.auth = "AAAA".into();
        assert!(why(&request).starts_with("keys.auth"));
        let long = vec![b'x'; MAX_PAYLOAD + 1];
        request.keys.auth = AUTH.into();
        let device = Device::parse(&request).unwrap();
        assert!(
            device
                .request(&key, "mailto:a@b", &long, Duration::from_secs(1))
                .is_err()
        );
    }
}
