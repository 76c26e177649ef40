"""Stop requests: what schedulers send before they kill a job, turned into a flag the training loop reads.

SIGTERM (Slurm and Kubernetes before SIGKILL; torchrun forwards it to its workers), SIGUSR1 (Slurm's
``--signal=USR1@SECONDS``) and SIGINT (Ctrl-C) set ``StopRequests.signal``; the loop finishes the step it is in,
writes a checkpoint there, and the command exits with ``EXIT_INTERRUPTED``. A second Ctrl-C stops at once
(``KeyboardInterrupt``). DataLoader workers ignore all three (``ignore_stop_signals``): a signal sent to the whole
process group (Ctrl-C in a terminal, ``kill -- -PGID``, Slurm's signal to every process of a step) is the
loop's to handle, and a worker killed by it would end the step with a traceback instead.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
#: exit code of a run stopped by a signal after writing a checkpoint at its last step: EX_TEMPFAIL of
#: sysexits.h ("try again later"), distinct from 1 (failed) and 2 (usage), and from 128 + N (killed by signal N)
EXIT_INTERRUPTED = 75
#: exit code of a run stopped at once by a second Ctrl-C (128 + SIGINT, the shell's convention)
EXIT_ABORTED = 130


class StopRequests:
    """While entered (in the main thread), the stop signals set ``signal`` instead of ending the process."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return "Ctrl-C (SIGINT)" if self.signal == signal.SIGINT else signal.Signals(self.signal).name

    def _handle(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signum
        elif signum == signal.SIGINT:  # the user insists
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: leave the stop signals to the loop, which ends the workers itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
