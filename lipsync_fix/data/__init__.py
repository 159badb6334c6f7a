"""Data sets: the authors' clip layout (``layout``), videos made into clips
(``preprocess``) and synthetic talking heads with known offsets (``synth``)."""
