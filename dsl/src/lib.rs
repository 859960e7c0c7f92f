//! The `.gd` language: parsing source text into an AST with spans, checking it (names,
//! types, shapes, every error in one run), and rendering diagnostics with carets and hints.

pub mod ast;
pub mod builtins;
pub mod check;
pub mod compose;
pub mod diagnostic;
pub mod parse;
pub mod policy;
pub mod print;
pub mod rename;
pub mod span;
pub mod types;

pub use check::{check, Checked};
pub use diagnostic::{has_errors, render, Diagnostic, Severity};
pub use parse::parse;
pub use span::Span;

/// Parses and checks a source file: the AST when there are no errors, plus every diagnostic
/// (warnings included) found. A policy comes back merged into one optimizer
/// ([`policy::merge`]), its used optimizers checked each on its own; an optimizer made of
/// parts comes back with them inlined ([`compose::expand`]).
pub fn front_end(source: &str) -> (Option<ast::File>, Vec<Diagnostic>) {
    match parse(source) {
        Err(diags) => (None, diags),
        Ok(file) if !file.policies.is_empty() => {
            let (file, mut diags, sites) = compose::expand_policy(&file);
            if has_errors(&diags) {
                return (None, diags);
            }
            diags.extend(policy::check(&file));
            for body in file.uses.iter().filter_map(|u| u.body.as_ref()) {
                if compose::routed_program(&file, body).is_none() {
                    continue;
                }
                let mut found = check(body);
                compose::annotate(&mut found, &sites);
                diags.extend(found);
            }
            if file.policies[0].parts.is_empty() {
                return (if has_errors(&diags) { None } else { Some(policy::merge(&file, &[])) }, diags);
            }
            // The policy's parts in front of every routed optimizer (the parts are checked in
            // any case; put in front only of optimizers without errors), each checked again
            // with them (only their errors: the rest was reported above).
            let (staged, shared, more, sites) = compose::stage_policy(&file, !has_errors(&diags));
            diags.extend(more);
            if has_errors(&diags) {
                return (None, diags);
            }
            for body in staged.uses.iter().filter_map(|u| u.body.as_ref()) {
                if compose::routed_program(&staged, body).is_none() {
                    continue;
                }
                let mut found = check::check_staged(body);
                found.retain(|d| d.severity == Severity::Error);
                compose::annotate(&mut found, &sites);
                diags.extend(found);
            }
            if has_errors(&diags) {
                (None, diags)
            } else {
                (Some(policy::merge(&staged, &shared)), diags)
            }
        }
        Ok(file) => {
            let (file, mut diags, sites) = compose::expand(&file);
            if has_errors(&diags) {
                return (None, diags);
            }
            let mut found = check(&file);
            compose::annotate(&mut found, &sites);
            diags.extend(found);
            if has_errors(&diags) {
                (None, diags)
            } else {
                (Some(file), diags)
            }
        }
    }
}
