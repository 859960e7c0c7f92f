//! A character-level transformer trained on real text with candle, its parameters stepped by
//! compiled gdc optimizers (`.gd` files) through `gdc_candle`: the data, the model, the
//! schedule, the training loop, validation and the reports the `charlm` binary writes.

pub mod data;
pub mod error;
pub mod eval;
pub mod model;
pub mod ops;
pub mod report;
pub mod schedule;
pub mod train;

pub use error::{Error, Result};
