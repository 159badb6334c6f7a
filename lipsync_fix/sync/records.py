"""The report rows of ``score`` and ``fix``: the fields of the estimate's JSON form
(:meth:`SyncEstimate.to_json`), in the order a reader of a CSV report wants them.

The estimate's JSON form is not its dataclass fields one for one (the offset model is
flattened into ``offset_model``, ``drift_ms_per_min``, ``spans``, ``breaks``), so the
fields are listed here, once; a test keeps this list and ``to_json`` equal, so a key
renamed there and not here fails at once.
"""

from __future__ import annotations

from lipsync_fix.records import Field, record_schema

ESTIMATE_FIELDS = (
    Field("audio_delay_ms", "float"),
    Field("worst_audio_delay_ms", "float"),
    Field("confidence", "float"),
    Field("verdict", "str"),
    Field("offset_model", "str"),
    Field("drift_ms_per_min", "float"),
    Field("model", "dict", nullable=True),
    Field("audio_delay_frames", "float"),
    Field("face_coverage", "float"),
    Field("windows_used", "int"),
    Field("fps", "float"),
    Field("duration_s", "float"),
    Field("faces_seen", "int"),
    Field("drift_uncertainty_ms_per_min", "float", nullable=True),
    Field("breaks", "list"),
    # spans decide the fix, so a CSV report carries them too (a JSON cell), and a row of
    # it can be applied as reviewed; the evidence lists are JSON lines only
    Field("spans", "list"),
    Field("scores", "list", in_csv=False),
    Field("offsets_over_time", "list", in_csv=False),
    Field("face_thumbnail", "str", nullable=True, in_csv=False),  # ~2 KB: JSON lines only
    Field("windows_scored", "int"),
    Field("windows_available", "int"),
    Field("pairs_scored", "int"),
    Field("pairs_available", "int"),
    Field("precision", "str"),
    Field("notes", "list"),
)
"""The estimate's JSON keys but ``input`` (every schema's first field)."""

SCORE_RECORD = record_schema("score", [*ESTIMATE_FIELDS, Field("plot", "str")],
                             signature={"verdict"})
"""A ``score`` row: the estimate, and ``plot`` when one was drawn."""

FIX_RECORD = record_schema("fix", [Field("output", "str"), *ESTIMATE_FIELDS],
                           signature={"verdict", "output"})
"""A ``fix`` row: the fixed copy written (``output``) and the estimate."""

ESTIMATE_RECORDS = {"score": SCORE_RECORD, "fix": FIX_RECORD}
"""The reports that hold estimates (what ``report html`` and ``fix --from-report`` read)."""
