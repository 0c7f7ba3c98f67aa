"""Progress of long steps: silent by default, bars and spinners on stderr from the CLI.

Library code marks its long steps and does not care who listens::

    from graphprune.progress import step

    with step("importance", total=len(groups)) as s:
        for g in groups:
            ...
            s.advance()

Who listens is the *current reporter*, a context variable: the silent
:class:`Reporter` by default (the Python API prints nothing), a
:class:`RichReporter` (a bar with counts when the total is known, a spinner
with the step name otherwise, on stderr, cleared when the outermost step
ends) when the CLI runs on a terminal, or whatever the caller passes as
``progress=`` to :func:`graphprune.prune` / ``fold`` / ``inspect`` /
``run_pipeline``:

* ``None``: keep the current reporter (silent unless someone installed one);
* ``False``: silent, also inside a CLI run; ``True``: a :class:`RichReporter`;
* a :class:`Reporter` (``Recorder`` keeps every finished step with its time);
* a callable ``callback(event)``, called with an :class:`Event` when a step
  starts, advances and ends.

Steps nest (``depth``); a step that raises still ends, so the display is
always cleared before an error is printed.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Step:
    """One running step: what it is, how far it got."""

    name: str
    total: int | None = None
    depth: int = 0
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    _reporter: "Reporter | None" = field(default=None, repr=False, compare=False)

    def advance(self, n: int = 1) -> None:
        """``n`` more units of ``total`` are done."""
        self.done += n
        if self._reporter is not None:
            self._reporter.on_advance(self)

    def set_total(self, total: int | None) -> None:
        """The total, when it becomes known after the step started."""
        self.total = total
        if self._reporter is not None:
            self._reporter.on_advance(self)


@dataclass(frozen=True)
class Event:
    """What a progress callback receives: ``kind`` is "start", "advance" or "end"."""

    kind: str
    name: str
    done: int
    total: int | None
    depth: int
    seconds: float


class Reporter:
    """Silent base: subclasses override the hooks they need."""

    def on_start(self, step: Step) -> None:
        pass

    def on_advance(self, step: Step) -> None:
        pass

    def on_end(self, step: Step) -> None:
        pass


class Recorder(Reporter):
    """Keeps every started and finished step (a profile of where the time went)."""

    def __init__(self):
        self.started: list[Step] = []
        self.finished: list[Step] = []

    def on_start(self, step: Step) -> None:
        self.started.append(step)

    def on_end(self, step: Step) -> None:
        self.finished.append(step)

    @property
    def names(self) -> list[str]:
        """Names of the steps in the order they started."""
        return [s.name for s in self.started]


class CallbackReporter(Reporter):
    """Calls ``callback(Event)`` on every start, advance and end."""

    def __init__(self, callback: Callable[[Event], object]):
        self.callback = callback

    def _emit(self, kind: str, step: Step) -> None:
        self.callback(Event(kind, step.name, step.done, step.total, step.depth,
                            time.perf_counter() - step.started))

    def on_start(self, step: Step) -> None:
        self._emit("start", step)

    def on_advance(self, step: Step) -> None:
        self._emit("advance", step)

    def on_end(self, step: Step) -> None:
        self._emit("end", step)


class RichReporter(Reporter):
    """A live display on stderr: one line per running step (nested steps indented).

    Steps with a total show a bar and ``done/total``; steps without one show
    a spinner. The display starts with the first step and is cleared when
    the outermost one ends, so nothing is left between the tool's own output.
    """

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._tasks: dict[int, object] = {}

    def _display(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        from rich.text import Text

        class _IfTotal(ProgressColumn):  # a column shown only for steps whose total is known
            def __init__(self, column):
                super().__init__()
                self.column = column

            def render(self, task):
                return self.column.render(task) if task.total is not None else Text("")

        return Progress(SpinnerColumn(), TextColumn("{task.description}"),
                        _IfTotal(BarColumn(bar_width=30)), _IfTotal(MofNCompleteColumn()),
                        TimeElapsedColumn(), console=self.console, transient=True,
                        redirect_stdout=False, redirect_stderr=False)

    def on_start(self, step: Step) -> None:
        if self._progress is None:
            self._progress = self._display()
            self._progress.start()
        self._tasks[id(step)] = self._progress.add_task("  " * step.depth + step.name, total=step.total)

    def on_advance(self, step: Step) -> None:
        task = self._tasks.get(id(step))
        if task is not None and self._progress is not None:
            self._progress.update(task, completed=step.done, total=step.total)

    def on_end(self, step: Step) -> None:
        task = self._tasks.pop(id(step), None)
        if task is not None and self._progress is not None:
            self._progress.remove_task(task)
        if not self._tasks and self._progress is not None:
            self._progress.stop()
            self._progress = None


SILENT = Reporter()
_current: contextvars.ContextVar[Reporter] = contextvars.ContextVar("graphprune_progress", default=SILENT)
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("graphprune_progress_depth", default=0)


def as_reporter(progress) -> Reporter | None:
    """``progress=`` as a reporter (None: keep the current one); see the module docstring."""
    if progress is None:
        return None
    if progress is True:
        return RichReporter()
    if progress is False:
        return SILENT
    if isinstance(progress, Reporter):
        return progress
    if callable(progress):
        return CallbackReporter(progress)
    from .errors import InputError

    raise InputError(f"progress= takes None, True, False, a graphprune.progress.Reporter or a callable, "
                     f"not {type(progress).__name__}")


def current() -> Reporter:
    return _current.get()


@contextlib.contextmanager
def using(progress) -> Iterator[Reporter]:
    """Make ``progress`` (see :func:`as_reporter`) the current reporter inside the block."""
    reporter = as_reporter(progress)
    if reporter is None:
        yield _current.get()
        return
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def install(reporter: Reporter) -> None:
    """Make ``reporter`` the current one for the rest of this context (the CLI's choice)."""
    _current.set(reporter)


@contextlib.contextmanager
def step(name: str, total: int | None = None) -> Iterator[Step]:
    """A long step, reported to the current reporter; yields a :class:`Step` to ``advance``."""
    reporter = _current.get()
    depth = _depth.get()
    s = Step(name, total, depth, _reporter=None if reporter is SILENT else reporter)
    if reporter is SILENT:
        yield s
        return
    token = _depth.set(depth + 1)
    reporter.on_start(s)
    try:
        yield s
    finally:
        s.seconds = time.perf_counter() - s.started
        _depth.reset(token)
        reporter.on_end(s)


def stepped(name: str):
    """Decorator: the whole call is one step called ``name``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with step(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def reporting(fn):
    """Decorator for API functions with a keyword ``progress=``: it is the current reporter
    for the call (see :func:`using`)."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with using(kwargs.get("progress")):
            return fn(*args, **kwargs)
    return inner


def terminal_reporter(quiet: bool = False, stream=None) -> Reporter:
    """What the CLI installs: a :class:`RichReporter` when ``stream`` (stderr) is a terminal and
    not ``quiet``, else silence."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return SILENT
    return RichReporter()
