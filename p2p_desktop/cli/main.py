"""``p2p-desktop`` entry point.

With no arguments it opens the desktop app; ``p2p-desktop FILE|FOLDER …`` opens it with those
studies, the first selected (desktop file associations and PACS viewers' "open with" rely on
it: a path that exists and is not a sub-command's name). Sub-commands live one per module,
``p2p_desktop.cli.cmd_<name>``, each exposing ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 ran, 1 internal error (log file named), 2 bad input (one line), 3 cancelled.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from p2p_desktop import __version__
from p2p_desktop.cli import (
    cmd_attack,
    cmd_audit,
    cmd_classify,
    cmd_evaluate,
    cmd_models,
    cmd_oracle,
    cmd_pacs,
    cmd_phantoms,
    cmd_plugins,
    cmd_reader_study,
    cmd_rerun,
)

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

# Order = order in --help.
COMMANDS = (cmd_classify, cmd_attack, cmd_evaluate, cmd_phantoms, cmd_oracle, cmd_models, cmd_plugins, cmd_audit,
            cmd_rerun, cmd_pacs, cmd_reader_study)
#: the sub-command names (module cmd_reader_study is the command reader-study)
COMMAND_MODULES = tuple(m.__name__.rsplit(".cmd_", 1)[1].replace("_", "-") for m in COMMANDS)

# Offline by construction: nothing in this program talks to a model hub.
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("DIFFUSERS_OFFLINE", "1"), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
               ("PYQTGRAPH_QT_LIB", "PySide6")):
    os.environ.setdefault(_k, _v)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"p2p-desktop: error: {escape_controls(message)}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``p2p-desktop`` argument parser with every sub-command registered."""
    parser = _Parser(prog="p2p-desktop", description=(
        "Measure how breast-ultrasound classifiers can be fooled: Prompt2Perturb (P2P), "
        "FGSM, PGD and Diff-PGD. Without a sub-command, opens the desktop app."))
    parser.add_argument("--version", action="version", version=f"p2p-desktop {__version__}")
    parser.add_argument("--smoke-test", action="store_true",
                        help="open the main window, load the demo sample, run a quick attack, exit 0/1")
    parser.add_argument("--screenshot", metavar="FILE", help="with --smoke-test: save a window screenshot")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug output to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def log_dir() -> Path:
    from p2p_desktop.paths import user_data_dir

    return user_data_dir() / "logs"


def _write_crash_log(exc: BaseException) -> Path | None:
    import datetime

    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = d / f"crash-{stamp}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        return path
    except OSError:
        return None


_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Terminal control characters (escape sequences in file names, say) shown as ``\\xNN``."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _EscapingStream:
    """A text stream that never passes terminal control sequences through (tab, CR, LF kept)."""

    def __init__(self, raw) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(escape_controls(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C: everything written is rolled back, nothing audited
    (once the outputs are complete, see :func:`p2p_desktop.cli.common.outputs_complete`, they stay)."""


def _on_sigterm(signum, frame) -> None:
    from p2p_desktop.cli.common import TERMINATION

    TERMINATION.requested = True
    raise _Terminated()


def _quiet_unraisable(previous):
    """``sys.unraisablehook`` while a command runs: a SIGTERM or Ctrl-C that lands in a finaliser
    (``__del__``, a weakref callback) cannot propagate; it is noted, not printed as a traceback."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            from p2p_desktop.cli.common import TERMINATION

            TERMINATION.requested = True
            return
        previous(unraisable)

    return hook


_COMPLETE_NOTE = ("p2p-desktop: terminated after the outputs were complete: they are written, audited and kept; "
                  "only what came after them (printing, sending) was stopped")


_QUIET_LOGGERS = ("diffusers", "transformers", "pydicom", "PIL", "torch", "huggingface_hub", "matplotlib")


def split_paths(argv: list[str]) -> tuple[list[str], list[str]]:
    """(options, paths): the leading positional arguments that are not sub-command names are
    studies to open (``p2p-desktop FILE|FOLDER …``); with a sub-command, nothing is split off."""
    options, paths = [], []
    for i, arg in enumerate(argv):
        if arg in COMMAND_MODULES:
            return argv, []
        if arg.startswith("-") and arg != "-":
            options.append(arg)
            if arg == "--screenshot" and i + 1 < len(argv):
                return argv, []  # (its value is a file to write, not a study)
            continue
        paths.append(arg)
    return options, paths


def main(argv: list[str] | None = None) -> int:
    """Entry point: open the desktop app (with studies given as paths), or run a sub-command;
    the exit code (3 when cancelled)."""
    from p2p_desktop.cli.common import TERMINATION
    from p2p_desktop.errors import Cancelled, P2PError

    program = argv is None  # the program itself (not a caller in this process): see _command_scope
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    argv, paths = split_paths(argv)
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {missing[0]} (and not a command: "
                     f"{', '.join(COMMAND_MODULES)})")
    args = parser.parse_args(argv)
    TERMINATION.reset()
    try:
        if args.command is None:
            if args.screenshot and not args.smoke_test:
                parser.error("--screenshot needs --smoke-test")
            from p2p_desktop.gui.app import run_app

            if paths and args.smoke_test:
                parser.error("--smoke-test opens the demo sample; give no files with it")
            return run_app(smoke_test=args.smoke_test, screenshot=args.screenshot, paths=[Path(p) for p in paths])
        with _command_scope(verbose=bool(args.verbose), program=program):
            from p2p_desktop.plugins import load_plugins

            load_plugins()  # once, at start-up: the registries never look for plugins themselves
            code = int(args.handler(args) or 0)
            if TERMINATION.requested:  # a SIGTERM swallowed by a finaliser: the command finished anyway
                sys.stderr.write(_COMPLETE_NOTE + "\n")
            return code
    except KeyboardInterrupt as exc:
        if TERMINATION.complete:
            sys.stderr.write(_COMPLETE_NOTE + "\n")
            return 0
        if isinstance(exc, _Terminated) or TERMINATION.requested:
            sys.stderr.write("p2p-desktop: cancelled (terminated); nothing half-written was left behind\n")
        else:
            sys.stderr.write("p2p-desktop: cancelled (Ctrl-C); nothing half-written was left behind\n")
        return 3
    except Cancelled as exc:
        sys.stderr.write(f"p2p-desktop: cancelled: {escape_controls(str(exc))}\n")
        return 3
    except P2PError as exc:
        sys.stderr.write(f"p2p-desktop: error: {escape_controls(str(exc))}\n")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last line of defence: short message + log
        log = _write_crash_log(exc)
        where = f"; details in {log}" if log else ""
        sys.stderr.write(escape_controls(f"p2p-desktop: internal error: {type(exc).__name__}: {exc}{where}") + "\n")
        return 1


class _command_scope:
    """While a sub-command runs: stdout/stderr escape control characters, SIGTERM cancels like
    Ctrl-C (outputs rolled back, nothing audited), library warnings and log records stay off
    stderr unless --verbose (a refusal is one line)."""

    def __init__(self, verbose: bool, program: bool = False) -> None:
        self.verbose = verbose
        self.program = program  # the process ends after this command: its end is not interruptible

    def __enter__(self):
        import logging
        import signal
        import threading
        import warnings

        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _EscapingStream(sys.stdout), _EscapingStream(sys.stderr)
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGTERM, _on_sigterm)
            except (ValueError, OSError):  # pragma: no cover
                self._previous = None
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = _quiet_unraisable(self._unraisable)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        self._loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
        self._levels = [lg.level for lg in self._loggers]
        if not self.verbose:
            for lg in self._loggers:
                lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for lg, level in zip(self._loggers, self._levels):
            lg.setLevel(level)
        self._warnings.__exit__(None, None, None)
        if self.verbose:
            for w in self._caught:
                sys.stderr.write(f"p2p-desktop: library warning: {w.category.__name__}: {w.message}\n")
        if self.program and self._previous is not None:
            # the command is over and the process only ends now: a SIGTERM or Ctrl-C from here on
            # would turn a finished run into exit 143 or a traceback from interpreter shutdown
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        sys.unraisablehook = self._unraisable
        sys.stdout, sys.stderr = self._streams


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
