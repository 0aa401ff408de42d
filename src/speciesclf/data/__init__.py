"""Recordings in: decoding and windows (``audio``), collections and file checks (``sources``), the embedded
synthetic dataset (``synth``), manifests and splits (``manifest``), and the ``prepare`` stage's work."""
