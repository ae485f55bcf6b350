//! Turning the pipeline's JSON config into the plugin's `Config` type. Shared
//! by the wasm export and the test harness, so both accept the same configs.

use serde::de::DeserializeOwned;

use crate::Error;

/// Parses `json` as `C`; an absent config (`""`, `null`, `{}`) is `C::default()`.
///
/// The error names the offending field (`threshold: invalid type: ...`),
/// because the pipeline author reads it, not the plugin author.
pub(crate) fn parse<C: DeserializeOwned + Default>(json: &str) -> Result<C, Error> {
    let json = json.trim();
    if json.is_empty() || json == "null" || is_empty_object(json) {
        return Ok(C::default());
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let config = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            Error::msg(format_args!("invalid plugin config: {}", error.inner()))
        } else {
            Error::msg(format_args!(
                "invalid plugin config: {path}: {}",
                error.inner()
            ))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| Error::msg(format_args!("invalid plugin config: {error}")))?;
    Ok(config)
}

/// `{}` with any whitespace inside, without parsing.
fn is_empty_object(json: &str) -> bool {
    json.strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|inside| inside.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        threshold: u32,
        #[serde(default)]
        window: Window,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Window {
        #[serde(default)]
        ms: i64,
    }

    impl Default for Config {
        fn default() -> Self {
            Config {
                threshold: 5,
                window: Window::default(),
            }
        }
    }

    #[test]
    fn an_absent_config_is_the_default() {
        for json in ["", "  ", "null", "{}", "{ }", " {\n} "] {
            assert_eq!(parse::<Config>(json), Ok(Config::default()), "{json:?}");
        }
        assert_eq!(parse::<()>("null"), Ok(()));
        assert_eq!(parse::<()>("{}"), Ok(()));
    }

    #[test]
    fn a_given_config_is_parsed() {
        let config = parse::<Config>(r#"{"threshold": 3, "window": {"ms": 10}}"#).unwrap();
        assert_eq!(config.threshold, 3);
        assert_eq!(config.window.ms, 10);
    }

    #[test]
    fn the_error_names_the_offending_field() {
        let error = parse::<Config>(r#"{"threshold": 3, "window": {"ms": "ten"}}"#).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("invalid plugin config: window.ms: invalid type: string"),
            "{error}"
        );
        let error = parse::<Config>(r#"{"treshold": 3}"#).unwrap_err();
        assert!(
            error.message().contains("unknown field `treshold`"),
            "{error}"
        );
    }

    #[test]
    fn trailing_text_is_rejected() {
        let error = parse::<Config>(r#"{"threshold": 3} x"#).unwrap_err();
        assert!(error.message().contains("trailing characters"), "{error}");
    }
}
