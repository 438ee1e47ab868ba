"""Write slimkit's own quantized integers into an ONNX graph as ONNX Runtime's ``MatMulNBits`` contrib op.

``com.microsoft.MatMulNBits`` (ONNX Runtime's docs/ContribOperators.md) multiplies A (..., K) by a weight
stored as ``B`` uint8 (N, k_blocks, block_size · bits / 8): per output row, K split into blocks of
``block_size`` (a power of two >= 16; the last block zero-padded), codes packed along K, for 4 bits the
first code in a byte's low nibble. ``scales`` hold one float per (row, block) and ``zero_points`` (optional,
default 2^(bits-1)) one code per (row, block), bit-packed the same way; the weight is
``(code - zero_point) · scale``, attributes ``K``, ``N``, ``bits``, ``block_size``, ``accuracy_level``.

slimkit's grids map onto this exactly: the codes are slimkit's ``q - qmin`` (symmetric: zero point
2^(bits-1), the op's default, so no ``zero_points`` input), and a slimkit group of width g is covered by
blocks of the largest power of two >= 16 dividing g, each repeating its group's scale; a ragged last group
(hidden 576 at group 128) is the op's own zero-padded last block. Per-channel weights use blocks of 32. No
value is re-quantized: the test compares the op's dequantized weights with slimkit's.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimkit.export.int_weights import IntWeight
from slimkit.export.onnx.graph import node_module

NBITS_BITS = (4, 8)  # widths ONNX Runtime's CPU kernel runs


def block_size(weight: IntWeight, cols: int, where: str) -> int:
    """The MatMulNBits block covering ``weight``'s groups exactly (see the module docstring)."""
    if weight.group_width >= cols:
        return 32
    size = weight.group_width & -weight.group_width  # largest power of two dividing the group width
    if size < 16:
        raise ValueError(f"{where}: group size {weight.group_width} is not a multiple of 16, so MatMulNBits "
                         "blocks (powers of two >= 16) cannot hold its scales exactly")
    return min(size, 256)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (..., n) uint8, n even for 4 bits, packed low nibble first along the last axis."""
    if bits == 8:
        return codes.astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def nbits_tensors(weight: IntWeight, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``B`` (N, k_blocks, blob), ``scales`` (N·k_blocks,) and packed ``zero_points`` (or None if all default)."""
    codes = weight.codes.numpy()  # (N, K)
    rows, cols = codes.shape
    n_blocks = math.ceil(cols / block)
    padded = np.zeros((rows, n_blocks * block), np.uint8)
    padded[:, :cols] = codes
    b = _pack(padded.reshape(rows, n_blocks, block), weight.bits)  # (N, k_blocks, block·bits/8)
    group_of_block = np.minimum(np.arange(n_blocks) * block // weight.group_width, weight.scale.shape[1] - 1)
    scales = weight.scale.numpy()[:, group_of_block].astype(np.float32)  # (N, k_blocks)
    zeros = weight.zero.numpy()[:, group_of_block].round().astype(np.uint8)
    if np.all(zeros == 2 ** (weight.bits - 1)):
        return b, scales.reshape(-1), None
    if weight.bits == 4 and n_blocks % 2:
        zeros = np.concatenate([zeros, np.zeros((rows, 1), np.uint8)], axis=1)
    return b, scales.reshape(-1), _pack(zeros, weight.bits).reshape(-1)


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int, k: int
                     ) -> np.ndarray:
    """The (N, K) float32 weight a MatMulNBits node's tensors stand for (the op's own formula)."""
    rows, n_blocks, blob = b.shape
    if bits == 4:
        codes = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(rows, n_blocks, blob * 2)
    else:
        codes = b
    if zero_points is None:
        zeros = np.full((rows, n_blocks), 2 ** (bits - 1), np.float32)
    else:
        zp = zero_points.reshape(rows, -1)
        zeros = (np.stack([zp & 0x0F, zp >> 4], -1).reshape(rows, -1) if bits == 4 else zp)[:, :n_blocks]
    w = (codes.astype(np.float32) - zeros[..., None]) * scales.reshape(rows, n_blocks)[..., None]
    return w.reshape(rows, -1)[:, :k]


class _Graph:
    """Initializers and producers of an ONNX graph, for looking up constant weights."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}

    def weight_kn(self, node: onnx.NodeProto) -> np.ndarray | None:
        """The (K, N) constant a MatMul / Gemm multiplies by (through a Transpose or Gemm's transB)."""
        name = node.input[1]
        transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        if name not in self.inits and name in self.producer and self.producer[name].op_type == "Transpose":
            name, transposed = self.producer[name].input[0], not transposed
        if name not in self.inits:
            return None
        arr = numpy_helper.to_array(self.inits[name])
        return arr.T if transposed else arr


def _is_plain_product(node: onnx.NodeProto) -> bool:
    """A MatMul, or a Gemm computing A·B (+ C) without scaling or a transposed A."""
    if node.op_type == "MatMul":
        return True
    attrs = {a.name: a for a in node.attribute}
    return all(attrs[k].f == 1.0 for k in ("alpha", "beta") if k in attrs) and not ("transA" in attrs
                                                                                   and attrs["transA"].i)


def _nbits_node(node: onnx.NodeProto, path: str, weight: IntWeight, accuracy_level: int
                ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rows, cols = weight.codes.shape
    block = block_size(weight, cols, path)
    b, scales, zeros = nbits_tensors(weight, block)
    prefix = f"{path}.nbits"
    inits = [numpy_helper.from_array(b, f"{prefix}.B"), numpy_helper.from_array(scales, f"{prefix}.scales")]
    inputs = [node.input[0], f"{prefix}.B", f"{prefix}.scales"]
    if zeros is not None:
        inits.append(numpy_helper.from_array(zeros, f"{prefix}.zero_points"))
        inputs.append(f"{prefix}.zero_points")
    has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
    out = f"{prefix}.out" if has_bias else node.output[0]
    nodes = [helper.make_node("MatMulNBits", inputs, [out], name=f"{prefix}", domain="com.microsoft", K=cols,
                              N=rows, bits=weight.bits, block_size=block, accuracy_level=accuracy_level)]
    if has_bias:
        nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], name=f"{prefix}.bias"))
    return nodes, inits


def to_matmul_nbits(model: onnx.ModelProto, weights: dict[str, IntWeight], accuracy_level: int = 0) -> list[str]:
    """Replace the MatMul / Gemm of every Linear in ``weights`` (4- or 8-bit) by MatMulNBits, in place.

    Returns:
        The module paths that were rewritten.

    Raises:
        ValueError: a quantized Linear has no MatMul in the graph, or the graph's weight is not the one the
            integers stand for (a wrong match), or its groups do not fit MatMulNBits blocks.
    """
    graph = _Graph(model)
    wanted = {p: w for p, w in weights.items() if w.bits in NBITS_BITS}
    done: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        path = node_module(node) if node.op_type in ("MatMul", "Gemm") else None
        kn = graph.weight_kn(node) if path in wanted and _is_plain_product(node) else None
        if path is None or kn is None or path in done:
            new_nodes.append(node)
            continue
        weight = wanted[path]
        expected = weight.dequantized().numpy().T  # (K, N)
        step = float(weight.scale.abs().max())
        if kn.shape != expected.shape or float(np.abs(kn - expected).max()) > step + 1e-6:
            raise ValueError(f"{path}: the graph's weight {kn.shape} is not the one slimkit's integers stand for")
        nodes, inits = _nbits_node(node, path, weight, accuracy_level)
        new_nodes += nodes
        model.graph.initializer.extend(inits)
        done.append(path)
    missing = sorted(set(wanted) - set(done))
    if missing:
        raise ValueError(f"no MatMul found in the traced graph for quantized Linear(s) {', '.join(missing)}")
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    prune_unused(model)
    return done


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers no node reads (the replaced float weights)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | outputs
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
