"""SIGINT and SIGTERM: stop cleanly, never leave a partial output.

Outputs are written into a temporary directory and renamed into place
(:func:`graphprune.emit.onnx.save_onnx`), so an interrupt while computing
leaves nothing behind once the ``finally`` blocks have run. SIGTERM's
default action would kill the process before they run, so
:func:`install` turns it into an exception like SIGINT's. The few lines that
put the outputs in place (the model, then the report) run under
:func:`deferred`, so a signal there waits until both are written rather than
leaving a model without its report.
"""

from __future__ import annotations

import contextlib
import signal

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report it


class Interrupted(BaseException):
    """Raised in the main thread when SIGINT or SIGTERM arrives (BaseException, like KeyboardInterrupt,
    so ``except Exception`` blocks do not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = EXIT_CODES.get(signum, 128 + signum)


_pending: list[int] = []
_deferring = [False]


def _handler(signum, frame):
    if _deferring[0]:
        _pending.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to :class:`Interrupted` (main thread only; a no-op elsewhere)."""
    with contextlib.suppress(ValueError):  # not the main thread (embedded use)
        for signum in EXIT_CODES:
            signal.signal(signum, _handler)


@contextlib.contextmanager
def deferred():
    """Hold SIGINT/SIGTERM until the block is done, then act on the first that came."""
    previous = _deferring[0]
    _deferring[0] = True
    try:
        yield
    finally:
        _deferring[0] = previous
        if not previous and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)
