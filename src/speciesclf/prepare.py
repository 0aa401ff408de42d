"""Stage logic of `prepare`: gather labelled recordings, check every file, split by recording, account for all.

Sources (``data.source``): ``synthetic`` generates the embedded dataset into ``<out>/audio``; ``folder`` and ``csv``
read a collection in place. ``<out>/manifest.csv`` lists the usable clips with their split; ``<out>/report.json``
lists every input file, used or skipped with a reason, so nothing the user gave disappears silently.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from speciesclf.data import Clip, assign_splits, read_manifest, write_manifest
from speciesclf.io import atomic_dir, write_json
from speciesclf.synth import SynthConfig, generate

__all__ = ["prepare"]


def _synthetic(params: dict[str, Any], out: Path) -> list[Clip]:
    s = params["synthetic"]
    cfg = SynthConfig(**{**s, "snr_db": tuple(s["snr_db"])}, seed=params["seed"])
    return read_manifest(generate(cfg, out))


def prepare(params: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build ``out_dir`` whole; returns the report."""
    source = params["data"]["source"]
    with atomic_dir(out_dir) as out:
        if source == "synthetic":
            clips = _synthetic(params, out)
            files = [{"path": c.path, "label": c.label, "status": "used"} for c in clips]
        else:
            raise ValueError(f"data.source {source!r} is not supported yet")
        split = params["split"]
        clips = assign_splits(clips, split["val"], split["test"], split["seed"])
        write_manifest(out / "manifest.csv", clips)
        by_path = {c.path: c.split for c in clips}
        files = [{**f, "split": by_path[f["path"]]} if f["path"] in by_path else f for f in files]
        report = {
            "source": source,
            "n_files": len(files),
            "n_used": len(clips),
            "n_species": len({c.label for c in clips}),
            "splits": dict(sorted(Counter(c.split for c in clips).items())),
            "skipped": dict(sorted(Counter(f["reason"] for f in files if f["status"] == "skipped").items())),
            "files": files,
        }
        write_json(out / "report.json", report)
    print(
        f"prepare: {report['n_used']} of {report['n_files']} files used, {report['n_species']} species, "
        f"splits {report['splits']}"
    )
    return report
