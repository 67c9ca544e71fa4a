"""What a data-parallel run raises when a worker fails: the worker and the shard are named.

A worker's own exception (bad input, a model that raises) leaves the pool usable; a crash (the
process died) or a timeout (no result in time) shuts the pool down, since its state is unknown.
"""

from __future__ import annotations

from slimkit.errors import SlimkitError


class WorkerError(SlimkitError):
    """A worker raised an exception on a shard, or could not open the model.

    ``exit_code`` follows the worker's own error when it was a slimkit error (a ``DataError``
    in a worker exits the CLI with 2, as it would in one process).
    """

    def __init__(self, message: str, *, worker: int, shard: int | None = None,
                 examples: tuple[int, int] | None = None, remote_type: str | None = None,
                 remote_traceback: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.worker = worker
        self.shard = shard
        self.examples = examples  # (start, stop) of the shard in the input order
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.exit_code = exit_code


class WorkerCrashedError(WorkerError):
    """A worker process died (a native crash, ``os._exit``, SIGKILL, out of memory)."""


class WorkerTimeoutError(WorkerError):
    """A worker returned no result within the shard (or start-up) timeout."""


class OversubscriptionWarning(UserWarning):
    """More threads in all workers together than this process may use cores."""
