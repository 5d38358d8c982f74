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
    pub customer_id: String,
    pub admin: bool,
}

impl Caller {
    /// A customer may act on their own resources; an admin on any.
    pub fn may_access(&self, customer_id: &str) -> bool {
        self.admin || self.customer_id == customer_id
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
            let customer_id =
                parts.headers.get(CUSTOMER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_owned();
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
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(Problem::unauthorized("invalid token: sub must be 1-255 characters"));
        }
        Ok(Caller { admin: claims.role.as_deref() == Some("admin"), customer_id: claims.sub })
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

fn verify(key: &DecodingKey, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 30;
    Ok(jsonwebtoken::decode::<Claims>(token, key, &validation)?.claims)
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
}
