//! What every client command of `weir serve` shares: the server flags,
//! `--json`, and turning JSON answers into table cells.

use serde_json::Value;

use super::client::{Client, ClientError, ServerArgs};

/// Flags every client command shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Remote {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's JSON answer instead of a table or a sentence.
    #[arg(long)]
    pub json: bool,
}

impl Remote {
    pub fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.server)
    }

    /// Prints `answer` as JSON with `--json`, else as `human` renders it.
    pub fn print(&self, answer: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            if !answer.is_null() {
                println!("{answer:#}");
            }
        } else {
            let text = human(answer);
            print!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                println!();
            }
        }
    }
}

/// The array under `field`, or nothing.
pub(crate) fn list_of<'a>(answer: &'a Value, field: &str) -> &'a [Value] {
    answer[field].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The first 12 digits of a digest, as `docker` shows image ids.
pub(crate) fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// A JSON value as a table cell: strings bare, null or missing as `-`.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
