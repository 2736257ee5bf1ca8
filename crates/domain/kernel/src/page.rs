//! Cursor pagination. Lists are ordered newest first by `(time, id)`; a cursor names the
//! last item of a page and is opaque to clients: URL-safe base64 with no padding, so it
//! never needs escaping in a query string.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// The position after which the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: String,
}

const CURSOR_VERSION: &str = "1";
const MAX_CURSOR_CHARS: usize = 256;

impl Cursor {
    pub fn new(at: DateTime<Utc>, id: impl Into<String>) -> Self {
        Self { at, id: id.into() }
    }

    pub fn encode(&self) -> String {
        let plain = format!(
            "{CURSOR_VERSION}|{}|{}",
            self.at.timestamp_micros(),
            self.id
        );
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// The id part parsed as the list's id type; a client-supplied cursor whose id does
    /// not parse is as invalid as one that does not decode.
    pub fn id_as<T: std::str::FromStr>(&self) -> Result<T, PageError> {
        self.id.parse().map_err(|_| PageError::InvalidCursor)
    }

    pub fn decode(text: &str) -> Result<Self, PageError> {
        if text.len() > MAX_CURSOR_CHARS {
            return Err(PageError::InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| PageError::InvalidCursor)?;
        let plain = String::from_utf8(bytes).map_err(|_| PageError::InvalidCursor)?;
        let mut parts = plain.splitn(3, '|');
        let (Some(CURSOR_VERSION), Some(micros), Some(id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(PageError::InvalidCursor);
        };
        let micros: i64 = micros.parse().map_err(|_| PageError::InvalidCursor)?;
        let at = DateTime::from_timestamp_micros(micros).ok_or(PageError::InvalidCursor)?;
        if id.is_empty() {
            return Err(PageError::InvalidCursor);
        }
        Ok(Self::new(at, id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the cursor is not one this server issued")]
    InvalidCursor,
    #[error("limit must be between 1 and {max}")]
    InvalidLimit { max: u32 },
}

/// Which page to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<Cursor>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    /// Parses the `limit` and `cursor` query parameters.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, PageError> {
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(PageError::InvalidLimit {
                max: Self::MAX_LIMIT,
            });
        }
        let after = match cursor {
            None | Some("") => None,
            Some(text) => Some(Cursor::decode(text)?),
        };
        Ok(Self { limit, after })
    }

    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            after: None,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn after(&self) -> Option<&Cursor> {
        self.after.as_ref()
    }

    /// Builds the page from up to `limit + 1` items read in order: the extra item, if
    /// present, only tells that another page exists.
    pub fn page_from<T>(&self, mut items: Vec<T>, cursor_of: impl Fn(&T) -> Cursor) -> Page<T> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let has_more = items.len() > limit;
        items.truncate(limit);
        let next = if has_more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next }
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_garbage_and_foreign_cursors() {
        for bad in ["%%%", "abc", "MnwxfHg", &"A".repeat(400)] {
            assert_eq!(Cursor::decode(bad), Err(PageError::InvalidCursor), "{bad}");
        }
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(1001), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit(), 100);
    }

    #[test]
    fn page_from_reports_a_next_cursor_only_when_more_items_exist() {
        let request = PageRequest::first(2);
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let page = request.page_from(vec![1, 2, 3], |n| Cursor::new(at, n.to_string()));
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.unwrap().id, "2");
        let last = request.page_from(vec![1, 2], |n| Cursor::new(at, n.to_string()));
        assert!(last.next.is_none());
    }

    proptest! {
        #[test]
        fn cursors_round_trip_and_stay_url_safe(micros in -62_000_000_000_000_000i64..250_000_000_000_000_000, id in "[a-zA-Z0-9|+/=-]{1,60}") {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let cursor = Cursor::new(at, id);
            let text = cursor.encode();
            prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            prop_assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        }
    }
}
