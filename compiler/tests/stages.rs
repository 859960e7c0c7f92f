//! Every example optimizer through every stage: the IR and plan text are snapshotted, the IR
//! text reads back to the same module, and AdamW's plan is one fused kernel.

use gdc_compiler::{compile, ir, plan};

fn compile_file(path: &std::path::Path) -> gdc_compiler::Compiled {
    let src = gdc_dsl::policy::load(path).expect("readable example");
    compile(&src).unwrap_or_else(|e| match e {
        gdc_compiler::CompileError::Source(d) => panic!("{}", gdc_dsl::render(&d, &path.display().to_string(), &src)),
        other => panic!("{other}"),
    })
}

#[test]
fn plans_of_every_example() {
    insta::glob!("../../examples/optimizers", "*.gd", |path| {
        let c = compile_file(path);
        insta::assert_snapshot!("plan", plan::print::plan_text(&c.plan));
    });
}

#[test]
fn optimized_ir_of_every_example() {
    insta::glob!("../../examples/optimizers", "*.gd", |path| {
        let c = compile_file(path);
        insta::assert_snapshot!("ir-opt", ir::print::module_text(&c.optimized));
    });
}

#[test]
fn ir_text_reads_back_to_the_same_module() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        let c = compile_file(&path);
        for m in [&c.ir, &c.optimized] {
            let text = ir::print::module_text(m);
            let back = ir::read::read_module(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(ir::print::module_text(&back), text, "{}", path.display());
        }
    }
}

#[test]
fn adamw_is_one_fused_kernel_reading_and_writing_each_buffer_once() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers/adamw.gd"));
    let c = compile_file(path);
    let update = &c.plan.variants[0].update;
    // One kernel for the step; the gradient check is its own item, run apart.
    let step: Vec<_> = update.items_of(plan::Pass::Step).collect();
    assert_eq!(step.len(), 1, "{}", plan::print::plan_text(&c.plan));
    let plan::Item::Kernel(k) = step[0].1 else { panic!("not a kernel") };
    let mut reads: Vec<plan::Buffer> = k.inputs.iter().map(|(_, b)| *b).collect();
    let mut writes: Vec<plan::Buffer> = k.outputs.iter().map(|o| o.buffer).collect();
    reads.sort_by_key(|b| format!("{b:?}"));
    writes.sort_by_key(|b| format!("{b:?}"));
    use plan::Buffer::*;
    assert_eq!(reads, vec![Grad, Param, State(0), State(1)]);
    assert_eq!(writes, vec![Param, State(0), State(1)]);
    assert!(update.temps.is_empty());
    // Bias corrections and the decay factor are host work, once per step.
    assert!(update.host.len() >= 10);
}

#[test]
fn compiling_twice_gives_the_same_ir_and_plan() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimizers");
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        let (a, b) = (compile_file(&path), compile_file(&path));
        assert_eq!(ir::print::module_text(&a.ir), ir::print::module_text(&b.ir), "{}", path.display());
        assert_eq!(plan::print::plan_text(&a.plan), plan::print::plan_text(&b.plan), "{}", path.display());
    }
}
