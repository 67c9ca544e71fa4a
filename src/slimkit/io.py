"""Safe file output: checked output paths and atomic writes (temp file in the same folder + rename).

A failure halfway leaves no half-written artefact, and the user's input files are never opened
for writing.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slimkit.errors import OutputPathError


def check_output_path(path: str | os.PathLike[str], *, inputs: tuple[Path, ...] = ()) -> Path:
    """Return ``path`` as a Path after checking that its folder exists and is writable.

    ``inputs`` are the user's input files: writing over one of them is refused.
    """
    out = Path(path).expanduser()
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(
            f"cannot write '{out}': folder '{folder}' does not exist; create it first "
            "or choose another output path"
        )
    _probe_writable(out, folder)
    if out.is_dir():
        raise OutputPathError(f"cannot write '{out}': it is a folder; give a file name")
    for given in inputs:
        if given.exists() and out.exists() and out.resolve() == given.resolve():
            raise OutputPathError(
                f"refusing to overwrite the input file '{given}'; choose another output path"
            )
    return out


def _probe_writable(out: Path, folder: Path) -> None:
    """Create and remove a temp file: the only check that holds for root and read-only mounts."""
    try:
        fd, name = tempfile.mkstemp(prefix=".slimkit-probe-", dir=folder)
    except OSError as exc:
        raise OutputPathError(
            f"cannot write '{out}': folder '{folder}' is not writable ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *,
                inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    out = check_output_path(path, inputs=inputs)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}",
                                    dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` if it is an existing readable file, else raise a clear error."""
    from slimkit.errors import InputError

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} '{p}' does not exist")
    if not p.is_file():
        raise InputError(f"{what} '{p}' is not a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} '{p}' is not readable")
    return p


@contextlib.contextmanager
def scratch_cwd() -> Iterator[Path]:
    """Run a block with a fresh temporary folder as the working directory, then restore it.

    For third-party code that drops debug files into the working directory: ONNX Runtime's
    symbolic shape inference saves ``sym_shape_infer_temp.onnx`` plus a model-sized external
    data file there whenever its inference is incomplete.
    """
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="slimkit-scratch-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)


def jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become strings ('inf') so the JSON stays strict."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


CACHE_ENV = "SLIMKIT_CACHE_DIR"


def cache_dir() -> Path:
    """Where slimkit keeps what it can rebuild (trained zoo weights, search scans):
    ``$SLIMKIT_CACHE_DIR`` or the user cache folder."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("slimkit"))


def prepare_output_folder(folder: str | os.PathLike[str],
                          reuse: Callable[[Path], bool] | None = None) -> Path:
    """Create (or accept) an output folder, checked writable before any work, so a failure
    leaves nothing half-written. With ``reuse``, a folder that already holds files is accepted
    only when ``reuse(folder)`` says it is one this command wrote before (its files are then
    replaced); otherwise it is refused, never emptied.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> prepare_output_folder(d / "out").is_dir()
        True
    """
    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"output folder '{out}' exists and is not a folder; choose "
                              "another")
    if not out.parent.is_dir():
        raise OutputPathError(f"cannot create '{out}': folder '{out.parent}' does not exist")
    if reuse is not None and out.is_dir() and any(out.iterdir()) and not reuse(out):
        first = sorted(p.name for p in out.iterdir())[0]
        raise OutputPathError(
            f"output folder '{out}' already holds other files (e.g. '{first}'); write into a "
            "new or empty folder, or one this command wrote before")
    try:
        out.mkdir(exist_ok=True)
        probe = out / ".slimkit-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"cannot write into output folder '{out}': "
                              f"{exc.strerror or exc}; choose another") from None
    return out
