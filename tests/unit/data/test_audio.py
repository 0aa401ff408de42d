"""Tests for speciesclf.data.audio: decoding real files, downmixing, resampling, error reasons and windowing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from measure import peak_rss_mb
from speciesclf.data.audio import (
    SILENCE_DEVIATION,
    AudioError,
    fit_length,
    load_audio,
    load_mono,
    resample,
    resampled_length,
    stream_mono,
    stream_windows,
    truncation,
    window_starts,
    windows,
)

TARGET_SR = 16000


def _tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("sr", "fmt", "subtype", "channels"),
    [
        (8000, "WAV", "PCM_16", 1),
        (44100, "WAV", "PCM_16", 2),
        (48000, "FLAC", "PCM_16", 1),
        (16000, "FLAC", "PCM_24", 2),
        (44100, "WAV", "FLOAT", 1),
    ],
)
def test_load_mono_rate_length_and_pitch(tmp_path: Path, sr: int, fmt: str, subtype: str, channels: int) -> None:
    seconds = 1.0
    mono = _tone(sr, seconds)
    data = np.stack([mono, mono * 0.5], axis=1) if channels == 2 else mono
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt, subtype=subtype)

    wave = load_mono(path, TARGET_SR)
    assert wave.ndim == 1
    assert wave.dtype == np.float32
    expected = len(mono) * TARGET_SR / sr
    assert abs(len(wave) - expected) <= 1
    assert np.isfinite(wave).all()
    assert _peak_hz(wave, TARGET_SR) == pytest.approx(440.0, abs=2.0)
    # the level survives downmix and resampling (mean of the channels; sine RMS = amp / sqrt(2))
    amp = 0.5 * (0.75 if channels == 2 else 1.0)
    core = wave[len(wave) // 10 : -len(wave) // 10]
    assert np.sqrt(np.mean(core**2)) == pytest.approx(amp / np.sqrt(2), rel=0.03)


def test_load_audio_channels_first(tmp_path: Path) -> None:
    left, right = _tone(8000, 0.1, 300), _tone(8000, 0.1, 600)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    data, sr = load_audio(path)
    assert sr == 8000
    assert data.shape == (2, len(left))
    assert data.dtype == np.float32
    assert data.flags.c_contiguous
    np.testing.assert_array_equal(data[0], left)
    np.testing.assert_array_equal(data[1], right)
    np.testing.assert_allclose(load_mono(path, 8000), (left + right) / 2, atol=1e-7)


def test_load_mono_same_rate_is_exact(tmp_path: Path) -> None:
    x = _tone(TARGET_SR, 0.25)
    path = tmp_path / "same.wav"
    sf.write(path, x, TARGET_SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_mono(path, TARGET_SR), x)


def test_resample_noop_when_rates_match() -> None:
    x = np.arange(10, dtype=np.float32)
    assert resample(x, 16000, 16000) is x


def test_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.reason == "not_audio"
    assert exc.value.path == str(path)
    assert str(path) in str(exc.value)


def test_truncated_flac_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, _tone(16000, 2.0), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the header promises more than is there
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.reason == "unreadable"


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_stream_gives_what_decodes_before_the_damage_then_the_reason(tmp_path: Path, rate: int) -> None:
    whole = _tone(16000, 20.0)
    path = tmp_path / "cut.flac"
    sf.write(path, whole, 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    blocks = []
    with pytest.raises(AudioError) as exc:
        for block in stream_mono(path, rate, block_frames=1 << 17):  # the damage lies inside the first block
            blocks.append(block)
    assert exc.value.reason == "unreadable" and " after " in exc.value.detail
    seconds = float(exc.value.detail.rsplit(" after ", 1)[1].removesuffix(" s"))
    decoded = np.concatenate(blocks)
    assert 5.0 < seconds < 10.5 and abs(len(decoded) / rate - seconds) < 0.01  # about half of 20 s, all given
    if rate == 16000:  # what decoded is the recording's own start, sample for sample (16-bit steps)
        np.testing.assert_allclose(decoded, whole[: len(decoded)], atol=1 / 32767)


def test_a_wav_shorter_than_its_header_says_is_named_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(16000, 4.0), 16000, subtype="PCM_16")
    assert truncation(path) is None
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert truncation(path).startswith("truncated: the header declares more audio than the file holds (data :")
    assert 1.9 < len(load_mono(path, 16000)) / 16000 < 2.1  # libsndfile reads it up to where the data ends


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as exc:
        load_audio(tmp_path / "nope.wav")
    assert exc.value.reason == "missing"


def test_zero_bytes_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert (exc.value.reason, exc.value.detail) == ("empty", "0 bytes")


def test_header_without_samples_is_zero_length(tmp_path: Path) -> None:
    path = tmp_path / "no_samples.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as exc:
        load_mono(path, TARGET_SR)
    assert exc.value.reason == "zero_length"


def test_all_zero_samples_are_silent(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.reason == "silent"


# near-silent recordings (issue: their windows' MFCCs all sit at the floor): no sample departs from the mean
NEAR_SILENT = {
    "tiny_float.wav": (np.full(1600, 1e-30, np.float32) * np.sign(_tone(16000, 0.1)), {"subtype": "FLOAT"}),
    "tiny_double.wav": (_tone(16000, 0.1).astype(np.float64) * 2e-30, {"subtype": "DOUBLE"}),
    "dc.flac": (np.full(1600, 0.25, np.float32), {"format": "FLAC", "subtype": "PCM_16"}),
    "dc_stereo.wav": (np.full((1600, 2), [-0.5, 0.125], np.float32), {"subtype": "PCM_16"}),
    "one_sample.wav": (np.array([0.7], np.float32), {"subtype": "PCM_16"}),
    "just_below.wav": (0.3 + 0.9 * SILENCE_DEVIATION * np.sin(np.arange(1600.0)), {"subtype": "DOUBLE"}),
}


@pytest.mark.parametrize("name", sorted(NEAR_SILENT))
def test_near_silent_recordings_are_silent(tmp_path: Path, name: str) -> None:
    wave, kw = NEAR_SILENT[name]
    path = tmp_path / name
    sf.write(path, wave, 16000, **kw)
    assert sf.read(path)[0].shape[0] == wave.shape[0]  # the file really holds these samples
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.reason == "silent", exc.value
    assert exc.value.detail.startswith("largest departure from the mean "), exc.value.detail
    assert f"in {wave.shape[0]} sample(s)" in exc.value.detail


def test_silent_detail_gives_the_departure_in_dbfs(tmp_path: Path) -> None:
    path = tmp_path / "faint.wav"
    sf.write(path, np.resize(np.float32([1e-6, -1e-6]), 1600), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert str(exc.value) == (
        f"{path}: silent (largest departure from the mean 1e-06 (-120 dBFS) in 1600 sample(s); "
        "a recording needs more than 1e-05)"
    )


@pytest.mark.parametrize(
    ("name", "wave", "kw"),
    [
        ("tone_-60dBFS.wav", _tone(16000, 0.5, amp=1e-3), {"subtype": "PCM_16"}),
        ("tone_-60dBFS_on_dc.flac", 0.5 + _tone(16000, 0.5, amp=1e-3), {"format": "FLAC", "subtype": "PCM_24"}),
        ("one_lsb_16bit.wav", np.r_[np.zeros(799), 2.0**-15, np.zeros(800)], {"subtype": "PCM_16"}),
        ("just_above.wav", 0.3 + 1.5 * SILENCE_DEVIATION * np.sin(np.arange(1600.0)), {"subtype": "DOUBLE"}),
    ],
)
def test_quiet_real_signals_are_used(tmp_path: Path, name: str, wave: np.ndarray, kw: dict) -> None:
    path = tmp_path / name
    sf.write(path, wave, 16000, **kw)
    data, sr = load_audio(path)
    assert (data.shape, sr) == ((1, wave.shape[0]), 16000)


def test_broken_link_is_named_with_its_target(tmp_path: Path) -> None:
    link = tmp_path / "gone.wav"
    os.symlink(tmp_path / "deleted" / "x.wav", link)
    with pytest.raises(AudioError) as exc:
        load_audio(link)
    assert (exc.value.reason, exc.value.path) == ("broken_link", str(link))
    assert exc.value.detail == f"a symbolic link to {tmp_path / 'deleted' / 'x.wav'}, which does not exist"


@pytest.mark.parametrize("chain", [["loop.wav"], ["a.wav", "b.wav"]])
def test_looping_link_is_link_loop(tmp_path: Path, chain: list[str]) -> None:
    for name, target in zip(chain, chain[1:] + chain[:1], strict=True):
        os.symlink(target, tmp_path / name)  # loop.wav -> loop.wav; a.wav -> b.wav -> a.wav
    with pytest.raises(AudioError) as exc:
        load_audio(tmp_path / chain[0])
    assert (exc.value.reason, exc.value.detail) == ("link_loop", "a symbolic link that leads back to itself")


def test_link_to_a_recording_is_read_through(tmp_path: Path) -> None:
    sf.write(tmp_path / "real.wav", _tone(16000, 0.1), 16000, subtype="PCM_16")
    os.symlink("real.wav", tmp_path / "link.wav")
    np.testing.assert_array_equal(load_audio(tmp_path / "link.wav")[0], load_audio(tmp_path / "real.wav")[0])


def test_a_folder_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as exc:
        load_audio(tmp_path)
    assert (exc.value.reason, exc.value.detail) == ("not_audio", "not a regular file (a folder, pipe or device)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path: Path, bad: float) -> None:
    x = _tone(16000, 0.1)
    x[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as exc:
        load_audio(path)
    assert exc.value.reason == "non_finite"


def test_audio_error_is_value_error() -> None:
    err = AudioError("x.wav", "zero_length", "no samples decoded")
    assert isinstance(err, ValueError)
    assert str(err) == "x.wav: zero_length (no samples decoded)"


def test_audio_error_survives_pickling() -> None:
    """featurize's worker processes send errors to the parent by pickling them."""
    err = pickle.loads(pickle.dumps(AudioError("x.wav", "unreadable", "bad block")))
    assert (err.path, err.reason, err.detail, str(err)) == (
        "x.wav",
        "unreadable",
        "bad block",
        "x.wav: unreadable (bad block)",
    )


def test_fit_length_crops() -> None:
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 4), x[:4])
    np.testing.assert_array_equal(fit_length(x, 10), x)


def test_fit_length_wrap_pads() -> None:
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = fit_length(x, 8)
    np.testing.assert_array_equal(out, [1, 2, 3, 1, 2, 3, 1, 2])
    assert out.dtype == np.float32


def test_fit_length_batched_last_axis() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(fit_length(x, 5), [[1, 2, 1, 2, 1], [3, 4, 3, 4, 3]])


def _covered(starts: list[int], window: int, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for s in starts:
        mask[s : s + window] = True
    return mask


def test_window_starts_short_recording() -> None:
    assert window_starts(50, 100, 25) == [0]
    assert window_starts(100, 100, 25) == [0]


def test_window_starts_exact_multiple() -> None:
    assert window_starts(300, 100, 100) == [0, 100, 200]


def test_window_starts_tail_gets_end_aligned_window() -> None:
    assert window_starts(350, 100, 100) == [0, 100, 200, 250]


def test_window_starts_overlap() -> None:
    assert window_starts(200, 100, 50) == [0, 50, 100]


def test_window_starts_invalid() -> None:
    with pytest.raises(ValueError, match="hop"):
        window_starts(100, 10, 0)
    with pytest.raises(ValueError, match="window"):
        window_starts(100, 0, 10)


@pytest.mark.parametrize("n", [1, 99, 100, 101, 150, 199, 200, 201, 999, 1000, 1001])
@pytest.mark.parametrize(("window", "hop"), [(100, 100), (100, 37), (100, 99), (100, 1)])
def test_window_starts_cover_everything(n: int, window: int, hop: int) -> None:
    starts = window_starts(n, window, hop)
    assert starts == sorted(set(starts))
    assert all(s >= 0 and (s + window <= n or n <= window) for s in starts)
    assert _covered(starts, window, n).all()
    if n > window:
        assert starts[-1] == n - window  # the last window ends with the recording


def test_window_starts_hop_longer_than_window_skips_gaps() -> None:
    # hop > window subsamples the recording: gaps between windows, but the tail is still end-aligned
    starts = window_starts(1000, 100, 150)
    assert starts == [0, 150, 300, 450, 600, 750, 900]
    assert starts[-1] + 100 == 1000


def test_windows_values() -> None:
    x = np.arange(350, dtype=np.float32)
    w = windows(x, 100, 100)
    assert w.shape == (4, 100)
    np.testing.assert_array_equal(w[0], x[:100])
    np.testing.assert_array_equal(w[-1], x[250:])


def test_windows_short_recording_is_padded() -> None:
    x = np.arange(30, dtype=np.float32)
    w = windows(x, 100, 50)
    assert w.shape == (1, 100)
    np.testing.assert_array_equal(w[0], fit_length(x, 100))


def test_windows_overlap_shape() -> None:
    assert windows(np.zeros(200, dtype=np.float32), 100, 50).shape == (3, 100)


# -- streaming: block by block, window by window, the same samples as whole -------------------------------------------
@pytest.mark.parametrize(("n", "window", "hop"), [(1, 4, 4), (3, 4, 2), (4, 4, 4), (9, 4, 4), (10, 4, 3), (37, 5, 2)])
@pytest.mark.parametrize("block", [1, 3, 7, 100])
def test_stream_windows_cut_the_windows_of_window_starts(n: int, window: int, hop: int, block: int) -> None:
    wave = np.arange(1, n + 1, dtype=np.float32)
    blocks = [wave[i : i + block] for i in range(0, n, block)]
    got = list(stream_windows(blocks, window, hop))
    assert [s for s, _ in got] == window_starts(n, window, hop)
    expected = windows(wave, window, hop) if n > window else fit_length(wave, window)[None]
    np.testing.assert_array_equal(np.stack([c for _, c in got]), expected)


@pytest.mark.parametrize(("sr", "channels"), [(22257, 2), (44100, 1), (16000, 2)])
def test_stream_mono_gives_the_whole_decoding_across_block_edges(tmp_path: Path, sr: int, channels: int) -> None:
    """Decoded whole (libsndfile at once, then libsoxr at once) and streamed in blocks of 1,000 frames: one
    signal, so the resampler's state carries over every edge."""
    rng = np.random.default_rng(sr)
    wave = (0.3 * rng.standard_normal((round(sr * 7.3), channels))).astype(np.float32)
    path = tmp_path / "odd.flac"
    sf.write(path, wave, sr, format="FLAC", subtype="PCM_24")
    data, file_sr = load_audio(path)
    whole = resample(data.mean(axis=0), file_sr, TARGET_SR)
    streamed = np.concatenate(list(stream_mono(path, TARGET_SR, block_frames=1000)))
    assert len(streamed) == len(whole) == resampled_length(data.shape[1], sr, TARGET_SR)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_resampled_length_is_what_resample_makes() -> None:
    rng = np.random.default_rng(0)
    for n, sr in zip(rng.integers(2, 50_000, 40), rng.integers(4000, 96_000, 40), strict=True):
        for target in (16000, 48000, 32000):
            assert len(resample(np.zeros(n, np.float32), int(sr), target)) == resampled_length(int(n), int(sr), target)


def test_resampling_a_rate_coprime_with_the_target_stays_small(tmp_path: Path) -> None:
    """16,393 Hz to 48 kHz (gcd 1): torchaudio's polyphase kernel for it passed 24 GB; libsoxr's is small."""
    path = tmp_path / "drift.wav"
    sf.write(path, _tone(16393, 5.0), 16393)
    code = f"from speciesclf.data.audio import load_mono; assert len(load_mono({str(path)!r}, 48000)) == 240000"
    peak = peak_rss_mb(code)
    assert peak < 200, f"peak RSS {peak} MB"


def test_a_stream_raises_the_reason_when_it_is_known(tmp_path: Path) -> None:
    """A bad sample past the first block stops the stream there; silence is known at the end."""
    wave = _tone(TARGET_SR, 2.0)
    wave[25_000] = np.nan
    sf.write(tmp_path / "nan.wav", wave, TARGET_SR, subtype="FLOAT")
    stream = stream_mono(tmp_path / "nan.wav", TARGET_SR, block_frames=10_000)
    assert len(next(stream)) == 10_000
    with pytest.raises(AudioError) as exc:
        list(stream)
    assert exc.value.reason == "non_finite"
    sf.write(tmp_path / "dc.wav", np.full(40_000, 0.25, np.float32), TARGET_SR, subtype="FLOAT")
    with pytest.raises(AudioError) as exc:
        list(stream_mono(tmp_path / "dc.wav", TARGET_SR, block_frames=10_000))
    assert exc.value.reason == "silent"
