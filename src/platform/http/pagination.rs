//! Lists: `?limit=1..200` (default 50) and `?cursor=...`, answered newest first as
//! `{"data": [...], "next_cursor": "..." | null}` (API.md "Lists").

use serde::{Deserialize, Serialize};

use crate::platform::error::{ApiError, FieldError};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 200;

/// The paging part of a list's query string.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items to return, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The validated page size.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => {
                Err(FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}")).into())
            }
        }
    }

    /// The cursor parsed with `parse` (an id type); a cursor that does not parse is a 400.
    pub fn cursor<T, E>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| parse(c).map_err(|_| FieldError::new("cursor", "is not valid").into()))
            .transpose()
    }
}

/// One page of a list, newest first, as every list route answers it:
/// `{"data": [...], "next_cursor": "..." | null}`. In the OpenAPI document each use is its own
/// component, named after the item: `List_Wallet`, `List_Payment`, ...
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    /// The items of this page, newest first.
    #[schema(schema_with = items_of::<T>)]
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `data` of a [`List`]: an array of references to the item's own component. (utoipa would
/// otherwise copy the item's whole schema into every list, and generated clients would see a
/// new anonymous type where they should see `Wallet`.)
fn items_of<T: utoipa::ToSchema>() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name(T::name()))
        .description(Some("The items of this page, newest first."))
        .build()
}

/// A page of results, as services return them: the same thing as the [`List`] they answer.
pub type Page<T> = List<T>;

impl<T> List<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }

    /// The same page with each item turned into another (a row into its view).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> List<U> {
        List {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_one_to_two_hundred_are_refused() {
        for bad in [0, 201, 10_000] {
            let q = PageQuery {
                limit: Some(bad),
                cursor: None,
            };
            assert_eq!(q.limit().unwrap_err().code(), "validation_failed");
        }
        assert_eq!(PageQuery::default().limit().unwrap(), 50);
        assert_eq!(
            PageQuery {
                limit: Some(200),
                cursor: None
            }
            .limit()
            .unwrap(),
            200
        );
    }

    #[test]
    fn a_page_built_from_one_extra_row_has_a_cursor_and_no_extra_row() {
        let page = Page::from_rows(vec![5, 4, 3], 2, ToString::to_string);
        assert_eq!(page.data, vec![5, 4]);
        assert_eq!(page.next_cursor.as_deref(), Some("4"));
        let last = Page::from_rows(vec![2, 1], 2, ToString::to_string);
        assert_eq!(last.next_cursor, None);
    }
}
