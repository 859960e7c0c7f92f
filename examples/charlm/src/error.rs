//! One error type for the example: a message, from candle, the adapter, the runtime or I/O.

use std::fmt;

/// What went wrong, as the message to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error(s.to_string())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Error {
        Error(format!("candle: {e}"))
    }
}

impl From<gdc_candle::Error> for Error {
    fn from(e: gdc_candle::Error) -> Error {
        Error(e.to_string())
    }
}

impl From<gdc_runtime::RuntimeError> for Error {
    fn from(e: gdc_runtime::RuntimeError) -> Error {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
