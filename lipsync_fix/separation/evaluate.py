"""Scoring separators as the paper's Table 3 does: SDR and SIR on the same seeded mixtures,
the unprocessed mixture as the first row, and a paired test between two systems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lipsync_fix.separation.metrics import SystemScores, sdr_sir, significance, table_rows
from lipsync_fix.separation.mixing import MixtureConfig, MixtureDataset, collate
from lipsync_fix.separation.model import YNet, load_separator, system_name


def evaluate_separator(
    model: YNet, dataset: MixtureDataset, device: str | torch.device = "cpu",
    batch_size: int = 4, name: str | None = None, with_mixture: bool = True,
) -> tuple[SystemScores, SystemScores | None]:
    """Per-mixture SDR/SIR of ``model`` on every item of ``dataset``, and of the
    unprocessed mixture (the estimate that does nothing) when ``with_mixture``."""
    model = model.to(device).eval()
    system = SystemScores(name or system_name(model.visual, model.frozen_visual))
    baseline = SystemScores("mixture") if with_mixture else None
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size,
                                                                   len(dataset)))])
            est = model(batch["mixture"].to(device), batch["frames"].to(device)).cpu()
            for j in range(est.shape[0]):
                mix, tgt = batch["mixture"][j], batch["target"][j]
                sdr, sir = sdr_sir(est[j], tgt, mix)
                system.per_clip.append({"index": start + j, "clip": batch["clip"][j],
                                        "second_voice": batch["second_voice"][j],
                                        "sdr": sdr, "sir": sir})
                if baseline is not None:
                    sdr, sir = sdr_sir(mix, tgt, mix)
                    baseline.per_clip.append({"index": start + j, "clip": batch["clip"][j],
                                              "second_voice": batch["second_voice"][j],
                                              "sdr": sdr, "sir": sir})
    return system, baseline


@dataclass
class SeparationComparison:
    """The table of ``eval-separation``: the mixture's row, then one row per system."""

    mixtures: int
    split: str
    rows: list[dict]
    significance: dict | None
    per_clip: dict[str, list[dict]]

    def to_json(self) -> dict:
        return {"mixtures": self.mixtures, "split": self.split, "table": self.rows,
                "significance": self.significance, "per_clip": self.per_clip}


def compare_separators(
    data_root: str | Path,
    checkpoints: list[Path],
    split: str = "test",
    mixtures: int = 100,
    seconds: float = 4.0,
    seed: int = 1234,
    accompaniment_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> SeparationComparison:
    """Score every checkpoint on the same mixtures; with two, a Wilcoxon signed-rank test.

    Systems are named after their run folder (``RUN/last.pth`` -> ``RUN``) and the paper's
    system name, or by their path when two run folders share a name.
    """
    dataset = MixtureDataset(data_root, split, mixtures, MixtureConfig(seconds, seed=seed),
                             accompaniment_dir)
    names = [p.stem if p.stem != "last" else p.parent.name for p in checkpoints]
    unique = len(set(names)) == len(names)
    systems: list[SystemScores] = []
    baseline: SystemScores | None = None
    for path, name in zip(checkpoints, names, strict=True):
        model = load_separator(path, device)
        label = f"{name} ({system_name(model.visual, model.frozen_visual)})" if unique \
            else str(path)
        scores, mix = evaluate_separator(model, dataset, device, name=label,
                                         with_mixture=baseline is None)
        baseline = baseline or mix
        systems.append(scores)
    assert baseline is not None
    everything = [baseline, *systems]
    return SeparationComparison(
        mixtures=len(dataset),
        split=split,
        rows=table_rows(everything),
        significance=significance(systems[0], systems[1]) if len(systems) == 2 else None,
        per_clip={s.name: s.per_clip for s in everything},
    )
