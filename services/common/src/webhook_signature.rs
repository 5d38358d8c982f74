//! Standard Webhooks signatures (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed with the base64-decoded part of a `whsec_` secret. During a
//! rotation's overlap both secrets sign: the values are space-separated.
//! The notification service signs with it; `sagactl`'s demo receiver
//! verifies with it ([`verify`], what a receiver should do).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A new `whsec_` secret: base64 of `SECRET_BYTES` random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a webhook secret is `whsec_` followed by base64")]
pub struct InvalidSecret;

/// The key of a `whsec_` secret.
pub fn key(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let encoded = secret.strip_prefix(PREFIX).ok_or(InvalidSecret)?;
    STANDARD.decode(encoded).map_err(|_| InvalidSecret)
}

/// One signature: `v1,<base64>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, InvalidSecret> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, InvalidSecret> {
    let signatures = secrets.iter().map(|s| sign(s, id, timestamp, body)).collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now (replay protection)")]
    Stale(i64),
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
    #[error(transparent)]
    Secret(#[from] InvalidSecret),
}

/// What a receiver checks: the timestamp within `tolerance_seconds` of
/// `now` (so a captured request cannot be replayed later), and one of the
/// header's `v1,` signatures made with `secret` over exactly these bytes
/// (compared in constant time).
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), Rejected> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| Rejected::BadTimestamp)?;
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_seconds {
        return Err(Rejected::Stale(skew));
    }
    let key = key(secret)?;
    let matches = |signature: &str| {
        let Some(encoded) = signature.strip_prefix("v1,") else { return false };
        let Ok(given) = STANDARD.decode(encoded) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    };
    if signatures.split(' ').any(matches) { Ok(()) } else { Err(Rejected::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_accepts_either_signature_and_refuses_tampering_and_replays() {
        let (old, new) = (new_secret(), new_secret());
        let value = header(&[&new, &old], "msg_1", 1000, b"{}").unwrap();
        assert_eq!(verify(&old, "msg_1", "1000", &value, b"{}", 1010, 300), Ok(()));
        assert_eq!(verify(&new, "msg_1", "1000", &value, b"{}", 990, 300), Ok(()));
        assert_eq!(verify(&new_secret(), "msg_1", "1000", &value, b"{}", 1000, 300), Err(Rejected::NoMatch));
        assert_eq!(verify(&new, "msg_2", "1000", &value, b"{}", 1000, 300), Err(Rejected::NoMatch));
        assert_eq!(verify(&new, "msg_1", "1000", &value, b"{ }", 1000, 300), Err(Rejected::NoMatch));
        assert_eq!(verify(&new, "msg_1", "1001", &value, b"{}", 1000, 300), Err(Rejected::NoMatch));
        assert_eq!(verify(&new, "msg_1", "1000", &value, b"{}", 1301, 300), Err(Rejected::Stale(301)));
        assert_eq!(verify(&new, "msg_1", "soon", &value, b"{}", 1000, 300), Err(Rejected::BadTimestamp));
        assert_eq!(verify(&new, "msg_1", "1000", "v2,abc v1,!!", b"{}", 1000, 300), Err(Rejected::NoMatch));
    }

    /// The test vector the Standard Webhooks reference libraries share.
    #[test]
    fn the_specification_test_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn both_secrets_sign_during_a_rotation() {
        let (old, new) = (new_secret(), new_secret());
        let value = header(&[&new, &old], "msg_1", 10, b"{}").unwrap();
        let parts: Vec<&str> = value.split(' ').collect();
        assert_eq!(parts, [sign(&new, "msg_1", 10, b"{}").unwrap(), sign(&old, "msg_1", 10, b"{}").unwrap()]);
    }

    #[test]
    fn new_secrets_are_random_and_decode() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), SECRET_BYTES);
        assert_eq!(key("nope"), Err(InvalidSecret));
        assert_eq!(key("whsec_!!"), Err(InvalidSecret));
    }
}
