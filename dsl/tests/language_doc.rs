//! docs/language.md stays true: every `gd` example in it compiles without a diagnostic, and
//! its table of diagnostic codes lists exactly the codes the front end emits, each of which
//! a file under `tests/diagnostics/` demonstrates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn language_md() -> String {
    std::fs::read_to_string(root().join("../docs/language.md")).expect("docs/language.md")
}

/// The bodies of the code blocks fenced with ```gd, with the line each starts on.
fn gd_blocks(md: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```gd" => current = Some((i + 2, String::new())),
            Some(_) if line.trim_end() == "```" => blocks.push(current.take().expect("a block")),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated ```gd block");
    blocks
}

/// Codes such as `E0005` that appear in `text` between the given delimiters.
fn codes_in(text: &str, open: char, close: char) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for (i, _) in text.match_indices(open) {
        let rest = &text[i + open.len_utf8()..];
        let code: String = rest.chars().take(5).collect();
        let well_formed = code.len() == 5
            && (code.starts_with('E') || code.starts_with('W'))
            && code[1..].chars().all(|c| c.is_ascii_digit());
        if well_formed && rest[5..].starts_with(close) {
            codes.insert(code);
        }
    }
    codes
}

/// Every `"E00..."` string literal in the crate's sources.
fn emitted_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                codes.extend(codes_in(&std::fs::read_to_string(&path).expect("a source"), '"', '"'));
            }
        }
    }
    codes
}

/// The codes of the `// expect:` lines of the diagnostic tests.
fn tested_codes() -> BTreeSet<String> {
    let dir = root().join("tests/diagnostics");
    let mut codes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("tests/diagnostics") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("a test");
        let first = text.lines().next().unwrap_or_default();
        let list = first.strip_prefix("// expect:").unwrap_or_default();
        codes.extend(list.split_whitespace().map(str::to_string));
    }
    codes
}

#[test]
fn examples_compile_cleanly() {
    let md = language_md();
    let blocks = gd_blocks(&md);
    assert!(blocks.len() >= 8, "expected the examples of docs/language.md, found {}", blocks.len());
    let mut failures = Vec::new();
    for (line, src) in &blocks {
        let (file, diags) = gdc_dsl::front_end(src);
        if file.is_none() || !diags.is_empty() {
            let name = format!("docs/language.md, the example at line {line}");
            failures.push(gdc_dsl::render(&diags, &name, src));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn code_table_matches_the_front_end() {
    let md = language_md();
    // The first cell of each table row, as in `| E0005 | shapes that do not fit |`.
    let first_cells: String = md
        .lines()
        .filter_map(|l| l.strip_prefix('|')?.split('|').next())
        .map(|cell| format!("|{}|", cell.trim()))
        .collect();
    let table = codes_in(&first_cells, '|', '|');
    let emitted = emitted_codes();
    let tested = tested_codes();
    assert!(emitted.len() > 20, "found only {emitted:?} in the sources");
    assert_eq!(table, emitted, "docs/language.md's table against the codes in dsl/src");
    assert_eq!(tested, emitted, "the codes tests/diagnostics demonstrates against dsl/src's");
}

/// Writes an expression with every operation in parentheses, to test precedence.
fn parenthesised(e: &gdc_dsl::ast::Expr) -> String {
    use gdc_dsl::ast::{ExprKind, UnOp};
    match &e.kind {
        ExprKind::Number(v) => v.to_string(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Unary(op, x) => {
            let sym = if *op == UnOp::Neg { "-" } else { "!" };
            format!("({sym}{})", parenthesised(x))
        }
        ExprKind::Binary(op, a, b) => {
            format!("({} {} {})", parenthesised(a), op.symbol(), parenthesised(b))
        }
        ExprKind::Transpose(x) => format!("({}.T)", parenthesised(x)),
        ExprKind::Call(f, args) => {
            let args: Vec<String> = args.iter().map(|a| parenthesised(&a.value)).collect();
            format!("{}({})", f.name, args.join(", "))
        }
        ExprKind::Tuple(items) => {
            let items: Vec<String> = items.iter().map(parenthesised).collect();
            format!("({})", items.join(", "))
        }
    }
}

/// The precedence table of docs/language.md.
#[test]
fn precedence_is_as_documented() {
    let cases = [
        ("-x ^ 2", "(-(x ^ 2))"),
        ("2 ^ 3 ^ 2", "(2 ^ (3 ^ 2))"),
        ("a @ b.T", "(a @ (b.T))"),
        ("a * b @ c", "((a * b) @ c)"),
        ("a + b * c", "(a + (b * c))"),
        ("a - b - c", "((a - b) - c)"),
        ("-a.T", "(-(a.T))"),
        ("a < b + 1 && c || d", "(((a < (b + 1)) && c) || d)"),
        ("!a && b", "((!a) && b)"),
        ("a == b != c", "((a == b) != c)"),
        ("x % 2 * 3", "((x % 2) * 3)"),
        ("2 ^ -1", "(2 ^ (-1))"),
    ];
    let mut failures = Vec::new();
    for (src, want) in cases {
        let text = format!("optimizer o {{ update(p, g) {{ p = {src} }} }}");
        let file = gdc_dsl::parse(&text).expect("parses");
        let gdc_dsl::ast::Stmt::Assign { value, .. } = &file.optimizers[0].updates[0].body.stmts[0] else {
            panic!("an assignment")
        };
        let got = parenthesised(value);
        if got != want {
            failures.push(format!("`{src}` parsed as {got}, documented as {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Smaller claims of docs/language.md that its examples do not show.
#[test]
fn documented_details_hold() {
    let accepted = [
        // Number forms.
        "optimizer o { hyper a = .5 hyper b = 1. hyper c = 2.5E+4 update(p, g) { p = p - a * b * c * g } }",
        // `[cols, rows]` state; a `[rows]` value fills a `[rows, cols]` target.
        "optimizer o { state t: [cols, rows] = zeros state m: [rows, cols] = zeros
           update(p: [rows, cols], g) { t = g.T m = sum(g, axis = 1) p = p - m - t.T } }",
        // A vector reduced along axis 0 is a scalar; `[rows] * [cols]` is an outer product.
        "optimizer o { update(p: [rows, cols], g) {
           let r = sum(g, axis = 1) let c = sum(g, axis = 0)
           p = p - sum(r, axis = 0) * (r * c) } }",
        // `prepare` may call functions; a `var` of prepare is read-only but visible.
        "fn half(x: f32) -> f32 { return x / 2 }
         optimizer o { hyper lr = 1 prepare { var s = half(lr) s = s * 2 } update(p, g) { p = p - s * g } }",
        // Function parameter types: `[n]`, `[]`, `int`, `bool`; no return type.
        "fn f(v: [n], s: [], k: int, b: bool) { return where(b, v * s * k, v) }
         optimizer o { update(p: [rows, cols], g) { p = p - f(sum(g, axis = 1), 2, 3, true) } }",
        // Sibling blocks may reuse a name; `_` binds nothing; `else if`.
        "optimizer o { update(p, g) {
           if step > 1 { let d = g p = p - d } else if step > 2 { let d = 2 * g p = p - d }
           for _ in 0..2 { for _ in 0..2 { p = p - g } } } }",
        // State without an initial value, assigned in both branches or in a literal loop.
        "optimizer o { state a state b update(p, g) {
           if step > 1 { a = g } else { a = 2 * g }
           for i in 0..2 { b = g }
           p = p - a - b } }",
        // `every` with an int hyperparameter whose range starts at 1.
        "optimizer o { hyper k: int = 3 in 1..=10 update(p, g) { every k { p = p - g } } }",
        // Hyperparameters, `p` and `eye` in initialisers; numel, rows, cols there too.
        "optimizer o { hyper c = 2 state a = c * p state b: [rows, rows] = eye * rows / numel
           update(p: [rows, cols], g) { a = a + g b = b + g @ g.T p = p - a - b @ g } }",
    ];
    let mut failures = Vec::new();
    for src in accepted {
        let (file, diags) = gdc_dsl::front_end(src);
        if file.is_none() || !diags.is_empty() {
            failures.push(gdc_dsl::render(&diags, "claim.gd", src));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
