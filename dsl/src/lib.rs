//! The `.gd` language: parsing source text into an AST with spans, checking it (names,
//! types, shapes, every error in one run), and rendering diagnostics with carets and hints.

pub mod ast;
pub mod builtins;
pub mod check;
pub mod diagnostic;
pub mod parse;
pub mod print;
pub mod span;
pub mod types;

pub use check::{check, Checked};
pub use diagnostic::{has_errors, render, Diagnostic, Severity};
pub use parse::parse;
pub use span::Span;

/// Parses and checks a source file: the AST when there are no errors, plus every diagnostic
/// (warnings included) found.
pub fn front_end(source: &str) -> (Option<ast::File>, Vec<Diagnostic>) {
    match parse(source) {
        Err(diags) => (None, diags),
        Ok(file) => {
            let diags = check(&file);
            if has_errors(&diags) {
                (None, diags)
            } else {
                (Some(file), diags)
            }
        }
    }
}
