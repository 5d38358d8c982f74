//! The customer id: a token's `sub`, the key of an account, the owner of an
//! order. Parsed once at the edge (token, path, message) into `CustomerId`,
//! so everything behind it holds a value that fits every column, log line,
//! header and terminal.

use std::fmt;
use std::ops::Deref;

/// The longest customer id accepted, in bytes.
pub const MAX_CUSTOMER_ID_LEN: usize = 255;

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
}
