//! `gdc._native`, the Rust side of the Python package: compiling and loading programs,
//! emitting their stages, and an optimizer stepped in place on memory the caller lends by
//! address (torch tensors' `data_ptr()`s; `gdc/torch.py` is the only caller and checks dtype,
//! device, layout and shape first). Errors become the exceptions of `gdc/errors.py`.

use gdc_compiler::artifact::{Artifact, Target};
use gdc_compiler::ir::{HyperTy, Role};
use gdc_runtime::checkpoint::{CheckpointMeta, Globals, StateTensor};
use gdc_runtime::{Backend, Locality, NonFinite, Options, ParamSpec, Partial, ReduceKind, RuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use std::path::{Path, PathBuf};

/// A Python exception of `gdc.errors` by class name, carrying `message`.
fn error(class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let made = py.import("gdc.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((message.clone(),)));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

/// The exception class a runtime error maps to: the user's program, an artifact, a
/// checkpoint or state dict, a hyperparameter, a GPU, or a step's arguments.
fn runtime_error(e: RuntimeError) -> PyErr {
    use gdc_runtime::InterpError as I;
    let class = match &e {
        RuntimeError::Compile(_) => "CompileError",
        RuntimeError::Artifact(_) => "ArtifactError",
        RuntimeError::Checkpoint(_) | RuntimeError::CheckpointState { .. } => "CheckpointError",
        RuntimeError::Step(I::UnknownHyper { .. } | I::HyperType { .. } | I::HyperRange { .. }) => {
            "HyperparameterError"
        }
        RuntimeError::Step(_) | RuntimeError::DuplicateParam(_) => "TensorError",
        RuntimeError::NonFiniteGradient { .. } => "NonFiniteGradientError",
        RuntimeError::NoGpu(_)
        | RuntimeError::CudaNotBuilt
        | RuntimeError::NoGpuCode(_)
        | RuntimeError::GpuArch { .. } => "DeviceError",
        _ => "GdcError",
    };
    error(class, e.to_string())
}

/// A compiled optimizer: its plan and CPU machine code (and PTX, from a cuda artifact or
/// `target="cuda"`), with the source it came from for `emit`.
#[pyclass(frozen, module = "gdc._native")]
struct Program {
    program: gdc_runtime::Program,
    /// The name diagnostics and artifacts give the source (a path, or `<source>`).
    file: String,
}

/// What `gdc check` prints for a source with errors: every diagnostic with its caret and
/// hint, then the count.
fn check_report(file: &str, source: &str, diags: &[gdc_dsl::Diagnostic]) -> String {
    let n = diags.iter().filter(|d| d.is_error()).count();
    format!("{}error: {file}: {n} error{}", gdc_dsl::render(diags, file, source), if n == 1 { "" } else { "s" })
}

fn compile_checked(file: &str, source: &str) -> PyResult<gdc_compiler::Compiled> {
    gdc_compiler::compile(source).map_err(|e| match e {
        gdc_compiler::CompileError::Source(d) => error("CompileError", check_report(file, source, &d)),
        other => error("GdcError", format!("{other}\nThis is a bug in gdc; please report it with the .gd file.")),
    })
}

/// GPU code for `arch`, or why there is none.
fn gpu_code(plan: &gdc_compiler::plan::Plan, arch: &str) -> PyResult<gdc_compiler::gpu::abi::GpuProgram> {
    gdc_compiler::gpu::check_arch(arch).map_err(|e| error("DeviceError", e.to_string()))?;
    #[cfg(feature = "mlir")]
    {
        gdc_compiler::gpu::compile(plan, arch).map_err(|e| error("GdcError", e.to_string()))
    }
    #[cfg(not(feature = "mlir"))]
    {
        let _ = plan;
        Err(error(
            "DeviceError",
            "this gdc package was built without MLIR, so it cannot make GPU code: build the artifact with \
             `gdc build FILE.gd --target cuda --arch ARCH -o FILE.gdo` and gdc.load it, or install the package \
             with the `mlir` feature (scripts/setup-mlir, then `pip install ./python --config-settings \
             build-args=--features=mlir`)",
        ))
    }
}

fn make_program(file: &str, source: &str, target: &str, arch: Option<&str>) -> PyResult<Program> {
    let compiled = compile_checked(file, source)?;
    let target = match target {
        "cpu" => Target::Cpu,
        "cuda" => Target::Cuda,
        other => {
            return Err(error("GdcError", format!("unknown target `{other}`: gdc compiles for \"cpu\" or \"cuda\"")))
        }
    };
    let mut artifact = Artifact::from_compiled(&compiled, source, file, target);
    if target == Target::Cuda {
        artifact.gpu = Some(gpu_code(&compiled.plan, arch.unwrap_or("sm_80"))?);
    } else if arch.is_some() {
        return Err(error("GdcError", "`arch` is for target=\"cuda\" only"));
    }
    artifact.native = native_code(&compiled.plan)?;
    let program = gdc_runtime::Program::from_artifact(artifact).map_err(runtime_error)?;
    Ok(Program { program, file: file.to_string() })
}

/// The CPU's LLVM tier for `plan` where this CPU runs one of its levels and the package was
/// built with the `mlir` feature; otherwise none (the kernels run on Cranelift, and a
/// `gdc build` artifact brings the tier).
fn native_code(plan: &gdc_compiler::plan::Plan) -> PyResult<Vec<gdc_compiler::cpu::native::NativeLevel>> {
    #[cfg(feature = "mlir")]
    {
        if gdc_compiler::cpu::native::Level::best_available().is_some() {
            return gdc_compiler::cpu::llvm::compile(plan).map_err(|e| {
                error(
                    "GdcError",
                    format!("the CPU's LLVM tier: {e}\nThis is a bug in gdc; please report it with the .gd file."),
                )
            });
        }
    }
    let _ = plan;
    Ok(Vec::new())
}

/// Compiles `.gd` source; `file` names it in diagnostics.
#[pyfunction]
#[pyo3(signature = (source, file, target = "cpu", arch = None))]
fn compile_source(source: &str, file: &str, target: &str, arch: Option<&str>) -> PyResult<Program> {
    make_program(file, source, target, arch)
}

/// Compiles the `.gd` file at `path` (a policy's `use`d files are read from beside it).
#[pyfunction]
#[pyo3(signature = (path, target = "cpu", arch = None))]
fn compile_file(path: PathBuf, target: &str, arch: Option<&str>) -> PyResult<Program> {
    let source = gdc_dsl::policy::load(&path).map_err(|e| error("CompileError", format!("error: {e}")))?;
    make_program(&path.display().to_string(), &source, target, arch)
}

/// Loads a `.gdo` artifact (validated as `gdc` validates it).
#[pyfunction]
fn load(path: PathBuf) -> PyResult<Program> {
    let program = gdc_runtime::Program::load(&path).map_err(runtime_error)?;
    Ok(Program { program, file: path.display().to_string() })
}

/// A hyperparameter as declared: name, type (`f32`, `int`, `bool` or `precision`), default
/// (booleans as 0 or 1, precisions as their bits of significand: 24, 11, 8; NaN for an
/// optional one unset by default), range (`(lo, hi)`, inclusive) if it has one, and whether
/// it is optional (`optional hyper`: may be unset, `None` in Python).
#[pyclass(frozen, get_all, module = "gdc._native")]
struct Hyper {
    name: String,
    r#type: &'static str,
    default: f64,
    range: Option<(f64, f64)>,
    optional: bool,
}

#[pymethods]
impl Hyper {
    fn __repr__(&self) -> String {
        let range = self.range.map(|(lo, hi)| format!(", range=({lo}, {hi})")).unwrap_or_default();
        let optional = if self.optional { ", optional=True" } else { "" };
        format!("Hyper(name={:?}, type={:?}, default={}{range}{optional})", self.name, self.r#type, self.default)
    }
}

fn hyper_type(ty: HyperTy) -> &'static str {
    match ty {
        HyperTy::F32 => "f32",
        HyperTy::Int => "int",
        HyperTy::Bool => "bool",
        HyperTy::Precision => "precision",
    }
}

#[pymethods]
impl Program {
    /// The optimizer's name (`optimizer adamw`).
    #[getter]
    fn name(&self) -> &str {
        self.program.name()
    }

    #[getter]
    fn file(&self) -> &str {
        &self.file
    }

    #[getter]
    fn source(&self) -> &str {
        self.program.source()
    }

    /// Ties checkpoints and state dicts to the program.
    #[getter]
    fn hash(&self) -> &str {
        self.program.hash()
    }

    /// `"cuda"` when the program carries GPU code, else `"cpu"`.
    #[getter]
    fn target(&self) -> &str {
        if self.program.gpu().is_some() {
            "cuda"
        } else {
            "cpu"
        }
    }

    /// The level of the CPU's LLVM tier its kernels run at here (`"x86-64-v3"`: AVX2,
    /// `"x86-64-v4"`: AVX-512), or None: all on Cranelift (compiled from source by a package
    /// without MLIR, an artifact built `--no-native`, a CPU without AVX2, `GDC_NO_NATIVE=1`).
    #[getter]
    fn native(&self) -> Option<&'static str> {
        self.program.native().map(|(level, _)| level.name())
    }

    /// The GPU architecture of its PTX (`sm_90`), or None.
    #[getter]
    fn arch(&self) -> Option<String> {
        self.program.gpu().map(|g| g.arch.clone())
    }

    /// The hyperparameters, in declaration order.
    #[getter]
    fn hypers(&self) -> Vec<Hyper> {
        let m = &self.program.plan().module;
        m.hypers
            .iter()
            .map(|h| Hyper {
                name: h.name.clone(),
                r#type: hyper_type(h.ty),
                default: h.default,
                range: h.range,
                optional: h.optional,
            })
            .collect()
    }

    /// The inputs the program declares, in order: (name, dimensions or None for the
    /// parameter's shape, optional).
    #[getter]
    fn inputs(&self) -> Vec<(String, Option<Vec<String>>, bool)> {
        let m = &self.program.plan().module;
        m.inputs
            .iter()
            .map(|x| {
                let dims = match &x.shape {
                    gdc_dsl::types::Shape::Dims(d) => Some(d.clone()),
                    _ => None,
                };
                (x.name.clone(), dims, x.optional)
            })
            .collect()
    }

    /// The state names, in declaration order.
    fn state_names(&self) -> Vec<String> {
        self.program.plan().module.states.iter().map(|s| s.name.clone()).collect()
    }

    /// The states a shard of a parameter's leading dimension holds its rows of (`like(p)`,
    /// `[rows]`, `[rows, cols]`); the others (scalars, `[cols]`) every shard holds whole
    /// and alike.
    fn states_cut_by_rows(&self) -> Vec<String> {
        let states = &self.program.plan().module.states;
        states.iter().filter(|s| gdc_compiler::plan::locality::cut_by_rows(&s.shape)).map(|s| s.name.clone()).collect()
    }

    /// Raises `HyperparameterError` unless `value` suits hyperparameter `name`.
    fn check_hyper(&self, name: &str, value: f64) -> PyResult<()> {
        gdc_compiler::interp::check_hyper(&self.program.plan().module, name, value)
            .map(|_| ())
            .map_err(|e| error("HyperparameterError", e.to_string()))
    }

    /// Raises `TensorError` unless the program can step parameters of these specs (name,
    /// shape, role, base shape): an update for every rank, a route for every role, valid
    /// base shapes. Binds nothing.
    fn check_params(&self, specs: Vec<Spec>) -> PyResult<()> {
        let mut bound = Vec::with_capacity(specs.len());
        let mut infos = Vec::with_capacity(specs.len());
        for (name, shape, role, base) in specs {
            let role = parse_role(&name, &role)?;
            infos.push(gdc_compiler::interp::ParamInfo { role, base_shape: base, shard: None });
            bound.push((name, shape));
        }
        gdc_compiler::interp::bind_with(self.program.plan(), &bound, &infos)
            .map(|_| ())
            .map_err(|e| error("TensorError", e.to_string()))
    }

    /// For each spec (name, shape, role, base shape): how a shard of its leading dimension
    /// can be stepped — "elementwise" (alone), "reduces" (alone, with its whole-tensor
    /// reductions combined across ranks: `Stepper.step_combined`) or "whole" (only whole, on
    /// one rank). Distributed training steps the first two on local shards.
    fn locality(&self, specs: Vec<Spec>) -> PyResult<Vec<&'static str>> {
        let mut out = Vec::with_capacity(specs.len());
        for (name, shape, role, _base) in specs {
            let role = parse_role(&name, &role)?;
            let spec = ParamSpec::new(name, &shape).with_role(role);
            out.push(match self.program.locality(&spec).map_err(runtime_error)? {
                Locality::Elementwise => "elementwise",
                Locality::Reduces => "reduces",
                Locality::Whole => "whole",
            });
        }
        Ok(out)
    }

    /// Whether the program folds a value over every parameter of a step (`global_norm`).
    #[getter]
    fn reduces_across_params(&self) -> bool {
        self.program.reduces_across_params()
    }

    /// The text of one stage: ast, ir, ir-opt, plan, clif, mlir or ptx (`gdc emit`).
    #[pyo3(signature = (stage, arch = None))]
    fn emit(&self, stage: &str, arch: Option<&str>) -> PyResult<String> {
        let source = self.program.source();
        let c = compile_checked(&self.file, source)?;
        let backend = |what: &str, r: Result<String, String>| {
            r.map_err(|e| error("GdcError", format!("the {what} backend cannot compile {}: {e}", self.file)))
        };
        match stage {
            "ast" => Ok(gdc_dsl::print::file_text(&c.ast)),
            "ir" => Ok(gdc_compiler::ir::print::module_text(&c.ir)),
            "ir-opt" => Ok(gdc_compiler::ir::print::module_text(&c.optimized)),
            "plan" => Ok(gdc_compiler::plan::print::plan_text(&c.plan)),
            "clif" => backend("CPU", gdc_compiler::cpu::clif_text(&c.plan)),
            "mlir" => backend("GPU", gdc_compiler::gpu::mlir::module_text(&c.plan)),
            "ptx" => match (self.program.gpu(), arch) {
                (Some(g), None) => Ok(g.ptx.clone()),
                (Some(g), Some(a)) if a == g.arch => Ok(g.ptx.clone()),
                _ => Ok(gpu_code(&c.plan, arch.unwrap_or("sm_90"))?.ptx),
            },
            other => Err(error(
                "GdcError",
                format!("unknown stage `{other}`: one of ast, ir, ir-opt, plan, clif, mlir, ptx"),
            )),
        }
    }

    /// Writes the program as a `.gdo` artifact (as `gdc build` does).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        let source = self.program.source();
        let c = compile_checked(&self.file, source)?;
        let name = Path::new(&self.file).file_name().map_or(self.file.clone(), |n| n.to_string_lossy().into_owned());
        let target = if self.program.gpu().is_some() { Target::Cuda } else { Target::Cpu };
        let mut artifact = Artifact::from_compiled(&c, source, &name, target);
        artifact.gpu = self.program.gpu().cloned();
        artifact.native = self.program.native_code().to_vec();
        artifact.write(path).map_err(|e| error("ArtifactError", e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!("<gdc.Program {} from {} ({})>", self.program.name(), self.file, self.target())
    }
}

fn parse_role(name: &str, role: &str) -> PyResult<Role> {
    Role::ALL.into_iter().find(|r| r.name() == role).ok_or_else(|| {
        let known = Role::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ");
        error("TensorError", format!("parameter `{name}`: unknown role `{role}`; the roles are {known}"))
    })
}

/// A parameter as Python describes it: name, shape, role, muP base shape.
type Spec = (String, Vec<usize>, String, Option<Vec<usize>>);

/// A region of caller memory: (address, elements).
type Region = (usize, usize);

/// An optimizer bound to a fixed list of parameters, stepped on memory lent by address.
#[pyclass(module = "gdc._native")]
struct Stepper {
    opt: gdc_runtime::Optimizer,
    /// Regions `prepare_torch` checked, for `step_prepared`.
    prepared: Option<(Vec<Region>, Vec<Region>)>,
}

/// Runs `f` on lent regions (checked by `check_regions`) as slices: parameters of element
/// type `P` (float32, or bfloat16 bits as u16), float32 gradients.
fn with_slices<P, T>(params: &[Region], grads: &[Region], f: impl FnOnce(&mut [&mut [P]], &[&[f32]]) -> T) -> T {
    // SAFETY: each region is a live buffer of that many `P` (gradients: float32) elements,
    // aligned for its type, lent by the caller (gdc/torch.py takes them from tensors it
    // holds for the call and has checked to be contiguous CPU tensors of that dtype);
    // check_regions proved that no parameter region overlaps another region, so the `&mut`
    // slices alias nothing.
    #[allow(unsafe_code)]
    let mut ps: Vec<&mut [P]> = params
        .iter()
        .map(|&(a, n)| if n == 0 { &mut [][..] } else { unsafe { std::slice::from_raw_parts_mut(a as *mut P, n) } })
        .collect();
    // SAFETY: as above; gradients are only read.
    #[allow(unsafe_code)]
    let gs: Vec<&[f32]> = grads
        .iter()
        .map(|&(a, n)| if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(a as *const f32, n) } })
        .collect();
    f(&mut ps, &gs)
}

/// One float32 step on lent regions (checked by `check_regions`), with the GIL released.
fn step_f32(opt: &mut gdc_runtime::Optimizer, py: Python<'_>, params: &[Region], grads: &[Region]) -> PyResult<()> {
    py.detach(move || with_slices::<f32, _>(params, grads, |ps, gs| opt.step(ps, gs))).map_err(runtime_error)
}

/// Refuses regions that are null or misaligned, or where one written region overlaps any
/// other region: the step turns them into Rust slices, which must not alias.
fn check_regions(params: &[Region], grads: &[Region], elem: usize, specs: &[ParamSpec]) -> PyResult<()> {
    let name = |i: usize| specs.get(i).map_or("?", |s| s.name.as_str()).to_string();
    let mut spans: Vec<(usize, usize, bool, usize)> = Vec::with_capacity(params.len() + grads.len());
    for (i, &(addr, len)) in params.iter().enumerate() {
        if len > 0 && (addr == 0 || addr % elem != 0) {
            return Err(error(
                "TensorError",
                format!("parameter `{}`: its data pointer is null or misaligned", name(i)),
            ));
        }
        spans.push((addr, addr + len * elem, true, i));
    }
    for (i, &(addr, len)) in grads.iter().enumerate() {
        if len > 0 && (addr == 0 || addr % 4 != 0) {
            return Err(error(
                "TensorError",
                format!("the gradient of `{}`: its data pointer is null or misaligned", name(i)),
            ));
        }
        spans.push((addr, addr + len * 4, false, i));
    }
    spans.retain(|s| s.1 > s.0);
    spans.sort_unstable();
    // Regions sorted by start: one overlaps an earlier one iff it starts before the largest
    // end so far; an overlap matters when either side is written (a parameter).
    let mut reach: Option<(usize, bool, usize)> = None;
    for &(start, end, written, i) in &spans {
        if let Some((far, far_written, j)) = reach {
            if start < far && (written || far_written) {
                let what = |w: bool, k: usize| {
                    if w {
                        format!("parameter `{}`", name(k))
                    } else {
                        format!("the gradient of `{}`", name(k))
                    }
                };
                return Err(error(
                    "TensorError",
                    format!(
                        "{} shares memory with {}: every parameter needs storage of its own, apart from every gradient",
                        what(written, i),
                        what(far_written, j)
                    ),
                ));
            }
        }
        match reach {
            Some((far, _, _)) if far >= end => {}
            _ => reach = Some((end, written, i)),
        }
    }
    Ok(())
}

fn parse_policy(policy: &str) -> PyResult<NonFinite> {
    match policy {
        "propagate" => Ok(NonFinite::Propagate),
        "skip_step" => Ok(NonFinite::SkipStep),
        "error" => Ok(NonFinite::Error),
        other => Err(error(
            "GdcError",
            format!("unknown non-finite policy `{other}`: one of \"propagate\", \"skip_step\", \"error\""),
        )),
    }
}

#[pymethods]
impl Stepper {
    /// Binds `program` to `specs` on the CPU backend with `threads` workers (None: one per
    /// core).
    #[new]
    /// With `shards` (the whole parameters' leading extents, one per spec), every spec is a
    /// shard of a larger parameter's leading dimension, which may have no rows (see
    /// `step_combined`); its shape scalars are the whole parameter's.
    #[pyo3(signature = (program, specs, threads = None, shards = None))]
    fn new(
        program: &Program,
        specs: Vec<Spec>,
        threads: Option<usize>,
        shards: Option<Vec<usize>>,
    ) -> PyResult<Stepper> {
        if shards.as_ref().is_some_and(|s| s.len() != specs.len()) {
            return Err(pyo3::exceptions::PyValueError::new_err("shards: give one whole leading extent per spec"));
        }
        let mut bound = Vec::with_capacity(specs.len());
        for (i, (name, shape, role, base)) in specs.into_iter().enumerate() {
            let role = parse_role(&name, &role)?;
            let mut spec = ParamSpec::new(name, &shape).with_role(role);
            if let Some(b) = base {
                spec = spec.with_base_shape(&b);
            }
            if let Some(whole) = &shards {
                spec = spec.as_shard(whole[i]);
            }
            bound.push(spec);
        }
        let options = Options { backend: Backend::Cpu, threads };
        let opt = gdc_runtime::Optimizer::with_options(&program.program, &bound, options).map_err(runtime_error)?;
        Ok(Stepper { opt, prepared: None })
    }

    fn set_hyper(&mut self, name: &str, value: f64) -> PyResult<()> {
        self.opt.set_hyper(name, value).map_err(runtime_error)
    }

    fn hyper(&self, name: &str) -> Option<f64> {
        self.opt.hyper(name)
    }

    /// The current value of the program's global `name` (`None`: no such global).
    fn global_value(&self, name: &str) -> Option<f64> {
        self.opt.global(name)
    }

    fn set_nonfinite(&mut self, policy: &str) -> PyResult<()> {
        self.opt.set_non_finite(parse_policy(policy)?);
        Ok(())
    }

    #[getter]
    fn step_count(&self) -> u64 {
        self.opt.step_count()
    }

    #[getter]
    fn skipped_steps(&self) -> u64 {
        self.opt.skipped_steps()
    }

    /// Each bound member: (name, parameter index, offset, length, shape).
    fn members(&self) -> Vec<(String, usize, usize, usize, Vec<usize>)> {
        self.opt.members().iter().map(|m| (m.name.clone(), m.param, m.offset, m.len, m.shape.clone())).collect()
    }

    /// One step on float32 parameters and gradients lent as (address, elements), in binding
    /// order. The caller keeps the memory alive and unshared for the call.
    fn step(&mut self, py: Python<'_>, params: Vec<Region>, grads: Vec<Region>) -> PyResult<()> {
        self.prepared = None;
        check_regions(&params, &grads, 4, self.opt.params())?;
        step_f32(&mut self.opt, py, &params, &grads)
    }

    /// `step` with per-step inputs, each (parameter name, input name, shape, (address,
    /// elements)) of float32 memory the caller keeps alive for the call; an input may not
    /// share memory with a parameter.
    fn step_inputs(
        &mut self,
        py: Python<'_>,
        params: Vec<Region>,
        grads: Vec<Region>,
        inputs: Vec<(String, String, Vec<usize>, Region)>,
    ) -> PyResult<()> {
        self.prepared = None;
        check_regions(&params, &grads, 4, self.opt.params())?;
        let regions: Vec<Region> = inputs.iter().map(|x| x.3).collect();
        for (x, &(addr, len)) in inputs.iter().zip(&regions) {
            if len > 0 && (addr == 0 || addr % 4 != 0) {
                return Err(error(
                    "TensorError",
                    format!("input `{}` of `{}`: its data pointer is null or misaligned", x.1, x.0),
                ));
            }
            let overlaps = params.iter().any(|&(p, n)| n > 0 && len > 0 && addr < p + 4 * n && p < addr + 4 * len);
            if overlaps {
                return Err(error(
                    "TensorError",
                    format!("input `{}` of `{}` shares memory with a parameter; hand over a copy", x.1, x.0),
                ));
            }
        }
        let opt = &mut self.opt;
        py.detach(move || {
            // SAFETY: each input region is a live, aligned buffer of that many float32
            // elements lent by the caller for the call, only read, and apart from every
            // parameter (checked above).
            #[allow(unsafe_code)]
            let data: Vec<&[f32]> = regions
                .iter()
                .map(|&(a, n)| if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(a as *const f32, n) } })
                .collect();
            let mut given = gdc_runtime::Inputs::new();
            for (x, d) in inputs.iter().zip(&data) {
                given.add(&x.0, &x.1, &x.2, d);
            }
            with_slices::<f32, _>(&params, &grads, |ps, gs| opt.step_with_inputs(ps, gs, &given))
        })
        .map_err(runtime_error)
    }

    /// The (parameter, input) pairs the next step reads of the required inputs.
    fn inputs_next_step(&mut self) -> PyResult<Vec<(String, String)>> {
        self.opt.inputs_next_step().map_err(runtime_error)
    }

    /// One step of shards (a stepper made with `shards`), as `step`, calling
    /// `combine(values, kinds)` once per kernel that reduces, in plan order, with this
    /// rank's partials (floats) and their kinds ("sum" or "max_abs"); it returns the values
    /// combined over every rank (sums added, max-abs maxima taken), which the step then
    /// reads. Every rank must bind the same parameters in the same order. An exception in
    /// `combine` is raised from here.
    fn step_combined(&mut self, params: Vec<Region>, grads: Vec<Region>, combine: Bound<'_, PyAny>) -> PyResult<()> {
        self.prepared = None;
        check_regions(&params, &grads, 4, self.opt.params())?;
        let mut failure: Option<PyErr> = None;
        let mut call = |parts: &mut [Partial]| -> Result<(), RuntimeError> {
            let values: Vec<f64> = parts.iter().map(|p| p.value).collect();
            let kinds: Vec<&str> = parts
                .iter()
                .map(|p| match p.kind {
                    ReduceKind::Sum => "sum",
                    ReduceKind::MaxAbs => "max_abs",
                    ReduceKind::Max => "max",
                })
                .collect();
            let combined = combine.call1((values, kinds)).and_then(|r| r.extract::<Vec<f64>>());
            match combined {
                Ok(v) if v.len() == parts.len() => {
                    for (p, x) in parts.iter_mut().zip(v) {
                        p.value = x;
                    }
                    Ok(())
                }
                Ok(v) => Err(RuntimeError::Combine(format!(
                    "combine returned {} values for {} partials",
                    v.len(),
                    parts.len()
                ))),
                Err(e) => {
                    failure = Some(e);
                    Err(RuntimeError::Combine("combine raised".into()))
                }
            }
        };
        // The GIL stays held: `combine` is Python (torch.distributed collectives).
        let result = with_slices::<f32, _>(&params, &grads, |ps, gs| self.opt.step_combined(ps, gs, &mut call));
        match failure {
            Some(e) => Err(e),
            None => result.map_err(runtime_error),
        }
    }

    /// Floating-point operations of the matrix library calls (products, decompositions)
    /// of every step so far.
    #[getter]
    fn matrix_flops(&self) -> u64 {
        self.opt.matrix_flops().unwrap_or(0)
    }

    /// The state each bound member allocates, known before the first step: (member name,
    /// state name, shape).
    fn state_layout(&self) -> PyResult<Vec<(String, String, Vec<usize>)>> {
        self.opt.state_layout().map_err(runtime_error)
    }

    /// The fast path of `gdc.torch` for a param group stepped as one float32 binding:
    /// checks, for every tensor of the group, that the bound ones (`bound[i]`) have a
    /// gradient and that parameter and gradient are dense, contiguous float32 CPU tensors of
    /// the bound shape, and that the others have no gradient; if so, keeps their regions for
    /// `step_prepared` and returns True. Anything else returns False, keeps nothing, and the
    /// caller's slower checks name what is wrong. Reads each tensor's metadata only.
    #[allow(clippy::too_many_arguments)]
    fn prepare_torch(
        &mut self,
        group: &Bound<'_, PyList>,
        bound: Vec<bool>,
        shapes: &Bound<'_, PyList>,
        float32: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.prepared = None;
        let py = group.py();
        if bound.len() != group.len() {
            return Ok(false);
        }
        let (n_params, specs) = (self.opt.params().len(), self.opt.params());
        let mut params = Vec::with_capacity(n_params);
        let mut grads = Vec::with_capacity(n_params);
        for (i, p) in group.iter().enumerate() {
            let g = p.getattr(intern!(py, "grad"))?;
            if !bound[i] {
                if !g.is_none() {
                    return Ok(false);
                }
                continue;
            }
            let k = params.len();
            if g.is_none() || k >= n_params {
                return Ok(false);
            }
            // Dense, contiguous float32 on the CPU in the bound shape; a tensor of another
            // layout (sparse, mkldnn) fails `is_contiguous` or `data_ptr`, which sends it
            // to the slow path too.
            let regular = |t: &Bound<'_, PyAny>| -> PyResult<Option<usize>> {
                let ok = t.getattr(intern!(py, "is_cpu"))?.is_truthy()?
                    && t.getattr(intern!(py, "dtype"))?.is(float32)
                    && t.getattr(intern!(py, "shape"))?.eq(shapes.get_item(k)?)?
                    && t.call_method0(intern!(py, "is_contiguous"))?.is_truthy()?;
                if !ok {
                    return Ok(None);
                }
                Ok(Some(t.call_method0(intern!(py, "data_ptr"))?.extract::<usize>()?))
            };
            let (Ok(Some(pa)), Ok(Some(ga))) = (regular(&p), regular(&g)) else { return Ok(false) };
            let n = specs[k].numel();
            params.push((pa, n));
            grads.push((ga, n));
        }
        if params.len() != n_params {
            return Ok(false);
        }
        check_regions(&params, &grads, 4, specs)?;
        self.prepared = Some((params, grads));
        Ok(true)
    }

    /// Steps the regions `prepare_torch` kept (the tensors must still be alive and
    /// unchanged: gdc.torch calls both within one `step`).
    fn step_prepared(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some((params, grads)) = self.prepared.take() else {
            return Err(error("GdcError", "internal error: step_prepared without prepare_torch"));
        };
        step_f32(&mut self.opt, py, &params, &grads)
    }

    /// Forgets what `prepare_torch` kept (another group's checks failed).
    fn clear_prepared(&mut self) {
        self.prepared = None;
    }

    /// One step on bfloat16 parameters (2-byte elements) with float32 gradients and state,
    /// rounding back stochastically (`Optimizer::step_bf16`).
    fn step_bf16(&mut self, py: Python<'_>, params: Vec<Region>, grads: Vec<Region>) -> PyResult<()> {
        self.prepared = None;
        check_regions(&params, &grads, 2, self.opt.params())?;
        let opt = &mut self.opt;
        py.detach(move || with_slices::<u16, _>(&params, &grads, |ps, gs| opt.step_bf16(ps, gs))).map_err(runtime_error)
    }

    /// Everything a checkpoint holds: a dict of metadata and a list of (member, state,
    /// shape, float32 little-endian bytes).
    #[allow(clippy::type_complexity)]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyDict>, Vec<(String, String, Vec<usize>, Bound<'py, PyBytes>)>)> {
        let (meta, tensors) = self.opt.snapshot().map_err(runtime_error)?;
        let d = PyDict::new(py);
        d.set_item("program_hash", &meta.program_hash)?;
        d.set_item("optimizer", &meta.optimizer)?;
        d.set_item("params", &meta.params)?;
        d.set_item("step", meta.step)?;
        d.set_item("skipped_steps", meta.skipped_steps)?;
        d.set_item("hypers", &meta.hypers)?;
        let globals = match &meta.globals {
            Globals::Named(g) => g.clone(),
            Globals::Positional(_) => Vec::new(),
        };
        d.set_item("globals", globals)?;
        let out = tensors
            .into_iter()
            .map(|t| {
                let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (t.param, t.state, t.shape, PyBytes::new(py, &bytes))
            })
            .collect();
        Ok((d, out))
    }

    /// Restores a snapshot: metadata as `snapshot` gives it, tensors as (member, state,
    /// shape, address, elements) of float32 memory the caller holds for the call.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (program_hash, optimizer, params, step, skipped_steps, hypers, globals, tensors))]
    fn restore(
        &mut self,
        program_hash: String,
        optimizer: String,
        params: Vec<(String, Vec<usize>)>,
        step: u64,
        skipped_steps: u64,
        hypers: Vec<(String, f64)>,
        globals: Vec<(String, f64)>,
        tensors: Vec<(String, String, Vec<usize>, usize, usize)>,
    ) -> PyResult<()> {
        let mut states = Vec::with_capacity(tensors.len());
        for (param, state, shape, addr, len) in tensors {
            if len > 0 && (addr == 0 || addr % 4 != 0) {
                return Err(error("CheckpointError", format!("state `{state}` of `{param}`: null or misaligned data")));
            }
            let data = if len == 0 {
                Vec::new()
            } else {
                // SAFETY: the caller lends a live, contiguous float32 buffer of `len` elements
                // (a tensor it holds for the call); it is only read, and copied.
                #[allow(unsafe_code)]
                unsafe {
                    std::slice::from_raw_parts(addr as *const f32, len).to_vec()
                }
            };
            states.push(StateTensor { param, state, shape, data });
        }
        let meta = CheckpointMeta {
            program_hash,
            optimizer,
            params,
            step,
            skipped_steps,
            hypers,
            globals: Globals::Named(globals),
        };
        self.prepared = None;
        self.opt.restore(Path::new("<state_dict>"), meta, &states).map_err(runtime_error)
    }

    /// The runtime's own checkpoint (safetensors, atomic, checksummed).
    fn save_checkpoint(&self, path: PathBuf) -> PyResult<()> {
        self.opt.save_checkpoint(path).map_err(runtime_error)
    }

    fn load_checkpoint(&mut self, path: PathBuf) -> PyResult<()> {
        self.opt.load_checkpoint(path).map_err(runtime_error)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Program>()?;
    m.add_class::<Stepper>()?;
    m.add_class::<Hyper>()?;
    m.add_function(wrap_pyfunction!(compile_source, m)?)?;
    m.add_function(wrap_pyfunction!(compile_file, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // A precision hyperparameter's names and the values the runtime takes for them.
    m.add("PRECISIONS", gdc_dsl::builtins::PRECISIONS.iter().map(|(n, b)| (*n, *b)).collect::<Vec<_>>())?;
    Ok(())
}
