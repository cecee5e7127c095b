"""A small helper for writing ONNX graphs as named steps with ``onnx.helper``.

Every node gets a readable, unique name (``step/OpType_n``) and every intermediate a matching
tensor name, so a graph viewer (Netron) shows the steps the builder functions are named after.
Constants become initializers of the outermost graph; subgraphs (``Loop``, ``If`` bodies) see them
by name, as ONNX's outer-scope rule allows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOUBLE, FLOAT, INT64, INT32, UINT8, BOOL = (TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64,
                                           TensorProto.INT32, TensorProto.UINT8, TensorProto.BOOL)


class GraphBuilder:
    """Nodes and constants of one graph; ``child()`` makes a subgraph builder sharing names and constants."""

    def __init__(self, parent: GraphBuilder | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._root = parent._root if parent is not None else self
        if parent is None:
            self.initializers: list[onnx.TensorProto] = []
            self._counter = 0
            self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._step = parent._step if parent is not None else "graph"

    def child(self) -> GraphBuilder:
        return GraphBuilder(self)

    def _fresh(self, base: str) -> str:
        self._root._counter += 1
        return f"{self._step}/{base}_{self._root._counter}"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Name the nodes made inside the block after ``name`` (steps nest: ``crop/resize``)."""
        saved = self._step
        self._step = name if saved == "graph" else f"{saved}/{name}"
        try:
            yield
        finally:
            self._step = saved

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", **attrs: Any) -> Any:
        """Add one node; returns its output name (or a list of names when ``outputs`` > 1)."""
        name = self._fresh(op_type)
        outs = [name] if outputs == 1 else [f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any) -> str:
        """A constant tensor (an initializer of the outermost graph, shared when equal)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        root = self._root
        if key not in root._consts:
            root._counter += 1
            name = f"const/{arr.dtype.name}_{root._counter}"
            root.initializers.append(numpy_helper.from_array(arr, name))
            root._consts[key] = name
        return root._consts[key]

    def graph(self, name: str, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto],
              with_initializers: bool = True) -> onnx.GraphProto:
        inits = self.initializers if with_initializers and self is self._root else []
        return helper.make_graph(self.nodes, name, list(inputs), list(outputs), initializer=inits)

    # Shorthands for the ops the steps use most.
    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def scalar(self, value: Any, dtype: Any) -> str:
        return self.const(np.asarray(value, dtype=dtype), dtype)

    def dim(self, x: str, axis: int) -> str:
        """Size of ``x`` along ``axis`` as an int64 scalar."""
        return self.op("Squeeze", self.op("Shape", x, start=axis, end=axis + 1), self.const([0], np.int64))

    def vec(self, *scalars: str) -> str:
        """int64 scalars -> a 1-D int64 tensor (for Reshape, Expand, Slice)."""
        return self.op("Concat", *[self.op("Unsqueeze", s, self.const([0], np.int64)) for s in scalars], axis=0)


def tensor(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    """A typed graph input or output; ``shape=None``: rank and sizes left open (subgraph outputs)."""
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def inline_model(builder: GraphBuilder, model: onnx.ModelProto, prefix: str, feeds: dict[str, str]) -> dict[str, str]:
    """Copy ``model``'s graph into ``builder`` with every name prefixed, its inputs wired to the tensors
    named in ``feeds`` (model input -> builder tensor); returns model output -> builder tensor."""
    from onnx import compose

    model = compose.add_prefix(model, prefix)
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    for inp in graph.input:
        if inp.name in weights:  # old IR versions list initializers as inputs too
            continue
        original = inp.name[len(prefix):]
        if original not in feeds:
            raise ValueError(f"no tensor given for model input {original!r}")
        builder.nodes.append(helper.make_node("Identity", [feeds[original]], [inp.name], name=f"{prefix}feed_{original}"))
    builder.nodes.extend(graph.node)
    root = builder._root
    root.initializers.extend(graph.initializer)
    return {out.name[len(prefix):]: out.name for out in graph.output}
