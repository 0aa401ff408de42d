"""The names params choose among, in one torch-free module: params.py validates them, the features and training
code build what they name, and neither keeps its own copy of the list. Beside them, what a pretrained front end
fixes (its audio, its embedding's size), and the range of each key a loss reads."""

from __future__ import annotations

from speciesclf.limits import Limit

__all__ = [
    "AUDIO_FORMATS",
    "BIRDNET_EMBEDDING_SIZE",
    "DEVICES",
    "FRONT_ENDS",
    "LOSSES",
    "LOSS_LIMITS",
    "PORTABLE",
    "PRECISIONS",
    "PRETRAINED_AUDIO",
    "THRESHOLD_RULES",
]

FRONT_ENDS = ("mfcc", "logmel", "pcen", "birdnet")  # features.front_end (birdnet: the optional extra)

# a pretrained front end takes the audio it was trained on and nothing else: its features keys fixed to these
PRETRAINED_AUDIO: dict[str, dict[str, float]] = {"birdnet": {"sample_rate": 48000, "clip_seconds": 3.0}}
BIRDNET_EMBEDDING_SIZE = 1024  # values in a BirdNET V2.4 embedding: the birdnet front end's bands

DEVICES = ("auto", "cpu", "cuda", "mps")  # train.device
PORTABLE = "portable"  # the precision that gives the same bytes on any x86-64 CPU (speciesclf.portable)
PRECISIONS = ("auto", "fp32", "bf16", PORTABLE)  # train.precision

THRESHOLD_RULES = ("fbeta", "precision")  # detect.threshold_rule (speciesclf.thresholds)
AUDIO_FORMATS = ("wav", "flac")  # synthetic.audio_format

# loss name -> the keys of its params section it reads besides label_smoothing (focal's alpha and beta exist only
# in the study's `loss` section; phase 3's focal loss runs without α)
LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": (),
    "focal": ("gamma",),
    "class_weighted": ("power",),
    "logit_adjusted": ("tau",),
    "balanced_softmax": (),
}
# each loss key's range, wherever a loss is given: params.yaml's `loss`, `phase1` and `phase3` sections and a
# recipe's candidates (the loss functions check only what their formula needs, e.g. tau >= 0)
LOSS_LIMITS: dict[str, Limit] = {
    "gamma": Limit(0, 100),
    "tau": Limit(0, 10),
    "power": Limit(0, 4),
    "beta": Limit(0, 1, upper_open=True),
    "label_smoothing": Limit(0, 1, upper_open=True),
}
