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
    pub iat: u64,
}

/// How requests are authenticated; cheap to clone. `None`: authentication
/// disabled (development mode only).
#[derive(Clone)]
pub struct Auth(Option<Arc<Verifier>>);

impl Auth {
    /// `Err` names the missing or conflicting setting.
    pub fn from_args(args: &AuthArgs) -> Result<Self, String> {
        match (&args.auth_jwt_secret, args.auth_disabled) {
            (_, true) if !args.dev_mode => Err(
                "AUTH_DISABLED=true is allowed only on a development platform (SAGA_DEV_MODE=true); set AUTH_JWT_SECRET instead".into(),
            ),
            (_, true) => Ok(Auth(None)),
            (Some(secret), false) => Ok(Auth(Some(Arc::new(Verifier::new(secret.expose().as_bytes(), args))))),
            (None, false) => Err("missing required setting AUTH_JWT_SECRET".into()),
        }
    }

    pub fn disabled(&self) -> bool {
        self.0.is_none()
    }
}

/// The key and the rules a token is checked against.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Option<Duration>,
}

impl Verifier {
    fn new(secret: &[u8], args: &AuthArgs) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &args.auth_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &args.auth_audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        } else {
            // Without a configured audience, a token's `aud` is not checked.
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Verifier { key: DecodingKey::from_secret(secret), validation, max_lifetime: args.auth_max_token_lifetime }
    }

    /// `exp`, `sub` (and `iss`/`aud` when configured) required; `exp`, `nbf`
    /// and `iat` honoured with `LEEWAY_SECS` of clock skew; with a maximum
    /// lifetime, `iat` is required and `exp - iat` bounded.
    fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let claims = jsonwebtoken::decode::<Verified>(token, &self.key, &self.validation)?.claims;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(TokenError::IssuedInTheFuture);
        }
        if let Some(max) = self.max_lifetime {
            let iat = claims.iat.ok_or(TokenError::NoIssuedAt)?;
            if claims.exp.saturating_sub(iat) > max.as_secs() {
                return Err(TokenError::LivesTooLong(max.as_secs()));
            }
        }
        Ok(claims)
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
        let Auth(verifier) = Auth::from_ref(state);
        let Some(verifier) = verifier else {
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
        let claims = verifier.verify(token.trim()).map_err(|e| Problem::unauthorized(format!("invalid token: {e}")))?;
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
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error(transparent)]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("issued in the future (iat)")]
    IssuedInTheFuture,
    #[error("no iat (required when the token lifetime is bounded)")]
    NoIssuedAt,
    #[error("lifetime (exp - iat) exceeds {0} s")]
    LivesTooLong(u64),
}

/// Mints a token (used by `sagactl token`, the benchmark and the tests).
pub fn mint(secret: &str, subject: &str, admin: bool, ttl: Duration) -> String {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let claims =
        Claims { sub: subject.to_owned(), role: admin.then(|| "admin".to_owned()), exp: iat + ttl.as_secs(), iat };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn args() -> AuthArgs {
        AuthArgs {
            auth_jwt_secret: Some(crate::secret::Secret::new(SECRET)),
            auth_issuer: None,
            auth_audience: None,
            auth_max_token_lifetime: None,
            auth_disabled: false,
            dev_mode: false,
        }
    }

    fn verifier(args: &AuthArgs) -> Verifier {
        Verifier::new(SECRET.as_bytes(), args)
    }

    #[test]
    fn minted_token_verifies_and_wrong_secret_does_not() {
        let token = mint(SECRET, "alice", true, Duration::from_secs(60));
        let claims = verifier(&args()).verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role.as_deref(), Some("admin"));
        let other = Verifier::new(b"another-secret-another-secret-xx", &args());
        assert!(other.verify(&token).is_err());
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn time_claims_are_honoured_with_a_small_leeway() {
        let verifier = verifier(&args());
        let now = now();
        let hour = now + 3600;
        let accepted = |claims| verifier.verify(&signed(claims)).is_ok();
        assert!(accepted(serde_json::json!({"sub": "a", "exp": hour, "nbf": now + 5, "iat": now + 5})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": hour, "nbf": now + 120})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": hour, "iat": now + 120})));
        assert!(!accepted(serde_json::json!({"sub": "a", "exp": now - 120})));
        assert!(!accepted(serde_json::json!({"sub": "a"})));
        assert!(!accepted(serde_json::json!({"exp": hour})));
    }

    #[test]
    fn issuer_audience_and_lifetime_are_checked_when_configured() {
        let now = now();
        let strict = verifier(&AuthArgs {
            auth_issuer: Some("https://idp.example".into()),
            auth_audience: Some("saga-platform".into()),
            auth_max_token_lifetime: Some(Duration::from_secs(3600)),
            ..args()
        });
        let good = serde_json::json!({"sub": "a", "iss": "https://idp.example", "aud": "saga-platform", "iat": now, "exp": now + 600});
        assert!(strict.verify(&signed(good.clone())).is_ok());
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[key] = value;
            strict.verify(&signed(claims)).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(with("iss", "https://evil.example".into()).is_err());
        assert!(with("aud", "another-api".into()).is_err());
        assert!(with("aud", serde_json::json!(["another-api", "saga-platform"])).is_ok());
        assert!(with("exp", (now + 7200).into()).unwrap_err().contains("lifetime"));
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove("iat");
        assert!(strict.verify(&signed(claims)).unwrap_err().to_string().contains("iat"));
        for missing in ["iss", "aud"] {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(missing);
            assert!(strict.verify(&signed(claims)).is_err(), "{missing} missing");
        }
        // Not configured: not checked.
        assert!(
            verifier(&args()).verify(&signed(serde_json::json!({"sub": "a", "aud": "x", "exp": now + 60}))).is_ok()
        );
    }

    #[test]
    fn auth_disabled_needs_dev_mode() {
        let disabled = AuthArgs { auth_disabled: true, auth_jwt_secret: None, ..args() };
        assert!(Auth::from_args(&disabled).err().unwrap().contains("SAGA_DEV_MODE"));
        assert!(Auth::from_args(&AuthArgs { dev_mode: true, ..disabled }).unwrap().disabled());
    }
}
