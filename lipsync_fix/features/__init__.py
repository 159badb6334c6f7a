"""The third stage: what the models read. ``constants`` (frame rate, sample rate, window
length, crop size), ``mel`` (VocaLiST's log-mel spectrogram and its windows), ``visual``
(lower-half crops and their windows)."""
