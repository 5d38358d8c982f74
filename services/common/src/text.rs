//! Short free text written by people (a product's name, an operator's
//! reason for an incident action): one rule for the handlers and the
//! OpenAPI documents. 1 to `max` characters, not blank, no control
//! character.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// The rule as a pattern: no control character (`char::is_control`:
/// U+0000-U+001F, U+007F-U+009F) and at least one that is not white space
/// (`char::is_whitespace`); the length (in characters) is the schema's
/// `minLength`/`maxLength`.
pub const PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*\
    [^\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]\
    [^\\x00-\\x1f\\x7f-\\x9f]*$";

/// Checks `value` against the rule; the error names `field`.
pub fn check(field: &str, value: &str, max: usize) -> Result<(), String> {
    let len = value.chars().count();
    if !(1..=max).contains(&len) || value.trim().is_empty() {
        return Err(format!("{field} must be 1-{max} characters and not blank"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// The rule as a string schema.
pub fn schema(max: usize, example: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(PATTERN))
        .examples([example])
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern, read as a set of characters, agrees with `check`.
    #[test]
    fn the_pattern_states_the_rule() {
        let control = |c: char| matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}');
        let space = |c: char| {
            matches!(c, '\u{0}'..='\u{20}' | '\u{7f}'..='\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}')
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
        };
        for c in (0..=0x3100u32).filter_map(char::from_u32) {
            assert_eq!(c.is_control(), control(c), "{c:?}");
            assert_eq!(c.is_whitespace() || c.is_control(), space(c), "{c:?}");
        }
        assert!(PATTERN.contains("\\x00-\\x1f\\x7f-\\x9f"));
        assert!(PATTERN.contains("\\x00-\\x20\\x7f-\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"));
    }

    #[test]
    fn check_limits() {
        assert!(check("reason", "x", 3).is_ok());
        assert!(check("reason", "été", 3).is_ok());
        assert!(check("reason", "four", 3).is_err());
        assert!(check("reason", "", 3).is_err());
        assert!(check("reason", " \u{3000} ", 3).is_err());
        assert_eq!(check("reason", "a\u{1b}b", 3).unwrap_err(), "reason must not contain control characters");
    }
}
