"""`speciesclf study DIR --data PATH`: a study folder for a collection, ready for `dvc repro DIR/dvc.yaml`.

A study is one collection's own pipeline (``studies/template/``): ``params.yaml`` holds what the collection changes
and names the project's params.yaml as its ``defaults``; ``recipe.yaml`` the candidates select cross-validates;
``dvc.yaml`` runs prepare and select in the study's folder, so the study's ``dvc.lock`` records its model and report.
This writes one from the template, for a folder of recordings (a sub-folder per species) or a CSV.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from pathlib import Path

import yaml

from speciesclf.data.sources import walk
from speciesclf.files import write_text

__all__ = ["StudyError", "main", "new_study"]

TEMPLATE = Path("studies") / "template"


class StudyError(ValueError):
    """A study that cannot be written; ``str()`` is the one line to show."""


def new_study(folder: Path, data: Path, csv: str | None = None, recipe: Path | None = None) -> Path:
    """Write ``folder`` (inside the project) from the template; returns its dvc.yaml. ``data`` and ``recipe`` are
    paths as the user gave them (relative to the working directory); the study keeps ``data`` relative to itself
    unless it was given absolute."""
    project = _project_of(folder)
    template = project / TEMPLATE
    if folder.exists() and any(folder.iterdir()):
        raise StudyError(f"{folder}: exists and is not empty; a study is written into a new folder")
    found = (data / csv).is_file() if csv else data.is_dir()
    if not found:
        expected = f"a folder with the CSV {csv!r}" if csv else "a folder of recordings, one sub-folder per species"
        raise StudyError(f"{data}: not found; expected {expected}")
    if (odd := _first_special_file(data)) is not None:
        raise StudyError(
            f"{odd[0]}: {odd[1]}, not a regular file; DVC would wait on it for ever while hashing the collection: "
            f"move it out of {data}"
        )
    recipe = recipe or template / "recipe.yaml"
    if not recipe.is_file():
        raise StudyError(f"{recipe}: recipe not found")
    up = Path(os.path.relpath(project, folder.resolve())).as_posix()
    where = data if data.is_absolute() else Path(os.path.relpath(data.resolve(), folder.resolve()))
    source = (
        {"source": "csv", "path": where.as_posix(), "csv": csv}
        if csv
        else {"source": "folder", "path": where.as_posix()}
    )
    params = {"defaults": [f"{up}/params.yaml"], "data": source}
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = (template / "dvc.yaml").read_text(encoding="utf-8").replace("../../", f"{up}/")
    write_text(folder / "dvc.yaml", pipeline)
    write_text(folder / "params.yaml", _PARAMS_HEADER + yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(recipe, folder / "recipe.yaml")
    write_text(folder / ".gitignore", "/data\n/models\n")
    return folder / "dvc.yaml"


_KINDS = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def _first_special_file(data: Path) -> tuple[Path, str] | None:
    """The first entry of the collection (walked as prepare walks it: links followed, a loop once) that is a pipe,
    socket or device: DVC hashes a dependency folder before any stage runs, and reading a named pipe blocks."""
    try:
        files, _ = walk(data)
    except ValueError as exc:  # a name that is not UTF-8
        raise StudyError(str(exc)) from None
    for rel, real in sorted(files):
        try:
            kind = _KINDS.get(stat.S_IFMT(os.stat(real).st_mode)) if real else None
        except OSError:  # gone since the walk: prepare reports what it cannot read
            continue
        if kind is not None:
            return data / rel, kind
    return None


_PARAMS_HEADER = """\
# What this collection changes in the project's params.yaml (read first, as `defaults`): add any key to replace it,
# e.g. features: {sample_rate: 32000, clip_seconds: 3.0} or data: {min_recordings: 5} (docs/configuration.md).
"""


def _project_of(folder: Path) -> Path:
    """The project checkout ``folder`` lies in: the nearest folder above it with the study template."""
    start = folder.resolve()
    for candidate in (start, *start.parents):
        if (candidate / TEMPLATE / "dvc.yaml").is_file():
            return candidate
    raise StudyError(f"{folder}: not inside a speciesclf checkout (no {TEMPLATE}/dvc.yaml above it)")


def main(argv: list[str] | None = None, prog: str = "python -m speciesclf.study") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the study folder to write, e.g. studies/frogs")
    parser.add_argument("--data", type=Path, required=True, help="the recordings: a folder, or the CSV's folder")
    parser.add_argument("--csv", help="a CSV inside --data (path,label[,split,recording_id]) instead of sub-folders")
    parser.add_argument("--recipe", type=Path, help="the recipe to start from (default: the template's)")
    args = parser.parse_args(argv)
    try:
        pipeline = new_study(args.folder, args.data, args.csv, args.recipe)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study written: {args.folder}; run it with `dvc repro {pipeline}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
