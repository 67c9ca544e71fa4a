import subprocess
import sys

import pytest

from slimkit.errors import InputError, OutputPathError
from slimkit.io import atomic_path, check_output_path
from slimkit.registry import Registry


def test_import_is_light_and_lazy():
    code = ("import sys, time; t = time.perf_counter(); import slimkit; "
            "dt = time.perf_counter() - t; "
            "bad = [m for m in ('onnxruntime', 'transformers', 'optuna', 'torch') "
            "if m in sys.modules]; print(bad, dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    bad, seconds = out.stdout.rsplit(" ", 1)
    assert bad == "[]"
    assert float(seconds) < 0.5


def test_public_api_resolves():
    import slimkit

    for name in slimkit.__all__:
        assert getattr(slimkit, name) is not None
    with pytest.raises(AttributeError):
        slimkit.nope  # noqa: B018


def test_registry_lists_known_names_in_errors():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]
    with pytest.raises(InputError, match="unknown thing 'b'; known: a"):
        reg.get("b")
    with pytest.raises(ValueError):
        reg.register("a")(2)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o644 == 0o644  # readable like any file, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_output_path_checks(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.onnx")
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_path(tmp_path)
    (tmp_path / "in.onnx").write_text("x")
    with pytest.raises(OutputPathError, match="refusing to overwrite the input"):
        check_output_path(tmp_path / "in.onnx", inputs=(tmp_path / "in.onnx",))


def test_verbs_stay_callable_after_their_subpackages_are_imported():
    import importlib

    import slimkit

    for verb in ("prune", "quantize", "cluster", "distill", "search", "advise", "evaluate"):
        importlib.import_module(f"slimkit.{verb}")
        assert callable(getattr(slimkit, verb)), verb
