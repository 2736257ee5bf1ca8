//! Free-text labels people give things (token names, display names).

/// The label is too long or holds control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a label must be at most {max_chars} characters without control characters")]
pub struct InvalidLabel {
    pub max_chars: usize,
}

/// Trims an optional label; blank means absent.
pub fn optional_label(raw: Option<&str>, max_chars: usize) -> Result<Option<String>, InvalidLabel> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.chars().count() > max_chars || text.chars().any(char::is_control) => {
            Err(InvalidLabel { max_chars })
        }
        Some(text) => Ok(Some(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_bounded_and_blank_means_absent() {
        assert_eq!(
            optional_label(Some("  ci  "), 10),
            Ok(Some("ci".to_owned()))
        );
        assert_eq!(optional_label(Some("   "), 10), Ok(None));
        assert_eq!(optional_label(None, 10), Ok(None));
        assert!(optional_label(Some("elevenchars"), 10).is_err());
        assert!(optional_label(Some("a\nb"), 10).is_err());
        assert_eq!(
            optional_label(Some("é".repeat(10).as_str()), 10).map(|l| l.is_some()),
            Ok(true)
        );
    }
}
