//! Cursor paging of the list endpoints: one rule for `limit`, one error for a
//! bad cursor, one way to cut a page and name the next one. A store query
//! fetches `limit + 1` rows past the cursor; the extra row only says that
//! another page exists.

use utoipa::openapi::schema::Schema;

use crate::openapi::integer;
use crate::problem::Problem;

/// The `limit` query parameter of one endpoint: 1 to `max`, `default` when absent.
#[derive(Debug, Clone, Copy)]
pub struct PageLimit {
    pub default: i64,
    pub max: i64,
}

impl PageLimit {
    pub const fn new(default: i64, max: i64) -> PageLimit {
        PageLimit { default, max }
    }

    /// The requested limit, or 400 `invalid-query` outside 1..=max.
    pub fn of(self, requested: Option<i64>) -> Result<i64, Problem> {
        let limit = requested.unwrap_or(self.default);
        if (1..=self.max).contains(&limit) {
            Ok(limit)
        } else {
            Err(Problem::bad_request("invalid-query", format!("limit must be between 1 and {}", self.max)))
        }
    }

    /// Its OpenAPI schema: an integer 1..=max with the default.
    pub fn schema(self) -> Schema {
        let mut schema = integer(1, self.max);
        if let Schema::Object(object) = &mut schema {
            object.default = Some(self.default.into());
        }
        schema
    }
}

/// The `cursor` query parameter read with `parse`, or 400 `invalid-query`.
pub fn cursor<T, E>(value: Option<&str>, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<Option<T>, Problem> {
    value.map(|v| parse(v).map_err(|_| Problem::bad_request("invalid-query", "cursor is not valid"))).transpose()
}

/// The first `limit` of `rows` (fetched with `limit + 1`), and the cursor of
/// the next page (`cursor_of` its last row) when there is one.
pub fn cut<T, C>(mut rows: Vec<T>, limit: i64, cursor_of: impl FnOnce(&T) -> C) -> (Vec<T>, Option<C>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_outside_its_range_is_refused_and_the_default_fills_in() {
        let limit = PageLimit::new(20, 100);
        assert_eq!(limit.of(None).unwrap(), 20);
        assert_eq!(limit.of(Some(1)).unwrap(), 1);
        assert_eq!(limit.of(Some(100)).unwrap(), 100);
        for bad in [0, -1, 101, i64::MAX] {
            assert_eq!(limit.of(Some(bad)).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn a_page_names_the_next_only_when_rows_are_left() {
        assert_eq!(cut(vec![1, 2, 3], 2, |n| *n), (vec![1, 2], Some(2)));
        assert_eq!(cut(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
        assert_eq!(cut(Vec::<i32>::new(), 2, |n| *n), (vec![], None));
    }

    #[test]
    fn a_cursor_that_does_not_parse_is_a_bad_request() {
        assert_eq!(cursor(Some("7"), str::parse::<u32>).unwrap(), Some(7));
        assert_eq!(cursor(None, str::parse::<u32>).unwrap(), None);
        assert_eq!(cursor(Some("x"), str::parse::<u32>).unwrap_err().status, 400);
    }
}
