"""lipsync-fix: find and fix audio/video desynchronisation with VocaLiST.

The public API, as a script would use it::

    import lipsync_fix

    model = lipsync_fix.load_model("vocalist-lrs2")        # a registry name or a path
    estimate = lipsync_fix.estimate_sync("talk.mp4", model)
    print(estimate.describe())
    lipsync_fix.fix_video("talk.mp4", "fixed.mp4", estimate)

``lipsync_fix.available_models()`` lists the names ``load_model`` knows. The command line
(``lipsync-fix`` or ``python -m lipsync_fix``) is a thin layer over these functions.

The package follows the data: ``media`` (decode, remux) -> ``faces`` (detect, track,
crop) -> ``features`` (mel, windows) -> ``models`` -> ``sync`` (scores, offsets, the
estimate, the fix); beside them ``data``, ``training``, ``evaluation`` and ``separation``
reproduce the paper, ``batch`` runs folders, ``cli`` is the command line.
"""

from lipsync_fix import separation  # noqa: F401  (registers the separators' checkpoint reader)
from lipsync_fix.models import available_models, load_model
from lipsync_fix.sync import SyncEstimate, SyncOptions, estimate_sync, fix_video

__version__ = "0.2.0"

__all__ = [
    "SyncEstimate",
    "SyncOptions",
    "__version__",
    "available_models",
    "estimate_sync",
    "fix_video",
    "load_model",
]
