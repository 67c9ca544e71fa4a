"""The exceptions slimkit raises for problems a user can fix.

Every message names what failed (a file, a layer's qualified name, a runtime), the rule that
failed, and what to do. The CLI prints ``str(error)`` as one line and exits with
``error.exit_code``; anything that is not a ``SlimkitError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class SlimkitError(Exception):
    """Base class of every error slimkit raises on purpose."""

    exit_code = 1


class InputError(SlimkitError):
    """The user's input (a path, a spec, an option) cannot be used as given."""

    exit_code = 2


class ModelLoadError(InputError):
    """A model file or spec could not be loaded."""


class DataError(InputError):
    """Data does not fit the model (names, shapes, dtypes) or could not be read."""


class OutputPathError(InputError):
    """An output path cannot be written (missing or read-only folder)."""


class MissingDependencyError(SlimkitError):
    """An optional package is needed; the message names the extra that brings it."""

    exit_code = 3


class RuntimeUnavailableError(SlimkitError):
    """A runtime or execution provider was asked for but is not available here."""

    exit_code = 3


class VerificationError(SlimkitError):
    """A produced model does not match the model it came from beyond tolerance."""

    exit_code = 4


class ExportError(SlimkitError):
    """Exporting a model failed."""

    exit_code = 4
