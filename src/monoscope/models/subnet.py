"""The sub-network between two layers, cut out of a model with ``torch.fx``.

PURE attributes an upper layer's channels to a lower layer's channels. Running only the
part of the model between the two layers lets the lower activations of a sample be
computed once and then pushed through the upper part for many neurons at a time.

The model is traced with the two layers kept as single (leaf) modules, so the graph has
one node for each. The sub-network keeps every node on a path from the lower node to
the upper one; if the upper layer also depends on something that does not come from the
lower layer (a skip connection from further below), there is no such sub-network and
we say so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import fx, nn


class _LeafTracer(fx.Tracer):
    """Traces into every module except the named ones (and torch's own leaves)."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.leaves or super().is_leaf_module(module, qualified_name)


def extract_subnetwork(net: nn.Module, lower: str | None, upper: str) -> fx.GraphModule:
    """A module mapping the output of layer ``lower`` to the output of layer ``upper``.

    ``lower=None`` means the model's input: the module then computes ``upper``'s output
    from an image batch and nothing after it. The returned module shares parameters
    (and modules) with ``net``.
    """
    if lower is None:
        return _extract_prefix(net, upper)
    for name in (lower, upper):
        net.get_submodule(name)  # raises with the name if it does not exist
    if lower.startswith(upper + ".") or upper.startswith(lower + "."):
        raise ValueError(f"{lower} and {upper} are nested; choose two layers one after the other")
    tracer = _LeafTracer({lower, upper})
    try:
        graph = tracer.trace(net)
    except Exception as error:  # fx raises many kinds on untraceable code
        raise ValueError(
            f"cannot trace {type(net).__name__} with torch.fx to cut out {lower} -> {upper}: {error}"
        ) from error
    nodes = {node.target: node for node in graph.nodes if node.op == "call_module"}
    if lower not in nodes or upper not in nodes:
        missing = [name for name in (lower, upper) if name not in nodes]
        raise ValueError(f"layers {missing} are not called in {type(net).__name__}'s forward")
    lower_node, upper_node = nodes[lower], nodes[upper]

    # Nodes that the upper node needs, and nodes that depend on the lower node.
    needed = _ancestors(upper_node)
    if lower_node not in needed:
        raise ValueError(f"{upper} does not depend on {lower}: no sub-network between them")
    downstream = _descendants(lower_node)
    downstream.discard(lower_node)
    keep = [node for node in graph.nodes if node in needed and node in downstream]
    for node in keep:
        for argument in node.all_input_nodes:
            outside = argument is not lower_node and argument not in downstream
            if outside and argument.op not in ("get_attr",):
                raise ValueError(
                    f"{upper} depends on '{argument.name}', which does not come from {lower}; "
                    "choose layers with no connection around the lower one"
                )

    sub = fx.Graph()
    mapping = {lower_node: sub.placeholder("lower")}
    for node in graph.nodes:
        if node.op == "get_attr" and any(node in user.all_input_nodes for user in keep):
            mapping[node] = sub.node_copy(node, lambda n: mapping[n])
    for node in keep:
        mapping[node] = sub.node_copy(node, lambda n: mapping[n])
    sub.output(mapping[upper_node])
    sub.lint()
    return fx.GraphModule(net, sub, class_name=f"{type(net).__name__}_{lower}_to_{upper}")


def _extract_prefix(net: nn.Module, upper: str) -> fx.GraphModule:
    net.get_submodule(upper)
    try:
        graph = _LeafTracer({upper}).trace(net)
    except Exception as error:
        raise ValueError(f"cannot trace {type(net).__name__} with torch.fx: {error}") from error
    upper_node = next(
        (node for node in graph.nodes if node.op == "call_module" and node.target == upper), None
    )
    if upper_node is None:
        raise ValueError(f"layer {upper} is not called in {type(net).__name__}'s forward")
    needed = _ancestors(upper_node)
    sub = fx.Graph()
    mapping = {}
    for node in graph.nodes:
        if node in needed:
            mapping[node] = sub.node_copy(node, lambda n: mapping[n])
    sub.output(mapping[upper_node])
    sub.lint()
    return fx.GraphModule(net, sub, class_name=f"{type(net).__name__}_input_to_{upper}")


def _ancestors(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.all_input_nodes)


def _descendants(node: fx.Node) -> set[fx.Node]:
    return _reachable(node, lambda n: n.users)


def _reachable(node: fx.Node, neighbours: Callable[[fx.Node], Iterable[fx.Node]]) -> set[fx.Node]:
    """``node`` and every node reached from it by repeatedly following ``neighbours``."""
    seen, stack = {node}, [node]
    while stack:
        for neighbour in neighbours(stack.pop()):
            if neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    return seen


@torch.no_grad()
def check_subnetwork(
    net: nn.Module, sub: nn.Module, lower: str, upper: str, images: torch.Tensor
) -> float:
    """Largest absolute difference between ``sub(lower output)`` and the upper output."""
    outputs = {}
    handles = [
        net.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out)
        )
        for name in (lower, upper)
    ]
    try:
        net(images)
    finally:
        for handle in handles:
            handle.remove()
    return float((sub(outputs[lower]) - outputs[upper]).abs().max())
