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


class UsageError(LipsyncError):
    """The command was asked for something it cannot do as given (a bad option value, an
    output that would collide): nothing was processed."""

    exit_code = 2


class MediaError(LipsyncError):
    """The media file cannot be read, lacks a stream we need, or cannot be written."""


class NoFaceError(LipsyncError):
    """No face (or too few frames with one) was found where a face is required."""


class NoSpeechError(LipsyncError):
    """The audio holds no voice (silence) where the offset needs one."""


class ClipTooShortError(LipsyncError):
    """The clip is shorter than one context window of the model."""


class UncertainEstimateError(LipsyncError):
    """The evidence does not settle the offset well enough to act on it."""


class CheckpointError(LipsyncError):
    """A checkpoint is unknown, cannot be downloaded, fails its checksum or does not fit."""


class RecordError(LipsyncError):
    """A JSON record read back (a ``--json`` line, a report row, a journal line) is not one
    lipsync-fix writes: a key is missing or holds a value of the wrong type."""


class BadCheckpointError(CheckpointError, UsageError):
    """The checkpoint named on the command line cannot be used as given (an unknown name, a
    missing file, a file that is no checkpoint, a model of the wrong family): a usage
    error, raised before any input is read. A download or checksum failure is not one."""


class OutputError(LipsyncError):
    """An output cannot be written where it was asked for (missing folder, a folder in the
    way, the input itself): nothing was done, a usage error."""

    exit_code = 2


class InputChangedError(LipsyncError):
    """An input's content changed while it was being processed: its result describes a
    file that is no longer there, so it is discarded rather than written."""


class StorageError(LipsyncError):
    """The machine refused a write that every later input would need too (a full disk, a
    quota, a read-only file system), or a batch's journal could not be written: the run
    stops cleanly instead of failing input after input. Exit 1: work may have run, and
    the same command continues where it stopped."""


class OutputExistsError(OutputError):
    """The output file exists and overwriting was not asked for (in a folder run the file is
    skipped instead)."""
