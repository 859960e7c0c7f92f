//! Diagnostics: what went wrong, where (a primary span with a caret), and a hint. Rendered
//! with codespan-reporting as `error[code]: message`, `file:line:col`, the source line, a
//! labelled caret and `= hint: ...`.

use crate::span::Span;
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable code (`E0003`), one per kind of diagnostic; docs/language.md lists them.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
    /// Other places that explain the error (`first declared here`).
    pub notes: Vec<(Span, String)>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: String::new(),
            notes: Vec::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message, span) }
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn note(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.notes.push((span, text.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// True when any diagnostic is an error (warnings alone do not stop compilation).
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// Renders diagnostics as plain text (no colour), in source order.
pub fn render(diags: &[Diagnostic], file_name: &str, source: &str) -> String {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config::default();
    let mut sorted: Vec<&Diagnostic> = diags.iter().collect();
    sorted.sort_by_key(|d| (d.span.start, d.span.end));
    let mut out = String::new();
    let clamp = |s: Span| {
        let end = (s.end as usize).min(source.len());
        let start = (s.start as usize).min(end);
        start..end
    };
    for d in sorted {
        let base = match d.severity {
            Severity::Error => CsDiagnostic::error(),
            Severity::Warning => CsDiagnostic::warning(),
        };
        let mut labels = vec![Label::primary((), clamp(d.span)).with_message(&d.label)];
        for (span, text) in &d.notes {
            labels.push(Label::secondary((), clamp(*span)).with_message(text));
        }
        let cs = base
            .with_code(d.code)
            .with_message(&d.message)
            .with_labels(labels)
            .with_notes(d.hint.iter().map(|h| format!("hint: {h}")).collect());
        // Writing into a String cannot fail for a file we hold in memory.
        if term::emit_to_string(&mut out, &config, &file, &cs).is_err() {
            out.push_str(&format!("{}: {}\n", d.code, d.message));
        }
    }
    out
}
