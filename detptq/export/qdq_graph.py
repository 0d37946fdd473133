"""ONNX graph passes over Q/DQ models: scale groups, de-duplication, Q/DQ above MaxPool.

The exporter first writes one ``[Clip] -> QuantizeLinear -> DequantizeLinear``
chain per quantized layer input (the fake-quant model's placement). TensorRT
merges a Concat's inputs and output into one buffer and lets DQ/Q cross a
MaxPool, so every tensor joined by a Concat or a MaxPool must be quantized
with one scale: :func:`activation_groups` finds those groups (the exporter
then gives each group one set of parameters). The passes here only move or
merge Q/DQ chains in ways that do not change any value:

- :func:`dedupe_qdq`: chains with equal parameters on the same tensor become one;
- :func:`quantize_group_sources`: a group's tensors are quantized where they
  enter it (Concat inputs become DQ outputs of one scale, MaxPools read DQ
  outputs), as Q/DQ is idempotent and commutes with Concat and MaxPool;
- :func:`hoist_qdq_above_maxpool`: ``MaxPool -> Q/DQ`` becomes ``Q/DQ -> MaxPool``
  (max commutes with the monotone quantizer), so no Q/DQ follows a MaxPool.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

#: ops whose inputs and output TensorRT keeps on one quantization scale
SCALE_JOINING_OPS = ('Concat', 'MaxPool')


class GraphIndex:
    """Producers, consumers and constant values of an ONNX graph (rebuild after edits)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.graph_outputs = {o.name for o in self.graph.output}

    def const(self, name: str) -> Optional[np.ndarray]:
        """Value of an initializer or Constant node output (through Identity nodes), else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == 'Identity':
            return self.const(node.input[0])
        if node is not None and node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    return numpy_helper.to_array(attr.t)
        return None

    def is_const(self, name: str) -> bool:
        """True for initializers and Constant outputs."""
        return self.const(name) is not None


@dataclass
class QDQChain:
    """One activation ``[Clip] -> Q -> DQ`` chain."""
    source: str                       # the float tensor being quantized
    clip: Optional[onnx.NodeProto]
    quant: onnx.NodeProto
    dequant: onnx.NodeProto

    @property
    def nodes(self) -> List[onnx.NodeProto]:
        """The chain's nodes in order."""
        return [n for n in (self.clip, self.quant, self.dequant) if n is not None]

    @property
    def scale_name(self) -> str:
        """Name of the scale initializer."""
        return self.quant.input[1]

    def signature(self, index: GraphIndex) -> Tuple:
        """Everything that decides the chain's output values."""
        scale = index.const(self.quant.input[1])
        zero = index.const(self.quant.input[2])
        clip = None if self.clip is None else tuple(
            float(index.const(n)) for n in self.clip.input[1:3])
        return (float(scale), int(zero), str(zero.dtype), clip)


def activation_chains(index: GraphIndex) -> List[QDQChain]:
    """Every per-tensor Q -> DQ chain on a non-constant tensor (activation quantization)."""
    chains = []
    for node in index.graph.node:
        if node.op_type != 'QuantizeLinear' or index.is_const(node.input[0]):
            continue
        scale = index.const(node.input[1])
        if scale is None or scale.size != 1:
            continue
        dequants = index.consumers.get(node.output[0], [])
        if len(dequants) != 1 or dequants[0].op_type != 'DequantizeLinear':
            continue
        clip = index.producer.get(node.input[0])
        if clip is not None and clip.op_type == 'Clip' and \
                len(index.consumers[clip.output[0]]) == 1:
            source = clip.input[0]
        else:
            clip, source = None, node.input[0]
        chains.append(QDQChain(source, clip, node, dequants[0]))
    return chains


def _union_find_groups(index: GraphIndex) -> Dict[str, str]:
    parent: Dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in index.graph.node:
        if node.op_type not in SCALE_JOINING_OPS:
            continue
        tensors = list(node.input) if node.op_type == 'Concat' else [node.input[0]]
        tensors.append(node.output[0])
        root = find(tensors[0])
        for t in tensors[1:]:
            parent[find(t)] = root
    return {t: find(t) for t in parent}


def activation_groups(model: onnx.ModelProto) -> List[List[QDQChain]]:
    """Chains that must share one scale: same tensor, or tensors joined by Concat/MaxPool."""
    index = GraphIndex(model)
    roots = _union_find_groups(index)
    groups: Dict[str, List[QDQChain]] = defaultdict(list)
    for chain in activation_chains(index):
        groups[roots.get(chain.source, chain.source)].append(chain)
    return list(groups.values())


def _rename_input(index: GraphIndex, old: str, new: str, skip=()) -> None:
    for node in list(index.consumers.get(old, [])):
        if any(node is s for s in skip):
            continue
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _remove_nodes(model: onnx.ModelProto, nodes: List[onnx.NodeProto]) -> None:
    ids = {id(n) for n in nodes}
    kept = [n for n in model.graph.node if id(n) not in ids]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def dedupe_qdq(model: onnx.ModelProto) -> int:
    """Merge chains with equal parameters on the same tensor; returns how many were removed."""
    index = GraphIndex(model)
    by_key: Dict[Tuple, QDQChain] = {}
    removed: List[onnx.NodeProto] = []
    count = 0
    for chain in activation_chains(index):
        key = (chain.source, ) + chain.signature(index)
        kept = by_key.setdefault(key, chain)
        if kept is chain or chain.dequant.output[0] in index.graph_outputs:
            continue
        _rename_input(index, chain.dequant.output[0], kept.dequant.output[0])
        removed += chain.nodes
        count += 1
    _remove_nodes(model, removed)
    return count


def hoist_qdq_above_maxpool(model: onnx.ModelProto) -> int:
    """Move a Q/DQ chain that is a MaxPool's only consumer in front of it; returns the moves."""
    moves = 0
    while True:
        index = GraphIndex(model)
        chains = {id(c.nodes[0]): c for c in activation_chains(index)}
        moved = False
        for node in index.graph.node:
            if node.op_type != 'MaxPool' or node.output[0] in index.graph_outputs:
                continue
            users = index.consumers.get(node.output[0], [])
            if len(users) != 1 or id(users[0]) not in chains:
                continue
            chain = chains[id(users[0])]
            x, pooled, dq_out = node.input[0], node.output[0], chain.dequant.output[0]
            # consumers of the DQ now read the MaxPool; the MaxPool reads the DQ
            _rename_input(index, dq_out, pooled)
            chain.nodes[0].input[0] = x
            node.input[0] = dq_out
            moves += 1
            moved = True
            break
        if not moved:
            return moves
        topological_sort(model)


def _copy_chain(model: onnx.ModelProto, template: QDQChain, source: str, tag: str) -> str:
    """Append a copy of ``template`` (same constants) reading ``source``; returns its DQ output."""
    current = source
    for node in template.nodes:
        out = f'{source}_{node.op_type}_{tag}'
        copy = onnx.helper.make_node(node.op_type, [current] + list(node.input[1:]), [out],
                                     name=f'{node.name}_{tag}')
        copy.attribute.extend(node.attribute)
        model.graph.node.append(copy)
        current = out
    return current


def quantize_group_sources(model: onnx.ModelProto) -> int:
    """Quantize each Concat/MaxPool group where its tensors enter it; returns groups rewritten.

    For a group whose chains all have equal parameters and whose tensors are read
    only by the group's Concat/MaxPool nodes and its Q/DQ chains (so no float
    consumer sees a change), every tensor entering the group (a conv or
    activation output) gets the group's Q/DQ and the Concat/MaxPool nodes read
    its DQ output: Concat inputs then share one scale and MaxPool outputs are on
    the grid already, so the chains after a MaxPool are dropped. Exact, because
    Q/DQ is idempotent and commutes with Concat and MaxPool.
    """
    index = GraphIndex(model)
    roots = _union_find_groups(index)
    tensors: Dict[str, set] = defaultdict(set)
    for tensor, root in roots.items():
        tensors[root].add(tensor)
    chains: Dict[str, List[QDQChain]] = defaultdict(list)
    for chain in activation_chains(index):
        if chain.source in roots:
            chains[roots[chain.source]].append(chain)
    rewritten, removed = 0, []
    for root, group in chains.items():
        if len({c.signature(index) for c in group}) != 1:
            continue
        members = tensors[root]
        internal = [n for n in index.graph.node
                    if n.op_type in SCALE_JOINING_OPS and n.output[0] in members]
        allowed = {id(n) for n in internal} | {id(c.nodes[0]) for c in group}
        if members & index.graph_outputs or any(
                id(user) not in allowed for t in members for user in index.consumers.get(t, [])):
            continue
        produced = {n.output[0] for n in internal}
        existing = {c.source: c.dequant.output[0] for c in group}
        for k, source in enumerate(sorted(members - produced)):
            quantized = existing.get(source) or _copy_chain(model, group[0], source, f'src{k}')
            for node in internal:
                for i, name in enumerate(node.input):
                    if name == source:
                        node.input[i] = quantized
        for chain in group:
            producer = index.producer.get(chain.source)
            if producer is not None and producer.op_type == 'MaxPool':
                _rename_input(index, chain.dequant.output[0], chain.source)
                removed += chain.nodes
        rewritten += 1
    _remove_nodes(model, removed)
    topological_sort(model)
    return rewritten


def topological_sort(model: onnx.ModelProto) -> None:
    """Reorder nodes so that every node comes after the producers of its inputs."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {''}
    pending = list(graph.node)
    ordered: List[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError('topological_sort: the graph has a cycle or a missing input: '
                             f'{rest[0].op_type} {rest[0].name} needs {list(rest[0].input)}')
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def inline_constant_identities(model: onnx.ModelProto) -> int:
    """Replace ``Identity(initializer)`` nodes by an initializer named as their output.

    The TorchScript exporter shares equal-valued initializers through Identity
    nodes; a copy per layer keeps every Q/DQ reading its own named constants.
    """
    index = GraphIndex(model)
    identities = [n for n in model.graph.node
                  if n.op_type == 'Identity' and index.is_const(n.input[0])
                  and n.output[0] not in index.graph_outputs]
    for node in identities:
        model.graph.initializer.append(
            numpy_helper.from_array(index.const(node.input[0]), node.output[0]))
    _remove_nodes(model, identities)
    return len(identities)


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop initializers and Constant nodes nothing reads."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == 'Constant' and n.output[0] not in used]
        if not dead:
            break
        _remove_nodes(model, dead)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
