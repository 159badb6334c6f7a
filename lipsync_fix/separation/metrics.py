"""Separation quality as VocaLiST's Table 3 reports it: SDR and SIR, and whether two
systems differ significantly.

SDR and SIR follow the BSS Eval definitions (Vincent et al. 2006, with the 512-tap
distortion filter of BSS Eval v4 / museval), computed by ``fast_bss_eval`` rather than by
hand. A clip is scored as a two-source problem: the references are the target voice and
everything else in the mixture (accompaniment and any second voice), the estimates the
separated voice and its complement. The target's row is the clip's score, so SIR
measures how much of the other sources leaks into the estimate.

``fast_bss_eval``'s numpy backend breaks with numpy 2 (``np.linalg.solve`` changed its
broadcasting), so signals are handed to it as float64 torch tensors, whose backend
computes the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

FILTER_LENGTH = 512  # BSS Eval v4's distortion filter, in samples
SIGNIFICANCE = 0.05  # the paper calls p > 0.05 "no significant difference"


def sdr_sir(
    estimate: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    mixture: np.ndarray | torch.Tensor,
) -> tuple[float, float]:
    """SDR and SIR in dB of one estimate of ``target`` separated from ``mixture``.

    All three are mono signals of the same length; the interference reference is
    ``mixture - target``.
    """
    import fast_bss_eval

    est, ref, mix = (torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in
                     (_numpy(estimate), _numpy(target), _numpy(mixture)))
    if not (est.shape == ref.shape == mix.shape) or est.ndim != 1:
        raise ValueError("estimate, target and mixture must be mono signals of one length")
    refs = torch.stack([ref, mix - ref])
    ests = torch.stack([est, mix - est])
    sdr, sir, _ = fast_bss_eval.bss_eval_sources(
        refs, ests, filter_length=FILTER_LENGTH, compute_permutation=False, load_diag=1e-10)
    return float(sdr[0]), float(sir[0])


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass
class SystemScores:
    """One system's per-clip scores (each a dict with ``sdr`` and ``sir``)."""

    name: str
    per_clip: list[dict] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        """Mean SDR and SIR over the clips whose metrics are finite."""
        result = {}
        for key in ("sdr", "sir"):
            values = [c[key] for c in self.per_clip if math.isfinite(c[key])]
            result[key] = float(np.mean(values)) if values else float("nan")
        return result

    def values(self, key: str) -> np.ndarray:
        return np.array([c[key] for c in self.per_clip], dtype=np.float64)


def table_rows(systems: Sequence[SystemScores]) -> list[dict]:
    """The paper's Table 3 layout: one row per system with its mean SDR and SIR."""
    rows = []
    for system in systems:
        mean = system.mean()
        rows.append({"system": system.name, "sdr": round(mean["sdr"], 2),
                     "sir": round(mean["sir"], 2), "clips": len(system.per_clip)})
    return rows


def significance(a: SystemScores, b: SystemScores) -> dict[str, object]:
    """Wilcoxon signed-rank test between two systems' per-clip SDR and SIR.

    The test is paired (both systems scored on the same mixtures, in the same order) and
    makes no normality assumption, which per-clip SDRs rarely satisfy. ``significant`` is
    False when p > 0.05, the paper's "no significant difference".
    """
    from scipy.stats import wilcoxon

    if len(a.per_clip) != len(b.per_clip):
        raise ValueError("the two systems must be scored on the same clips")
    result: dict[str, object] = {"systems": [a.name, b.name], "test": "wilcoxon signed-rank"}
    for key in ("sdr", "sir"):
        x, y = a.values(key), b.values(key)
        keep = np.isfinite(x) & np.isfinite(y)
        diff = x[keep] - y[keep]
        if len(diff) < 2 or not np.any(diff):
            p = 1.0  # identical scores (or too few clips): nothing tells them apart
        else:
            p = float(wilcoxon(x[keep], y[keep]).pvalue)
        result[f"p_{key}"] = p
        result[f"significant_{key}"] = bool(p <= SIGNIFICANCE)
    return result


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Plain-text Table 3: system, SDR, SIR."""
    width = max([len("system"), *(len(str(r["system"])) for r in rows)])
    lines = [f"{'system':<{width}}  {'SDR':>7}  {'SIR':>7}"]
    lines += [f"{r['system']!s:<{width}}  {r['sdr']:>7.2f}  {r['sir']:>7.2f}" for r in rows]
    return "\n".join(lines)


PAPER_TABLE3 = {"ynet-mr-v-pt": {"sdr": 6.32, "sir": 17.08}}
"""The figures VocaLiST's Table 3 gives for Y-Net-mr-V (PT), for comparison."""
