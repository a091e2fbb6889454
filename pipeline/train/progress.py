"""Training progress on screen: step/total, loss, step time and ETA, from rank 0 of every stage.

    from pipeline.train.progress import Progress
    p = Progress("sft", total=200, start=0, live=True)   # live: the driver's stdout is a terminal
    p.update(step, {"loss": 2.31})                         # prints when due

Ray forwards a worker's stdout line by line, so progress is whole lines: on a terminal
(`live`) about one a second, otherwise (logs, CI, D2D_PROGRESS=0) one every `every`
steps (default: a tenth of the run) and at the last step. Only what is printed depends on
the clock; budgets are steps, so a slow machine prints the same steps later, not fewer.
"""

from __future__ import annotations

import os
import sys
import time


def live_default() -> bool:
    """The driver decides (workers have no terminal): a TTY and D2D_PROGRESS not 0."""
    return sys.stdout.isatty() and os.environ.get("D2D_PROGRESS", "1") != "0"


def _clock(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, stage: str, total: int, start: int = 0, live: bool = False, every: int = 0):
        self.stage, self.total, self.start, self.live = stage, total, start, live
        self.every = every or max(1, (total - start) // 10)
        self.t0 = self.last_print = time.monotonic()

    def line(self, step: int, stats: dict) -> str:
        done = step - self.start
        per = (time.monotonic() - self.t0) / max(done, 1)
        shown = " ".join(f"{k} {v:.4g}" for k, v in stats.items() if isinstance(v, (int, float)))
        return (f"[{self.stage}] step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) {shown} "
                f"{per:.2f} s/step ETA {_clock(per * (self.total - step))}")

    def update(self, step: int, stats: dict) -> bool:
        """Print a line when one is due; returns whether it printed."""
        now = time.monotonic()
        due = step == self.total or (now - self.last_print >= 1.0 if self.live else step % self.every == 0)
        if due:
            print(self.line(step, stats), flush=True)
            self.last_print = now
        return due
