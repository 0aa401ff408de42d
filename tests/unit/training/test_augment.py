"""On-the-fly augmentation (speciesclf.training.augment) and its use by the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from speciesclf.data.audio import windows
from speciesclf.features.config import FeatureConfig
from speciesclf.features.frontends import LogMelExtractor
from speciesclf.models.cnn import AudioCNN
from speciesclf.training.augment import AugmentConfig, Augmenter, Batch, DecibelScale, WindowChain
from speciesclf.training.config import TrainConfig
from speciesclf.training.trainer import Trainer


def _batch(n: int = 8, bands: int = 16, frames: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n * bands * frames, dtype=torch.float32).reshape(n, bands, frames) + 1.0  # no zeros
    return x, torch.arange(n) % 4


def test_with_every_knob_off_the_batch_is_untouched_and_no_random_number_is_drawn() -> None:
    x, y = _batch()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    batch = Augmenter(AugmentConfig())(x, y)
    assert batch.x is x and batch.y is y and batch.y_mix is None
    assert torch.equal(torch.get_rng_state(), before)


def test_masks_zero_whole_bands_and_frames_per_example_within_the_widths() -> None:
    x, y = _batch()
    torch.manual_seed(1)
    out = Augmenter(AugmentConfig(freq_mask=5, time_mask=10, masks=1))(x, y).x
    zero = out == 0
    bands = zero.all(dim=2).sum(dim=1)  # masked bands per example
    frames = zero.all(dim=1).sum(dim=1)
    assert (bands <= 5).all() and (frames <= 10).all()
    assert len({tuple(z.flatten().tolist()) for z in zero}) > 1  # each example its own masks
    kept = ~zero
    assert torch.equal(out[kept], x[kept])  # everything else untouched


def test_time_shift_rolls_each_example_by_at_most_the_limit() -> None:
    x, y = _batch(n=16)
    torch.manual_seed(2)
    out = Augmenter(AugmentConfig(time_shift=3))(x, y).x
    shifts = set()
    for original, rolled in zip(x, out, strict=True):
        match = [s for s in range(-3, 4) if torch.equal(torch.roll(original, s, dims=-1), rolled)]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 1


def test_mixup_mixes_pairs_and_the_loss_weights_both_labels() -> None:
    x, y = _batch()
    torch.manual_seed(3)
    batch = Augmenter(AugmentConfig(mixup_alpha=0.4))(x, y)
    assert batch.y_mix is not None and 0 < batch.lam < 1
    lam = batch.lam
    for i in range(len(x)):  # each example is lam * itself + (1 - lam) * one partner, whose label is y_mix[i]
        partners = [j for j in range(len(x)) if torch.allclose(batch.x[i], lam * x[i] + (1 - lam) * x[j])]
        assert len(partners) == 1 and batch.y_mix[i] == y[partners[0]]
    logits = torch.randn(len(y), 4)
    ce = nn.CrossEntropyLoss()
    expected = lam * ce(logits, y) + (1 - lam) * ce(logits, batch.y_mix)
    assert torch.allclose(batch.loss(ce, logits), expected)
    assert torch.equal(Batch(x, y).loss(ce, logits), ce(logits, y))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"freq_mask": -1}, "augment.freq_mask: invalid value -1; expected an integer >= 0 (bands)"),
        ({"masks": 0}, "augment.masks: invalid value 0; expected an integer >= 1"),
        ({"mixup_prob": 1.5}, "augment.mixup_prob: invalid value 1.5; expected a probability in [0, 1]"),
        ({"mixup_alpha": -0.2}, "augment.mixup_alpha: invalid value -0.2; expected a number >= 0 (0 turns mixup off)"),
        ({"gain_db": -3}, "augment.gain_db: invalid value -3; expected a number >= 0 (dB; 0 turns the gain off)"),
        ({"background_prob": 2}, "augment.background_prob: invalid value 2; expected a probability in [0, 1]"),
        (
            {"background_snr_db": [30, 10]},
            "augment.background_snr_db: invalid value (30, 10); expected [low, high] in dB with low <= high",
        ),
    ],
)
def test_bad_knobs_are_refused_by_name(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        AugmentConfig(**kwargs)
    assert str(exc.value) == message


def test_a_mask_wider_than_the_features_is_refused_before_training() -> None:
    x = np.zeros((8, 20, 48), np.float32)
    trainer = Trainer(
        AudioCNN(2), config=TrainConfig(epochs=1, device="cpu"), log=None, augment=AugmentConfig(freq_mask=20)
    )
    with pytest.raises(ValueError, match=r"augment\.freq_mask: 20 is not below the features' 20 bands"):
        trainer.fit(x, np.zeros(8, np.int64), x, np.zeros(8, np.int64))


def _log_mel(n: int = 6, bands: int = 8, frames: int = 40) -> tuple[torch.Tensor, DecibelScale]:
    """Standardised features of random decibels, and the scale that undoes the standardisation."""
    gen = torch.Generator().manual_seed(1)
    db = -60 + 50 * torch.rand(n, bands, frames, generator=gen)
    scale = DecibelScale(db.mean(dim=(0, 2)), db.std(dim=(0, 2)))
    return scale.from_db(db), scale


def test_gain_adds_the_same_decibels_to_every_bin_of_an_example_within_the_limit() -> None:
    x, scale = _log_mel()
    torch.manual_seed(0)
    out = Augmenter(AugmentConfig(gain_db=6.0), scale)(x, torch.zeros(len(x), dtype=torch.long)).x
    shift = scale.to_db(out) - scale.to_db(x)  # dB added, per bin
    per_example = shift.mean(dim=(1, 2))
    assert torch.allclose(shift, per_example[:, None, None].expand_as(shift), atol=1e-4)
    assert per_example.abs().max() <= 6.0 and per_example.std() > 1.0  # drawn per example, not one for all


def test_background_is_added_in_power_at_a_snr_in_the_range() -> None:
    x, scale = _log_mel()
    y = torch.arange(len(x))
    torch.manual_seed(0)
    batch = Augmenter(AugmentConfig(background_prob=1.0, background_snr_db=(6.0, 6.0)), scale)(x, y)
    assert torch.equal(batch.y, y) and batch.y_mix is None  # the label stays the example's own
    power = 10 ** (scale.to_db(x).double() / 10)
    after = scale.to_db(batch.x).double()
    for i in range(len(x)):
        # the mixture with each candidate partner j, its mean power put 6 dB below example i's
        candidates = [
            10 * torch.log10(power[i] + power[i].mean() / power[j].mean() * 10 ** (-6.0 / 10) * power[j])
            for j in range(len(x))
        ]
        errors = [float((after[i] - c).abs().max()) for c in candidates]
        assert min(errors) < 1e-3, (i, errors)  # one partner of the batch explains every bin
        assert sorted(errors)[1] > 0.1


def test_gain_and_background_need_log_mel_features() -> None:
    with pytest.raises(
        ValueError, match=r"^augment\.gain_db: works on log-mel features \(dB\); the features are mfcc$"
    ):
        AugmentConfig(gain_db=3.0).check_front_end("mfcc")
    AugmentConfig(gain_db=3.0).check_front_end("logmel")
    AugmentConfig(freq_mask=3).check_front_end("pcen")  # masks work on any features
    with pytest.raises(ValueError, match="decibel scale"):
        Augmenter(AugmentConfig(background_prob=0.5))


def test_a_window_continues_into_the_next_of_its_file_unless_that_is_the_file_s_last() -> None:
    files = ["a"] * 4 + ["b"] * 2 + ["c"]
    chain = WindowChain.from_windows(files, [0, 1, 2, 3, 0, 1, 0], hop_frames=5)
    # a's last window is aligned to the recording's end: it may start less than a hop after a's third
    assert chain.has_next.tolist() == [True, True, False, False, False, False, False]


def test_a_random_crop_is_the_window_a_few_frames_later_in_the_recording() -> None:
    """Against log-mels of the recording cut at the crop's own start, computed here independently."""
    config = FeatureConfig(front_end="logmel", sample_rate=16000, clip_seconds=0.5, train_hop_seconds=0.25)
    extract, hop, frames = LogMelExtractor(config), config.hop_length, config.frames  # 160 samples, 50 frames
    t = np.arange(32000) / 16000
    wave = (np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.1 * np.random.default_rng(0).standard_normal(t.size)) / 2
    cut = windows(wave.astype(np.float32), config.clip_samples, 4000)  # every 25 frames
    chain = WindowChain.from_windows(["r"] * len(cut), list(range(len(cut))), hop_frames=25)
    x = torch.from_numpy(extract(cut))
    torch.manual_seed(0)
    offsets = set()
    for _ in range(20):
        idx = torch.arange(len(cut))
        crops = chain.crop(x, idx)
        for i in idx[chain.has_next].tolist():
            # the crop of window i, against every window starting 0-24 frames after it: one matches
            starts = [4000 * i + hop * o for o in range(25)]
            truth = extract(np.stack([wave[s : s + config.clip_samples] for s in starts]).astype(np.float32))
            error = np.abs(truth - crops[i].numpy())[:, :, 2:-2].max(axis=(1, 2))  # edges: the STFT's padding
            offset = int(error.argmin())
            seam = frames - offset  # where the next window's frames begin: its padding, like an edge
            inner = np.r_[2 : max(2, seam - 2), seam + 2 : frames - 2]
            assert np.abs(truth[offset][:, inner] - crops[i, :, inner].numpy()).max() < 1e-3
            offsets.add(offset)
        assert torch.equal(crops[~chain.has_next], x[~chain.has_next])  # the last two stay as cut
    assert len(offsets) > 10  # fresh crops, not one fixed shift


def test_a_random_crop_needs_the_window_order_and_a_hop_within_the_window() -> None:
    x, y = np.zeros((8, 20, 48), np.float32), np.zeros(8, np.int64)
    trainer = Trainer(
        AudioCNN(2), config=TrainConfig(epochs=1, device="cpu"), log=None, augment=AugmentConfig(random_crop=True)
    )
    with pytest.raises(ValueError, match=r"^augment\.random_crop: needs the order of the training windows"):
        trainer.fit(x, y, x, y)
    wide = WindowChain.from_windows(["a"] * 8, list(range(8)), hop_frames=49)
    with pytest.raises(ValueError, match=r"^augment\.random_crop: a training hop of 49 frames; expected 1 to 48$"):
        trainer.fit(x, y, x, y, chain=wide)
    short = WindowChain.from_windows(["a"] * 7, list(range(7)), hop_frames=24)
    with pytest.raises(ValueError, match=r"^augment\.random_crop: the window order has 7 windows, not 8$"):
        trainer.fit(x, y, x, y, chain=short)


def _fit(augment: AugmentConfig | None) -> bytes:
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = (rng.standard_normal((64, 20, 48)) + y[:, None, None]).astype(np.float32)
    chain = WindowChain.from_windows([f"r{i // 8}" for i in range(64)], [i % 8 for i in range(64)], hop_frames=24)
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, batch_size=16, warmup_epochs=1, device="cpu", precision="fp32", seed=0)
    trainer = Trainer(AudioCNN(2), config=config, log=None, augment=augment)
    trainer.fit(x, y, x[:16], y[:16], chain=chain)
    return b"".join(t.numpy().tobytes() for t in trainer.model.state_dict().values())


def test_augmented_training_is_repeatable_and_differs_from_plain_training() -> None:
    augment = AugmentConfig(freq_mask=4, time_mask=8, time_shift=4, mixup_alpha=0.4)
    first = _fit(augment)
    assert _fit(augment) == first  # same seed, same bytes
    assert _fit(None) != first
    assert _fit(None) == _fit(AugmentConfig())  # every knob off is no augmentation at all


def test_training_on_random_crops_is_repeatable_and_differs_from_the_windows_as_cut() -> None:
    first = _fit(AugmentConfig(random_crop=True))
    assert _fit(AugmentConfig(random_crop=True)) == first
    assert _fit(None) != first
