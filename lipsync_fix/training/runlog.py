"""A training run's log: console lines, ``metrics.jsonl`` and (if installed) TensorBoard.

Both trainers (sync models, separators) write through :class:`RunLog`, so one reader,
:func:`read_metrics`, reads either kind of run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """Console lines through ``echo``, one JSON line per record in ``metrics.jsonl``, and
    TensorBoard scalars when the ``tensorboard`` package is installed.

    Only one process of a distributed run writes (``active``). On resume, records past the
    checkpoint's step (written before a crash) are dropped so the file reads as one run.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        active: bool = True,
        resume_step: int = 0,
        quiet: bool = False,
        log_dir: str | None = None,
        tensorboard: bool = True,
        echo: Callable[[str], None] = print,
    ):
        self.active = active
        self.quiet = quiet
        self.echo = echo
        self.path = run_dir / METRICS_FILE
        self.writer = None
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(self.path, resume_step)
        if not tensorboard:
            return
        try:  # optional dependency: the JSON lines are always written
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.say(f"tensorboard is not installed: metrics go to {self.path} only")
        else:
            folder = log_dir or str(run_dir / "tensorboard")
            self.writer = SummaryWriter(log_dir=folder, purge_step=resume_step or None)
            self.say(f"TensorBoard logs in {folder}; metrics also in {self.path}")

    def say(self, line: str) -> None:
        if self.active and not self.quiet:
            self.echo(line)

    def record(self, kind: str, step: int, **values: Any) -> None:
        if not self.active:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _truncate_metrics(path: Path, resume_step: int) -> None:
    """On resume keep the records up to the checkpoint's step; on a fresh start, none."""
    if not path.exists():
        return
    keep = []
    if resume_step > 0:
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                if int(json.loads(line).get("step", 0)) <= resume_step:
                    keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a run's ``metrics.jsonl`` (``kind``: ``"train"``, ``"val"``, ``"summary"``)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
