import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    spec = importlib.util.spec_from_file_location("readme_command",
                                                  ROOT / ".ci" / "readme_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands((ROOT / "README.md").read_text())


def test_ci_runs_the_readme_commands_read_from_the_readme():
    first, second = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py 1" in ci and "readme_command.py 2" in ci
    assert "check_demo.py" in ci  # a demo that fails or draws a broken report fails CI
    # the first command is a bare install (no extras) that runs the demo to the end
    assert first.endswith("&& slimkit demo") and "-e . " in first and "[" not in first
    assert second.endswith("&& pytest") and '-e ".[test]"' in second
    for command in (first, second):
        assert "torch==2.13.0" in command  # pip takes the CPU build


def test_the_base_install_has_what_the_demo_needs():
    # the demo runs the automatic search (optuna); a test extra must not hide a missing base
    # dependency (issue: the first command failed on a bare install while CI stayed green)
    text = (ROOT / "pyproject.toml").read_text()
    base = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    for package in ("optuna", "onnxruntime", "matplotlib", "scikit-learn", "transformers"):
        assert re.search(rf'"{package}[>=<]', base), package


def test_the_ci_demo_check_runs(tmp_path):
    # its imports must follow the package's layout (a moved module once broke CI, not tests)
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_demo.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "the demo did not write" in done.stderr, done.stderr
