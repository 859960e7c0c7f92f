"""Programs from Python: compile, load, emit, hypers, and the errors of a bad `.gd` file or
a corrupt artifact, which carry exactly what the CLI prints."""

import os
import subprocess

import pytest

import gdc
from conftest import OPTIMIZERS, ROOT


def _gdc_binary():
    """The CLI, to compare messages with (built by the Rust half of the test suite)."""
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "gdc"
        if path.exists():
            return str(path)
    return None


BAD = """optimizer broken {
  hyper lr = 1e-3
  state m = zeros
  update(p, g) {
    m = lerp(m, g, 1 - beta1)
    p = p - lr * undefined_name
  }
}
"""


def test_compile_path_and_source_agree():
    from_path = gdc.compile(OPTIMIZERS / "adamw.gd")
    from_source = gdc.compile((OPTIMIZERS / "adamw.gd").read_text())
    assert from_path.name == from_source.name == "adamw"
    assert from_path.emit("plan") == from_source.emit("plan")
    assert from_path.target == "cpu" and from_path.arch is None


def test_hypers_list_name_type_default_range():
    program = gdc.compile(OPTIMIZERS / "adamw.gd")
    hypers = {h.name: h for h in program.hypers}
    assert list(hypers) == ["lr", "beta1", "beta2", "eps", "weight_decay"]
    assert hypers["lr"].type == "f32" and hypers["lr"].default == pytest.approx(1e-3)
    muon = {h.name: h for h in gdc.compile(OPTIMIZERS / "muon.gd").hypers}
    assert muon["ns_steps"].type == "int" and muon["nesterov"].type == "bool"
    assert muon["ns_precision"].type == "precision" and muon["ns_precision"].default == 8  # bf16
    ranged = [h for p in OPTIMIZERS.glob("*.gd") for h in gdc.compile(p).hypers if h.range is not None]
    assert ranged, "some example declares a range"
    lo, hi = ranged[0].range
    assert lo <= ranged[0].default <= hi


@pytest.mark.parametrize("stage", ["ast", "ir", "ir-opt", "plan", "clif", "mlir"])
def test_emit_stages(stage):
    text = gdc.compile(OPTIMIZERS / "adamw.gd").emit(stage)
    assert text.strip(), stage
    marker = {"ast": "optimizer adamw", "plan": "kernel", "mlir": "gpu.module", "clif": "function"}.get(stage)
    if marker:
        assert marker in text


def test_emit_matches_the_cli():
    gdc_bin = _gdc_binary()
    if gdc_bin is None:
        pytest.skip("the gdc binary is not built (cargo build -p gdc-cli); the stage texts were checked above")
    path = str(OPTIMIZERS / "soap.gd")
    cli = subprocess.run([gdc_bin, "emit", path, "--stage", "plan"], capture_output=True, text=True, check=True)
    assert gdc.compile(path).emit("plan") == cli.stdout


def test_unknown_stage_is_an_error():
    with pytest.raises(gdc.GdcError, match="unknown stage"):
        gdc.compile(OPTIMIZERS / "adamw.gd").emit("assembly")


def test_compile_error_is_what_gdc_check_prints(tmp_path):
    path = tmp_path / "broken.gd"
    path.write_text(BAD)
    with pytest.raises(gdc.CompileError) as err:
        gdc.compile(path)
    message = str(err.value)
    # Every error in one run, each with file:line:col, a caret and a hint.
    assert f"{path}:5:" in message and f"{path}:6:" in message
    assert "^" in message and "hint" in message
    assert message.rstrip().endswith("2 errors")
    gdc_bin = _gdc_binary()
    if gdc_bin is not None:
        cli = subprocess.run([gdc_bin, "check", str(path)], capture_output=True, text=True)
        assert cli.returncode == 1
        assert message.rstrip() == cli.stderr.rstrip()


def test_compile_error_from_source_names_it():
    with pytest.raises(gdc.CompileError, match="<source>:6:"):
        gdc.compile(BAD)


def test_missing_file_is_a_compile_error(tmp_path):
    with pytest.raises(gdc.CompileError, match="nope.gd"):
        gdc.compile(tmp_path / "nope.gd")


def test_artifact_round_trip_and_corruption(tmp_path):
    program = gdc.compile(OPTIMIZERS / "lion.gd")
    path = tmp_path / "lion.gdo"
    program.save(path)
    loaded = gdc.load(path)
    assert loaded.name == "lion" and loaded.hash == program.hash
    assert loaded.emit("plan") == program.emit("plan")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.gdo"
    bad.write_bytes(bytes(data))
    with pytest.raises(gdc.ArtifactError) as err:
        gdc.load(bad)
    gdc_bin = _gdc_binary()
    if gdc_bin is not None:
        cli = subprocess.run([gdc_bin, "replay", str(bad), str(ROOT / "tests/golden/lion-default.json")], capture_output=True, text=True)
        assert cli.returncode == 2
        assert cli.stderr.strip() == f"error: {err.value}"
    truncated = tmp_path / "cut.gdo"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(gdc.ArtifactError):
        gdc.load(truncated)


def test_cuda_target_without_mlir_says_how():
    try:
        program = gdc.compile(OPTIMIZERS / "adamw.gd", target="cuda", arch="sm_90")
    except gdc.DeviceError as e:
        assert "gdc build" in str(e)
    else:
        # A package built with the `mlir` feature makes PTX.
        assert program.target == "cuda" and ".entry" in program.emit("ptx")


def test_bad_target_and_arch():
    with pytest.raises(gdc.GdcError, match="unknown target"):
        gdc.compile(OPTIMIZERS / "adamw.gd", target="tpu")
    with pytest.raises(gdc.GdcError):
        gdc.compile(OPTIMIZERS / "adamw.gd", target="cuda", arch="sm_12")


def test_exception_hierarchy():
    assert issubclass(gdc.HyperparameterError, ValueError)
    assert issubclass(gdc.TensorError, ValueError)
    assert all(issubclass(e, gdc.GdcError) for e in (gdc.CompileError, gdc.ArtifactError, gdc.CheckpointError))
    assert os.fspath(OPTIMIZERS).endswith("optimizers")


def test_an_artifact_brings_the_llvm_tier_and_steps_like_cranelift(tmp_path, monkeypatch):
    import torch

    gdc_bin = _gdc_binary()
    if gdc_bin is None:
        print("skipped: no gdc CLI built to make the artifact (cargo build)")
        return
    path = tmp_path / "adamw.gdo"
    subprocess.run([gdc_bin, "build", str(OPTIMIZERS / "adamw.gd"), "-o", str(path)], check=True, capture_output=True)
    native = gdc.load(path)
    if native.native is None:
        print("skipped: this CPU runs no level of the LLVM tier (it needs AVX2)")
        return
    assert native.native in ("x86-64-v3", "x86-64-v4")
    # Saving keeps the tier's code.
    again = tmp_path / "again.gdo"
    native.save(again)
    assert gdc.load(again).native == native.native
    # Without it (as on a CPU without AVX2), the same artifact runs on Cranelift.
    monkeypatch.setenv("GDC_NO_NATIVE", "1")
    cranelift = gdc.load(path)
    monkeypatch.delenv("GDC_NO_NATIVE")
    assert cranelift.native is None

    def trajectory(program):
        torch.manual_seed(0)
        w = torch.randn(37, 129, requires_grad=True)
        b = torch.randn(65536 + 13, requires_grad=True)
        opt = gdc.torch.Optimizer(program, [("w", w), ("b", b)], threads=2, lr=1e-2, weight_decay=0.1)
        for _ in range(4):
            w.grad = torch.randn_like(w)
            b.grad = torch.randn_like(b)
            opt.step()
        return w.detach().clone(), b.detach().clone()

    (w1, b1), (w2, b2) = trajectory(native), trajectory(cranelift)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
    assert not torch.equal(w1, torch.randn(37, 129))
