"""Read an ONNX graph that is one chain of standard layers into a ``layer-chain`` torch model.

This is the ONNX → PyTorch half of slimkit's Keras / TensorFlow import (:mod:`slimkit.models.keras_in`:
TensorFlow → ``tf2onnx`` → here). ``onnx2torch`` was the intended reader, but it imports ``torchvision``
unconditionally, and the only ``torchvision`` that pip finds for torch 2.13 here is a CUDA build that fails to
import against the CPU torch (``operator torchvision::nms does not exist``). So the graph is read here, into
plain torch modules (:mod:`slimkit.models.layer_chain`), and the result is *checked* by the real readers:
ONNX Runtime here, the original Keras / TensorFlow model by the caller.

The graph is first run in ONNX Runtime on a sample batch with every intermediate value exposed, so each
node is read with its true input and output shapes, and values computed from constants alone (weights,
reshape targets) are known. The *data path* is the chain of nodes that depend on the graph input: each must
read exactly one data value (a graph with branches, e.g. residual additions, is refused naming the node).
Supported nodes: Conv (asymmetric padding becomes a zero-pad layer), BatchNormalization, per-channel
Mul/Add (folded into the preceding Conv/Linear bias, or an affine batch norm), MatMul/Gemm with constant
weights (+ Add bias), Relu/Clip(0, 6)/Sigmoid/Tanh/Softmax/LeakyRelu/Elu/Gelu, Max/AveragePool,
GlobalAveragePool, Flatten/Reshape/Squeeze to (batch, features), Transpose to channels-last right before a
flatten (TensorFlow flattens NHWC: the permutation is folded into the next dense layer's columns, so the
torch model flattens NCHW as torch models do), Identity/Dropout (dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.models.layer_chain import ARCHITECTURE, Layer, layer_chain

_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu"}
_SKIPPED = ("Identity", "Dropout")
SUPPORTED = ("Conv, BatchNormalization, per-channel Mul/Add/Sub, MatMul/Gemm, Relu, Clip (ReLU6), Sigmoid, Tanh, "
             "Softmax, LeakyRelu, Elu, Gelu, MaxPool, AveragePool, GlobalAveragePool, Flatten/Reshape/Squeeze to "
             "(batch, features), Transpose to channels-last before a flatten, Identity, Dropout")


@dataclass
class ChainModel:
    """What the graph became: the layer list and input shape (the ``layer-chain`` arguments) and the weights."""

    layers: list[Layer]
    input_shape: list[int]
    state: dict[str, torch.Tensor]

    def build(self) -> nn.Module:
        model = layer_chain(self.layers, self.input_shape)
        model.load_state_dict(self.state, strict=True)
        return model.eval()

    @property
    def arch(self) -> dict[str, Any]:
        return {"name": ARCHITECTURE, "kwargs": {"layers": self.layers, "input_shape": self.input_shape}}


@dataclass
class _Reader:
    """Walks the data path, appending layer entries and their tensors."""

    values: dict[str, np.ndarray]  # every value of the sample run, constants included
    layers: list[Layer] = field(default_factory=list)
    tensors: list[dict[str, np.ndarray]] = field(default_factory=list)
    nhwc: tuple[int, int, int] | None = None  # (C, H, W) of a pending channels-last flatten

    def add(self, entry: Layer, **tensors: np.ndarray) -> None:
        self.layers.append(entry)
        self.tensors.append({k: np.asarray(v, np.float32) for k, v in tensors.items()})

    def last(self, *types: str) -> Layer | None:
        return self.layers[-1] if self.layers and self.layers[-1]["type"] in types else None


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node: Any) -> str:
    return f"ONNX node {node.name or '?'} ({node.op_type})"


def _run_everything(model: Any, sample: np.ndarray) -> dict[str, np.ndarray]:
    """Every value of ``model`` on ``sample``: its initializers plus each node output as ONNX Runtime computes it."""
    import onnx
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(onnx.shape_inference.infer_shapes(model))
    known = {o.name for o in exposed.graph.output}
    typed = {v.name: v for v in exposed.graph.value_info}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in known and name in typed:
                exposed.graph.output.append(typed[name])
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {model.graph.input[0].name: sample}), strict=True))
    values[model.graph.input[0].name] = sample
    for init in model.graph.initializer:
        values[init.name] = onnx.numpy_helper.to_array(init)
    return values


def _pads(node: Any, attrs: dict[str, Any]) -> list[int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ValueError(f"{_where(node)}: auto_pad {attrs['auto_pad']!r} is not read; expected explicit pads")
    return [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]  # [top, left, bottom, right]


def _conv(r: _Reader, node: Any, x: np.ndarray) -> None:
    a = _attrs(node)
    weight = r.values[node.input[1]]  # (out, in / groups, kh, kw)
    bias = r.values[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    top, left, bottom, right = _pads(node, a)
    padding = [top, left]
    if (top, left) != (bottom, right):
        r.add({"type": "pad2d", "padding": [left, right, top, bottom]})
        padding = [0, 0]
    groups = int(a.get("group", 1))
    entry = {"type": "conv2d", "in": int(x.shape[1]), "out": int(weight.shape[0]),
             "kernel": list(weight.shape[2:]), "stride": list(a.get("strides", [1, 1])), "padding": padding,
             "dilation": list(a.get("dilations", [1, 1])), "groups": groups, "bias": bias is not None}
    r.add(entry, weight=weight, **({"bias": bias} if bias is not None else {}))


def _pool(r: _Reader, node: Any) -> None:
    a = _attrs(node)
    top, left, bottom, right = _pads(node, a)
    if (top, left) != (bottom, right):
        raise ValueError(f"{_where(node)}: asymmetric pooling pads {[top, left, bottom, right]} are not supported")
    if node.op_type == "AveragePool" and a.get("count_include_pad", 0) and (top or left):
        raise ValueError(f"{_where(node)}: average pooling that counts padded zeros is not supported")
    kind = "maxpool2d" if node.op_type == "MaxPool" else "avgpool2d"
    kernel = list(a["kernel_shape"])
    r.add({"type": kind, "kernel": kernel, "stride": list(a.get("strides", kernel)), "padding": [top, left],
           "ceil_mode": bool(a.get("ceil_mode", 0))})


def _channel_vector(node: Any, const: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A constant broadcast over one value per channel (axis 1) of ``x``, as a (C,) vector."""
    channels = int(x.shape[1])
    const = np.asarray(const, np.float32)
    if const.size == 1:
        return np.full(channels, float(const.reshape(-1)[0]), np.float32)
    expected = (channels,) if x.ndim == 2 else (channels, 1, 1)
    while const.ndim > len(expected) and const.shape[0] == 1:
        const = const[0]
    if const.shape != expected:
        raise ValueError(f"{_where(node)}: constant of shape {const.shape} is not one value per channel of an "
                         f"input of shape {x.shape}")
    return const.reshape(-1).copy()


def _affine(r: _Reader, node: Any, x: np.ndarray, const: np.ndarray) -> None:
    """Mul/Add by a per-channel constant: into the previous bias or affine norm, else a new affine batch norm."""
    vector = _channel_vector(node, const, x)
    if node.op_type == "Sub":
        vector = -vector
    producer = r.last("conv2d", "linear")
    if node.op_type in ("Add", "Sub") and producer is not None:
        tensors = r.tensors[-1]
        tensors["bias"] = tensors.get("bias", np.zeros(int(producer["out"]), np.float32)) + vector
        producer["bias"] = True
        return
    norm = r.last("batchnorm2d", "batchnorm1d")
    if norm is None or norm.get("eps") != 0.0:
        kind = "batchnorm2d" if x.ndim == 4 else "batchnorm1d"
        channels = len(vector)
        r.add({"type": kind, "features": channels, "eps": 0.0}, weight=np.ones(channels), bias=np.zeros(channels),
              running_mean=np.zeros(channels), running_var=np.ones(channels))
    tensors = r.tensors[-1]
    if node.op_type == "Mul":
        tensors["weight"], tensors["bias"] = tensors["weight"] * vector, tensors["bias"] * vector
    else:
        tensors["bias"] = tensors["bias"] + vector


def _batch_norm(r: _Reader, node: Any, x: np.ndarray) -> None:
    scale, bias, mean, var = (r.values[n] for n in node.input[1:5])
    kind = "batchnorm2d" if x.ndim == 4 else "batchnorm1d"
    r.add({"type": kind, "features": int(x.shape[1]), "eps": float(_attrs(node).get("epsilon", 1e-5))},
          weight=scale, bias=bias, running_mean=mean, running_var=var)


def _linear(r: _Reader, node: Any, x: np.ndarray) -> None:
    a = _attrs(node)
    weight = r.values[node.input[1]]
    if node.op_type == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise ValueError(f"{_where(node)}: Gemm with transA/alpha/beta is not supported")
        weight = weight if a.get("transB", 0) else weight.T  # (out, in)
    else:
        weight = weight.T
    if weight.ndim != 2 or x.ndim != 2:
        raise ValueError(f"{_where(node)}: expected a (batch, features) input times a constant matrix")
    if r.nhwc is not None:  # columns were written for a channels-last flatten: reorder them for NCHW
        c, h, w = r.nhwc
        nchw_index = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        reordered = np.empty_like(weight)
        reordered[:, nchw_index] = weight
        weight, r.nhwc = reordered, None
    bias = r.values[node.input[2]] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
    entry = {"type": "linear", "in": int(weight.shape[1]), "out": int(weight.shape[0]), "bias": bias is not None}
    r.add(entry, weight=weight, **({"bias": np.broadcast_to(bias, (weight.shape[0],))} if bias is not None else {}))


def _reshape(r: _Reader, node: Any, x: np.ndarray, y: np.ndarray) -> None:
    if y.shape == x.shape and node.op_type != "Transpose":
        return
    if node.op_type == "Transpose":
        perm = list(_attrs(node).get("perm", []))
        if np.array_equal(np.ascontiguousarray(y).reshape(-1), np.ascontiguousarray(x).reshape(-1)):
            if y.shape != x.shape:
                raise ValueError(f"{_where(node)}: a transpose that only moves size-1 axes is not supported")
            return
        if perm == [0, 2, 3, 1] and x.ndim == 4:
            r.nhwc = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
            return
        raise ValueError(f"{_where(node)}: transpose {perm} is supported only to channels-last before a flatten")
    if y.ndim == 2 and y.shape[0] == x.shape[0] and y.shape[1] == int(np.prod(x.shape[1:])):
        r.add({"type": "flatten"})  # after a channels-last transpose too: the next dense layer is reordered
        return
    raise ValueError(f"{_where(node)}: reshape {x.shape} -> {y.shape} is not a flatten to (batch, features)")


def _activation(r: _Reader, node: Any, x: np.ndarray) -> None:
    a = _attrs(node)
    if node.op_type in _ACTIVATIONS:
        r.add({"type": _ACTIVATIONS[node.op_type]})
    elif node.op_type == "Softmax":
        axis = int(a.get("axis", -1))
        if axis not in (-1, x.ndim - 1):
            raise ValueError(f"{_where(node)}: softmax over axis {axis} of a rank-{x.ndim} value is not supported")
        r.add({"type": "softmax", "dim": -1})
    elif node.op_type in ("LeakyRelu", "Elu"):
        default = 0.01 if node.op_type == "LeakyRelu" else 1.0
        r.add({"type": "leaky_relu" if node.op_type == "LeakyRelu" else "elu", "alpha": float(a.get("alpha", default))})
    elif node.op_type == "Clip":
        low, high = (float(r.values[node.input[i]]) if len(node.input) > i and node.input[i] else None for i in (1, 2))
        if (low, high) not in ((0.0, 6.0), (0.0, None)):
            raise ValueError(f"{_where(node)}: Clip({low}, {high}) is not supported (only ReLU and ReLU6)")
        r.add({"type": "relu6" if high == 6.0 else "relu"})
    else:
        raise ValueError(f"{_where(node)}: not supported (slimkit reads {SUPPORTED})")


def _is_spatial_mean(x: np.ndarray, y: np.ndarray, channels_last: bool) -> bool:
    """A ReduceMean of (N, C, H, W) (or (N, H, W, C) after a channels-last transpose) over H and W, kept as
    1 × 1 or dropped: judged from the values themselves."""
    axes, channels = ((1, 2), 3) if channels_last else ((2, 3), 1)
    return x.ndim == 4 and y.size == x.shape[0] * x.shape[channels] and bool(
        np.allclose(y.reshape(x.shape[0], -1), x.mean(axis=axes), rtol=1e-4, atol=1e-5))


def _read_node(r: _Reader, node: Any, data: str, consts: list[np.ndarray]) -> None:
    op = node.op_type
    x, y = r.values[data], r.values[node.output[0]]
    if op in _SKIPPED:
        return
    if op == "Conv":
        _conv(r, node, x)
    elif op in ("MaxPool", "AveragePool"):
        _pool(r, node)
    elif op == "GlobalAveragePool" or op == "ReduceMean" and _is_spatial_mean(x, y, r.nhwc is not None):
        r.add({"type": "global_avgpool2d"})
        r.nhwc = None  # one value per channel: the channels-last order no longer matters
        if y.ndim == 2:  # keepdims=0: (batch, channels)
            r.add({"type": "flatten"})
    elif op == "BatchNormalization":
        _batch_norm(r, node, x)
    elif (op in ("Mul", "Add") or op == "Sub" and node.input[0] == data) and len(consts) == 1:
        _affine(r, node, x, consts[0])
    elif op in ("MatMul", "Gemm") and node.input[0] == data:
        _linear(r, node, x)
    elif op in ("Reshape", "Flatten", "Squeeze", "Transpose"):
        _reshape(r, node, x, y)
    else:
        _activation(r, node, x)


def read_chain(model: Any, sample: np.ndarray) -> ChainModel:
    """The ``layer-chain`` model equivalent to ONNX ``model`` (one input, one output), read on ``sample``.

    Args:
        model: an ``onnx.ModelProto``.
        sample: an input batch (at least 2 rows, so the batch axis is told apart from the features).

    Raises:
        ValueError: a node that is not supported, or a graph that is not one chain; the message names the node.
    """
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ValueError(f"the graph has {len(model.graph.input)} inputs and {len(model.graph.output)} outputs; "
                         "slimkit reads classifiers with one input and one output")
    values = _run_everything(model, sample)
    r = _Reader(values)
    if sample.ndim == 2:  # (batch, features): a leading flatten lets the model read images of that many pixels too
        r.add({"type": "flatten"})
    data = {model.graph.input[0].name}
    current = model.graph.input[0].name
    for node in model.graph.node:
        reads = [n for n in node.input if n in data]
        if not reads:
            continue  # computed from constants (or the input's shape) alone: its values are known
        if node.op_type == "Shape":
            continue
        if len(set(reads)) > 1 or reads[0] != current:
            raise ValueError(f"{_where(node)} joins two branches of the graph; slimkit converts models whose layers "
                             "form one chain (no residual or parallel paths)")
        consts = [values[n] for n in node.input[1:] if n and n not in data]
        _read_node(r, node, current, consts if node.op_type in ("Mul", "Add", "Sub") else [])
        current = node.output[0]
        data.add(current)
    if current != model.graph.output[0].name:
        raise ValueError(f"the graph's output {model.graph.output[0].name} is not the end of its chain ({current})")
    if r.nhwc is not None:
        raise ValueError("a channels-last transpose is not followed by a flatten and a dense layer")
    state = {f"{i}.{key}": torch.from_numpy(np.array(value, np.float32))
             for i, tensors in enumerate(r.tensors) for key, value in tensors.items()}
    return ChainModel(r.layers, [int(d) for d in sample.shape[1:]], state)
