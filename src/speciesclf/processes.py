"""Process lifetime: a stage and every process it starts end together, however the stage ends.

Three ways a stage can end early, and what each does here:

- SIGTERM (``kill``, a scheduler, DVC's parent dying): :func:`raise_on_signals` turns it into :class:`Terminated`,
  an exception, so every ``finally`` and context manager runs: temporary outputs are removed, worker pools are
  shut down, child processes are told to stop.
- Ctrl-C: the terminal sends SIGINT to the whole foreground process group; the stage sees ``KeyboardInterrupt``
  and unwinds the same way (its pool workers ignore SIGINT and are shut down by the stage).
- Either exception, raised while a finaliser (``__del__``) happens to run, would be printed and dropped by Python,
  and the stage would run on: such a signal is delivered again.
- SIGKILL, or the parent dying: nothing can run in the killed process, so each child arranges beforehand to be
  signalled when it goes. A pool worker gets SIGKILL when its stage dies (:func:`die_with_parent`, Linux
  ``PR_SET_PDEATHSIG``); a stage that DVC started gets SIGTERM when DVC dies (:func:`die_with_dvc`), even with a
  shell left in between. Temporary folders such a kill leaves behind are removed by the next run
  (:mod:`speciesclf.files`).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from types import FrameType

__all__ = ["Terminated", "die_with_dvc", "die_with_parent", "ignore_interrupts", "raise_on_signals"]

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
    # over a file-size limit (ulimit -f) a write then fails with EFBIG, an OSError naming the file, instead of
    # SIGXFSZ killing the stage with a core dump and its temporary output left behind
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
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


# shells that DVC may run a stage's cmd with ($SHELL, else /bin/sh); dash stays as the command's parent, bash execs
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "fish"})


def die_with_dvc(sig: int = signal.SIGTERM) -> bool:
    """If DVC started this process (it sets ``DVC_STAGE``), have ``sig`` sent to it when DVC exits, however DVC
    exits; ``False`` where not started by DVC or unsupported.

    DVC runs a stage's ``cmd`` as ``$SHELL -c cmd`` (``/bin/sh`` where SHELL is unset). bash and zsh replace
    themselves with the command; dash stays as its parent and outlives DVC, so the parent's death is no sign. The
    process watched is the nearest ancestor that is not such a shell. A stage run by hand is tied to nothing, so
    ``nohup`` keeps it alive after its terminal closes. Linux only (``/proc``, ``pidfd_open``).
    """
    if "DVC_STAGE" not in os.environ or not sys.platform.startswith("linux"):
        return False
    dvc = _launcher()
    if _orphaned(dvc):  # DVC died while this stage was starting: act as the watch would have
        os.kill(os.getpid(), sig)
        return True
    try:
        pidfd = os.pidfd_open(dvc)
    except ProcessLookupError:
        pidfd = None
    except OSError:  # a kernel before 5.3, or a sandbox that forbids it: the parent is the best we can watch
        return die_with_parent(sig)
    if pidfd is None or _launcher() != dvc:  # gone before the watch was in place: act as the watch would
        os.kill(os.getpid(), sig)
        return True
    threading.Thread(target=_signal_on_exit, args=(pidfd, sig), name=f"watch {dvc}", daemon=True).start()
    return True


def _signal_on_exit(pidfd: int, sig: int) -> None:
    select.select([pidfd], [], [])  # a process's pidfd becomes readable when the process exits
    os.kill(os.getpid(), sig)


def _orphaned(launcher: int) -> bool:
    """Whether the stage's launcher is gone already: its chain broke while read (0), or the stage was handed to init
    (pid 1) — unless init is DVC itself, as in a container started with `dvc repro`. A subreaper that adopts
    orphans (tini, systemd --user) is not recognised and is watched instead."""
    if launcher == 0:
        return True
    if launcher != 1:
        return False
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return b"dvc" not in f.read()
    except OSError:
        return True


def _launcher() -> int:
    """The nearest ancestor that is not a shell running ``-c`` a command (0 if the chain breaks while read)."""
    pid = os.getppid()
    try:
        while _runs_a_command_line(pid):
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])  # after "pid (comm) state": the parent's pid
    except (OSError, IndexError, ValueError):
        return 0
    return pid


def _runs_a_command_line(pid: int) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return os.path.basename(argv[0].decode(errors="replace")).lstrip("-") in _SHELLS and b"-c" in argv[1:]
