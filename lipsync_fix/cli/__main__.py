"""``python -m lipsync_fix.cli``: the same as the ``lipsync-fix`` command."""

from lipsync_fix.cli import main

main()
