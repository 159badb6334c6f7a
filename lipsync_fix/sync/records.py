"""The report rows of ``score`` and ``fix``: the estimate's fields (:class:`SyncEstimate`),
typed from its own annotations, so a field renamed or added there is one here too.

``HEADLINE`` is the only list written by hand: the columns a reader of a CSV report wants
first (the rest follow in the estimate's own order).
"""

from __future__ import annotations

from lipsync_fix.records import Field, fields_of, ordered, record_schema
from lipsync_fix.sync.estimate import SyncEstimate

HEADLINE = ("input", "output", "audio_delay_ms", "confidence", "verdict", "model",
            "face_coverage", "windows_used")
"""The first columns of a ``score``/``fix`` CSV report."""

_ESTIMATE = fields_of(SyncEstimate)

SCORE_RECORD = record_schema(
    "score", ordered([*_ESTIMATE, Field("plot", "str")],
                     [name for name in HEADLINE if name != "output"]),
    signature={"verdict"})
"""A ``score`` row: the estimate, and ``plot`` when one was drawn."""

FIX_RECORD = record_schema(
    "fix", ordered([*_ESTIMATE, Field("output", "str")], HEADLINE),
    signature={"verdict", "output"})
"""A ``fix`` row: the estimate and the fixed copy written (``output``)."""
