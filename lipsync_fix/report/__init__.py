"""Reports for people: a batch's report (or the journal of a run in progress) read back
for review (:mod:`~lipsync_fix.report.rows`) and written as one self-contained HTML page
(:mod:`~lipsync_fix.report.html`, ``lipsync-fix report html``).

It sits above :mod:`lipsync_fix.batch`, whose functions read the reports and journals, and
draws with :mod:`lipsync_fix.sync.plot`, the code of ``score --plot``.
"""

from lipsync_fix.report.html import render_page, write_page
from lipsync_fix.report.rows import Review, ReviewRow, read_review, row_of

__all__ = ["Review", "ReviewRow", "read_review", "render_page", "row_of", "write_page"]
