"""Process lifetime: a stage and every process it starts end together, however the stage ends.

Three ways a stage can end early, and what each does here:

- SIGTERM (``kill``, a scheduler, DVC's parent dying): :func:`raise_on_signals` turns it into :class:`Terminated`,
  an exception, so every ``finally`` and context manager runs: temporary outputs are removed, worker pools are
  shut down, child processes are told to stop.
- Ctrl-C: the terminal sends SIGINT to the whole foreground process group; the stage sees ``KeyboardInterrupt``
  and unwinds the same way (its pool workers ignore SIGINT and are shut down by the stage).
- Either exception, raised while a finaliser (``__del__``) happens to run, would be printed and dropped by Python,
  and the stage would run on: such a signal is delivered again.
- SIGKILL, or the parent (``dvc repro``) dying: nothing can run in the killed process, so each child asks the
  kernel beforehand to signal it when its parent goes (:func:`die_with_parent`, Linux ``PR_SET_PDEATHSIG``).
  A stage launched by DVC gets SIGTERM when DVC dies; a pool worker gets SIGKILL when its stage dies.
  Temporary folders such a kill leaves behind are removed by the next run (:mod:`speciesclf.files`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from types import FrameType

__all__ = ["Terminated", "die_with_parent", "ignore_interrupts", "raise_on_signals"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Terminated(BaseException):  # like KeyboardInterrupt: not caught by `except Exception`
    """SIGTERM arrived; raised in the main thread so the stage unwinds and cleans up."""

    exit_code = 128 + signal.SIGTERM


_unwinding: int | None = None  # the signal whose exception is unwinding the stage now


def _raise_for_signal(signum: int, frame: FrameType | None) -> None:
    global _unwinding
    if _unwinding is not None:
        return  # a second Ctrl-C or SIGTERM must not cut the clean-up short (SIGKILL still ends it)
    _unwinding = signum
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _redeliver_swallowed(unraisable: sys.UnraisableHookArgs) -> None:
    """Python drops an exception raised in a ``__del__`` or a weakref callback ("Exception ignored in ...");
    a signal's exception landing there would be lost and the stage would run on. Deliver the signal again."""
    global _unwinding
    if _unwinding is not None and isinstance(unraisable.exc_value, (Terminated, KeyboardInterrupt)):
        signum, _unwinding = _unwinding, None
        # from another thread, a moment later: raised here or now, it would land in this hook and be dropped too
        resend = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        resend.daemon = True
        resend.start()
        return
    sys.__unraisablehook__(unraisable)


def raise_on_signals() -> None:
    """From now on SIGTERM raises :class:`Terminated` and SIGINT ``KeyboardInterrupt`` in the main thread, once
    each run (later signals wait for the clean-up), and never into a finaliser that would swallow them."""
    signal.signal(signal.SIGTERM, _raise_for_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job ignores Ctrl-C: keep it so
        signal.signal(signal.SIGINT, _raise_for_signal)
    sys.unraisablehook = _redeliver_swallowed


def ignore_interrupts() -> None:
    """For worker processes: SIGINT and SIGTERM are for the stage, which then shuts its workers down in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits; ``False`` where unsupported.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a stage killed with SIGKILL may leave children behind.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request was in place: act as the kernel would
        os.kill(os.getpid(), sig)
    return True
