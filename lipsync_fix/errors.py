"""Errors a user can act on.

Every failure caused by the input (a corrupt file, a missing stream, no face, an unknown
checkpoint) is raised as a :class:`LipsyncError` subclass whose message is one complete
sentence. The CLI prints that sentence on one line and exits non-zero; a traceback is
kept for bugs in lipsync-fix itself.
"""

from __future__ import annotations


class LipsyncError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code = 1


class MediaError(LipsyncError):
    """The media file cannot be read, lacks a stream we need, or cannot be written."""


class NoFaceError(LipsyncError):
    """No face (or too few frames with one) was found where a face is required."""


class NoSpeechError(LipsyncError):
    """The audio holds no voice (silence) where the offset needs one."""


class ClipTooShortError(LipsyncError):
    """The clip is shorter than one context window of the model."""


class CheckpointError(LipsyncError):
    """A checkpoint is unknown, cannot be downloaded, fails its checksum or does not fit."""


class OutputExistsError(LipsyncError):
    """The output file exists and overwriting was not asked for."""

    exit_code = 2
