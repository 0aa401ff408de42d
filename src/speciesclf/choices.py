"""The names params choose among, in one torch-free module: params.py validates them, the features and training
code build what they name, and neither keeps its own copy of the list."""

from __future__ import annotations

__all__ = ["FRONT_ENDS", "LOSSES", "PRETRAINED_AUDIO"]

FRONT_ENDS = ("mfcc", "logmel", "pcen", "birdnet")  # features.front_end (birdnet: the optional extra)

# a pretrained front end takes the audio it was trained on and nothing else: its features keys fixed to these
PRETRAINED_AUDIO: dict[str, dict[str, float]] = {"birdnet": {"sample_rate": 48000, "clip_seconds": 3.0}}

# loss name -> the keys of its params section it reads besides label_smoothing (focal's alpha and beta exist only
# in the study's `loss` section; phase 3's focal loss runs without α)
LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": (),
    "focal": ("gamma",),
    "class_weighted": ("power",),
    "logit_adjusted": ("tau",),
    "balanced_softmax": (),
}
