//! The one error type of the SDK: a message the host records as the reason an
//! item failed. Plugins return it from every hook; `?` converts the usual
//! suspects (JSON, postcard, strings) into it.

use std::fmt;

/// Why a plugin rejected an item (or failed to open).
///
/// It is only a message: the host reports it as a `failure` of the item, so
/// nothing but text crosses the boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, by value.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::msg(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error { message }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::msg(format_args!("invalid JSON: {error}"))
    }
}

impl From<postcard::Error> for Error {
    fn from(error: postcard::Error) -> Self {
        Error::msg(format_args!("postcard: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_convert_with_the_parser_message() {
        let error: Error = serde_json::from_str::<u32>("\"x\"").unwrap_err().into();
        assert!(
            error
                .message()
                .starts_with("invalid JSON: invalid type: string"),
            "{error}"
        );
    }

    #[test]
    fn strings_convert_verbatim() {
        assert_eq!(Error::from("nope").message(), "nope");
        assert_eq!(Error::from(String::from("nope")), Error::msg("nope"));
    }
}
