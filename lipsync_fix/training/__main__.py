"""``python -m lipsync_fix.training``: the trainer's own command line (for ``torchrun``)."""

from lipsync_fix.training.trainer import main

raise SystemExit(main())
