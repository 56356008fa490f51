"""Progress in pytest's terminal: step lines (an engine install, a server started) and, on a
terminal, one live line per phase (a server starting: elapsed and what its log says; a load
run: requests done of total). Quiet under ``-q``; no live line without a TTY (CI logs)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import pytest

from pytest_mi300x.progress import Notice

_WIDTH = 118


class LiveProgress:
    """Callable as a Progress (``progress("line")``); ``live(text)`` rewrites the live line."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._live = ""
        self._last = 0.0

    def _terminal(self) -> Any:
        return self._config.pluginmanager.get_plugin("terminalreporter")

    @property
    def quiet(self) -> bool:
        return self._config.get_verbosity() < 0

    @property
    def is_tty(self) -> bool:
        terminal = self._terminal()
        return bool(terminal is not None and getattr(terminal, "isatty", False))

    def _capture_off(self) -> Any:
        capman = self._config.pluginmanager.getplugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()

    def __call__(self, line: str) -> None:
        """A step worth a line of its own (a Notice even under ``-q``)."""
        if self.quiet and not isinstance(line, Notice):
            return
        with self._capture_off():
            self._clear()
            terminal = self._terminal()
            # An xdist worker's terminal is not the user's: its stderr reaches them.
            if terminal is not None and not hasattr(self._config, "workerinput"):
                terminal.write_line(f"[pytest-mi300x] {line}")
            else:
                print(f"[pytest-mi300x] {line}", file=sys.stderr, flush=True)

    def live(self, text: str) -> None:
        """The current phase, rewritten in place at most 4 times a second (TTY only)."""
        if self.quiet or not self.is_tty or hasattr(self._config, "workerinput"):
            return
        now = time.monotonic()
        if now - self._last < 0.25:
            return
        self._last = now
        with self._capture_off():
            line = f"[pytest-mi300x] {text}"[:_WIDTH]
            self._terminal().write("\r" + line.ljust(len(self._live)))
            self._live = line
            self._terminal().flush()

    def done(self) -> None:
        """The phase ended: clear the live line."""
        if self._live:
            with self._capture_off():
                self._clear()

    def _clear(self) -> None:
        if self._live and self._terminal() is not None:
            self._terminal().write("\r" + " " * len(self._live) + "\r")
            self._live = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.done()
