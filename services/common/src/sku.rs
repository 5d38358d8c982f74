//! The SKU: a product's key in the catalogue and on an order line. One rule,
//! checked by the inventory API (path) and the order API (order lines), and
//! stated in their OpenAPI documents from the same constants.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The longest SKU accepted, in bytes (ASCII only).
pub const MAX_SKU_LEN: usize = 64;

/// The rule as an ECMA-262 (and Python `re`) pattern: the same set of bytes
/// `Sku::parse` accepts, and the same lengths.
pub const SKU_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

/// 1-64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sku must be 1-{MAX_SKU_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
pub struct InvalidSku;

impl Sku {
    pub fn parse(value: &str) -> Result<Sku, InvalidSku> {
        let valid = (1..=MAX_SKU_LEN).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid { Ok(Sku(value.to_owned())) } else { Err(InvalidSku) }
    }

    pub fn valid(value: &str) -> bool {
        Sku::parse(value).is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for Sku {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_SKU_LEN))
            .pattern(Some(SKU_PATTERN))
            .description(Some("1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"))
            .examples(["SKU-1"])
            .into()
    }
}

impl utoipa::ToSchema for Sku {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Sku")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        for good in ["SKU-1", "a.b_c-D9", "x", &"x".repeat(MAX_SKU_LEN)] {
            assert!(Sku::valid(good), "{good:?}");
        }
        for bad in ["", &"x".repeat(MAX_SKU_LEN + 1), "has space", "slash/", "é", "a\0", "SKU\n"] {
            assert_eq!(Sku::parse(bad), Err(InvalidSku), "{bad:?}");
        }
    }

    #[test]
    fn the_pattern_states_the_rule() {
        assert_eq!(SKU_PATTERN, format!("^[A-Za-z0-9._-]{{1,{MAX_SKU_LEN}}}$"));
        // Every byte: in the pattern's class exactly when parse accepts it.
        for b in 0u8..=127 {
            let in_class = b.is_ascii_alphanumeric() || b".-_".contains(&b);
            assert_eq!(Sku::valid(&(b as char).to_string()), in_class, "{b}");
        }
    }
}
