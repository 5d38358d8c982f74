//! Bearer tokens (JWT HS256). `sub` is the customer id; `role: "admin"`
//! unlocks admin routes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthArgs;
use crate::customer::CustomerId;
use crate::problem::Problem;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
}

/// How requests are authenticated; cheap to clone.
#[derive(Clone)]
pub struct Auth(Option<Arc<DecodingKey>>);

impl Auth {
    /// `Err` names the missing setting.
    pub fn from_args(args: &AuthArgs) -> Result<Self, String> {
        match (&args.auth_jwt_secret, args.auth_disabled) {
            (_, true) => Ok(Auth(None)),
            (Some(secret), false) => Ok(Auth(Some(Arc::new(DecodingKey::from_secret(secret.as_bytes()))))),
            (None, false) => Err("missing required setting AUTH_JWT_SECRET (or set AUTH_DISABLED=true)".into()),
        }
    }

    pub fn disabled(&self) -> bool {
        self.0.is_none()
    }
}

/// Header naming the customer when authentication is disabled.
pub const CUSTOMER_HEADER: &str = "x-customer-id";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub customer_id: CustomerId,
    pub admin: bool,
}

impl Caller {
    /// A customer may act on their own resources; an admin on any.
    pub fn may_access(&self, customer_id: &str) -> bool {
        self.admin || self.customer_id.as_str() == customer_id
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Auth: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Auth(key) = Auth::from_ref(state);
        let Some(key) = key else {
            // Development mode: everyone is an admin; the header picks the customer.
            let customer_id = match parts.headers.get(CUSTOMER_HEADER) {
                None => CustomerId::parse("anonymous").expect("a valid customer id"),
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(|v| CustomerId::parse(v).ok())
                    .ok_or_else(|| Problem::unauthorized(format!("invalid {CUSTOMER_HEADER} header")))?,
            };
            return Ok(Caller { customer_id, admin: true });
        };
        let header =
            parts.headers.get(AUTHORIZATION).ok_or_else(|| Problem::unauthorized("missing Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            // The scheme name is case-insensitive (RFC 9110 §11.1).
            .and_then(|h| h.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, token)| token)
            .ok_or_else(|| Problem::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let claims = verify(&key, token.trim()).map_err(|e| Problem::unauthorized(format!("invalid token: {e}")))?;
        let customer_id =
            CustomerId::parse(&claims.sub).map_err(|e| Problem::unauthorized(format!("invalid token: sub: {e}")))?;
        Ok(Caller { admin: claims.role.as_deref() == Some("admin"), customer_id })
    }
}

/// An authenticated caller with the admin role. As an extractor it runs
/// before the body is read, so a non-admin gets 403 whatever the body holds.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin
where
    Auth: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.admin { Ok(Admin(caller)) } else { Err(Problem::forbidden("this route needs the admin role")) }
    }
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The claims a verified token is read into; `exp` is checked by the library.
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("issued in the future (iat)")]
    IssuedInTheFuture,
}

/// HS256 only; `exp` and `sub` required; `exp`, `nbf` and `iat` honoured
/// with `LEEWAY_SECS` of clock skew.
fn verify(key: &DecodingKey, token: &str) -> Result<Verified, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<Verified>(token, key, &validation)?.claims;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
        return Err(TokenError::IssuedInTheFuture);
    }
    Ok(claims)
}

/// Mints a token (used by `sagactl token`, the benchmark and the tests).
pub fn mint(secret: &str, subject: &str, admin: bool, ttl: Duration) -> String {
    let exp = (SystemTime::now() + ttl).duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let claims = Claims { sub: subject.to_owned(), role: admin.then(|| "admin".to_owned()), exp };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_token_verifies_and_wrong_secret_does_not() {
        let token = mint(SECRET, "alice", true, Duration::from_secs(60));
        let claims = verify(&DecodingKey::from_secret(SECRET.as_bytes()), &token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role.as_deref(), Some("admin"));
        let other = DecodingKey::from_secret(b"another-secret-another-secret-xx");
        assert!(verify(&other, &token).is_err());
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap()
    }

    #[test]
    fn time_claims_are_honoured_with_a_small_leeway() {
        let key = DecodingKey::from_secret(SECRET.as_bytes());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let hour = now + 3600;
        let accepted = |claims| verify(&key, &signed(claims)).is_ok();
        assert!(accepted(serde_json::json!({"sub": "a", "exp": hour, "nbf": now + 5, "iat": now + 5})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": hour, "nbf": now + 120})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": hour, "iat": now + 120})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": now - 120})));
        assert!(!accepted(serde_json::json!({"sub": "a"})));
        assert!(!accepted(serde_json::json!({"exp": hour})));
    }
}
