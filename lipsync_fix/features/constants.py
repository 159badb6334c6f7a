"""The numbers every stage shares: frame rate, sample rate, window length, crop size.

They are facts of the models' training data (LRS2 and Acappella preprocessed the way
Wav2Lip does), not settings: a video of any frame rate is analysed at 25 fps, audio of any
rate at 16 kHz, and every model reads windows of whole 25 fps frames.
"""

from __future__ import annotations

from lipsync_fix.faces.crop import WAV2LIP_SIZE

VIDEO_FPS = 25.0
"""Frames per second at which every video is analysed (the models' training rate)."""

SAMPLE_RATE = 16000
"""Audio samples per second at which every soundtrack is analysed."""

SAMPLES_PER_FRAME = int(SAMPLE_RATE / VIDEO_FPS)
"""640 audio samples per 25 fps video frame."""

FRAME_MS = 1000.0 / VIDEO_FPS
"""40 ms: one video frame, the unit of every offset."""

FRAMES_PER_WINDOW = 5
"""T: video frames of one model input window (0.2 s) for the paper's models."""

CROP_SIZE = WAV2LIP_SIZE
"""Side of the square face crop VocaLiST and SyncNet* read (96 px)."""
