"""Tests for speciesclf.files: whole-file writes via a temporary name, cleanup on failure, directory swaps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from speciesclf.files import atomic_dir, atomic_path, read_json, save_npy, write_json, write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_write_json_complete_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.json"  # missing parent folders are created
    obj = {"b": [1, 2.5, None], "a": {"z": "ü", "y": True}}
    write_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == obj
    assert read_json(path) == obj
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    first = path.read_bytes()
    write_json(path, dict(reversed(obj.items())))
    assert path.read_bytes() == first
    assert _leftovers(path.parent) == []


def test_write_json_rejects_nan_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"bad": math.nan})
    assert read_json(path) == {"ok": 1}
    assert _leftovers(tmp_path) == []


def test_write_text_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_text(path, "first, a longer text\n")
    write_text(path, "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_save_npy_round_trip(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    array = (4 * rng.standard_normal((5, 20, 7))).astype(dtype)
    path = tmp_path / "x.npy"
    save_npy(path, array)
    loaded = np.load(path, allow_pickle=False)
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)
    assert _leftovers(tmp_path) == []


def test_save_npy_non_contiguous(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2].T
    assert not array.flags.c_contiguous
    save_npy(tmp_path / "x.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), array)


def test_save_npy_object_array_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    save_npy(path, np.zeros(3))
    with pytest.raises(ValueError):
        save_npy(path, np.array([{"a": 1}], dtype=object))
    np.testing.assert_array_equal(np.load(path), np.zeros(3))
    assert _leftovers(tmp_path) == []


def test_atomic_path_success(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path  # same folder, so the rename stays on one file system
        assert tmp != path
        tmp.write_bytes(b"abc")
        assert not path.exists()  # nothing visible under the final name until the block succeeds
    assert path.read_bytes() == b"abc"
    assert _leftovers(tmp_path) == []


def test_atomic_path_error_leaves_target_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_text("half-writ", encoding="utf-8")
        raise RuntimeError("boom")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_error_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("partial", encoding="utf-8")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_error_after_tmp_removed(tmp_path: Path) -> None:
    path = tmp_path / "new.txt"
    with pytest.raises(OSError, match="gone"), atomic_path(path) as tmp:
        tmp.unlink()
        raise OSError("gone")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_builds_and_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "features"
    target.mkdir()
    (target / "stale.npy").write_bytes(b"old")
    (target / "keep.json").write_text("old", encoding="utf-8")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        (tmp / "keep.json").write_text("new", encoding="utf-8")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "x.txt").write_text("x", encoding="utf-8")
        assert (target / "stale.npy").exists()  # the old directory is intact while the new one is built
    assert sorted(p.name for p in target.iterdir()) == ["keep.json", "nested"]
    assert (target / "keep.json").read_text(encoding="utf-8") == "new"
    assert (target / "nested" / "x.txt").read_text(encoding="utf-8") == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]


def test_atomic_dir_new(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("1", encoding="utf-8")
    assert (target / "f").read_text(encoding="utf-8") == "1"
    assert _leftovers(target.parent) == []


def test_atomic_dir_error_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
        raise RuntimeError("fail mid-build")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
