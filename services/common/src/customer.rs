//! The customer id: a token's `sub`, the key of an account, the owner of an
//! order. Parsed once at the edge (token, path, message) into `CustomerId`,
//! so everything behind it holds a value that fits every column, log line,
//! header and terminal.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The longest customer id accepted, in bytes.
pub const MAX_CUSTOMER_ID_LEN: usize = 255;

/// The rule as an ECMA-262 (and Python `re`) pattern: `!` to `~` are the
/// printable ASCII characters but the space (`u8::is_ascii_graphic`).
pub const CUSTOMER_ID_PATTERN: &str = "^[!-~]{1,255}$";

/// 1-255 printable ASCII characters: no spaces, no control characters (NUL
/// included), nothing outside ASCII. Covers the usual `sub` shapes (user
/// names, e-mail addresses, UUIDs, `provider|id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("customer id must be 1-{MAX_CUSTOMER_ID_LEN} printable ASCII characters without spaces")]
pub struct InvalidCustomerId;

impl CustomerId {
    pub fn parse(value: &str) -> Result<CustomerId, InvalidCustomerId> {
        let valid = (1..=MAX_CUSTOMER_ID_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if valid { Ok(CustomerId(value.to_owned())) } else { Err(InvalidCustomerId) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for CustomerId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_CUSTOMER_ID_LEN))
            .pattern(Some(CUSTOMER_ID_PATTERN))
            .description(Some("1-255 printable ASCII characters without spaces (a token's `sub`)"))
            .examples(["alice"])
            .into()
    }
}

impl utoipa::ToSchema for CustomerId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CustomerId")
    }
}

impl Deref for CustomerId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CustomerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<CustomerId> for String {
    fn from(id: CustomerId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_id_rules() {
        for good in ["alice", "c1", "user@example.com", "auth0|5f7c8ec7", "0b5c1f2e-7d4e-4c55-9a43-3f0f7e1d2c3b"] {
            assert_eq!(CustomerId::parse(good).unwrap().as_str(), good);
        }
        assert!(CustomerId::parse(&"x".repeat(MAX_CUSTOMER_ID_LEN)).is_ok());
        for bad in ["", " alice", "alice ", "ali ce", "a\nb", "ali\0ce", "\u{1b}[31m", "clé", "a\u{7f}"] {
            assert_eq!(CustomerId::parse(bad), Err(InvalidCustomerId), "{bad:?}");
        }
        assert!(CustomerId::parse(&"x".repeat(MAX_CUSTOMER_ID_LEN + 1)).is_err());
    }

    #[test]
    fn the_pattern_states_the_rule() {
        assert_eq!(CUSTOMER_ID_PATTERN, format!("^[!-~]{{1,{MAX_CUSTOMER_ID_LEN}}}$"));
        for b in 0u8..=255 {
            let in_class = (b'!'..=b'~').contains(&b);
            let one = String::from_utf8_lossy(&[b]).into_owned();
            assert_eq!(CustomerId::parse(&one).is_ok(), in_class, "{b}");
        }
    }
}
