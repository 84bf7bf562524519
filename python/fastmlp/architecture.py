"""The architecture as data: a network is an ordered list of layer specs.

Each spec is a plain dict (JSON-able), one of::

    {"type": "dense", "inputs": I, "outputs": O, "init": "he_normal"}
    {"type": "layer_norm", "width": W, "eps": 1e-05}
    {"type": "batch_norm", "width": W, "eps": 1e-05, "momentum": 0.1}
    {"type": "activation", "name": "relu"}
    {"type": "dropout", "p": 0.1}
    {"type": "residual", "block": [spec, ...]}     # out = in + block(in)

:attr:`fastmlp.Network.architecture` gives this list and
:meth:`fastmlp.Network.from_architecture` builds a network from it; the
save/load and export work reads the same list. Residual blocks do not nest, and a
block's input and output widths must agree. A block is the layers from one dense
layer to the next: its activation is the first activation layer in it ("linear"
when it has none), which chooses the "auto" initialisation of its dense layer.

``Network(layer_sizes, activation, residual=..., norm=..., dropout=...)`` is
shorthand for the list :func:`expand` makes: each hidden block is dense → norm →
activation → dropout, and with ``residual=True`` a hidden block whose input and
output widths agree computes ``out = in + block(in)``. That is the identity
shortcut of He et al., "Deep Residual Learning for Image Recognition" (CVPR
2016, §3.2), with the normalisation after the affine map as there; a block whose
widths differ gets no shortcut rather than the paper's projection shortcut, so
that the shorthand adds no parameters to the plain network's (§3.3 finds the
projection's gain "marginal"). The output layer is a plain dense layer and its
activation. With both ``residual`` and ``norm``, a last norm layer comes before
it, as the final normalisation of pre-activation ResNets (He et al., "Identity
Mappings in Deep Residual Networks", ECCV 2016) and pre-norm transformers: each
block adds its activation's output to the stream, and a relu block's output is
non-negative, so the stream's mean grows with every block (that paper's §4.1
(c), "ReLU before addition": the signal is "monotonically increasing"). Twenty
such blocks hand the output layer features near 8 instead of near 0, and its
gradient at initialisation is then hundreds of times its weights
(``Network.diagnose`` says "exploding"); the final norm gives it unit-scale
features again.

The engine's own list is flat: a residual block's layers, then a layer
``{"type": "residual", "skip_from": k}`` that adds the input of layer k
(:func:`flatten`, :func:`nest`).
"""

from __future__ import annotations

import math

from . import _core
from ._validation import check_choice, check_int, check_real

__all__ = ["LAYER_TYPES", "NORMS", "expand", "normalize", "flatten", "nest", "dense_blocks"]

LAYER_TYPES = _core.LAYER_TYPES  # the engine's name table (network.hpp: layer_kind_names)
NORMS = ("layer", "batch")
DEFAULT_EPS = 1e-5  # torch.nn.LayerNorm and BatchNorm1d
DEFAULT_MOMENTUM = 0.1  # torch.nn.BatchNorm1d
MAX_WIDTH = 2**62
_KEYS = {
    "dense": ("inputs", "outputs", "init"),
    "layer_norm": ("width", "eps"),
    "batch_norm": ("width", "eps", "momentum"),
    "activation": ("name",),
    "dropout": ("p",),
    "residual": ("block",),
}


def _norm_spec(norm: str, width: int) -> dict:
    if norm == "layer":
        return {"type": "layer_norm", "width": width, "eps": DEFAULT_EPS}
    return {"type": "batch_norm", "width": width, "eps": DEFAULT_EPS, "momentum": DEFAULT_MOMENTUM}


def expand(sizes, hidden_activations, output_activation, schemes, *, residual=False, norm=None,
           dropout=0.0) -> list[dict]:
    """The layer list of ``Network(sizes, ...)``'s shorthand (arguments checked by the caller)."""
    layers: list[dict] = []
    n_layers = len(sizes) - 1
    for i in range(n_layers):
        inputs, outputs = sizes[i], sizes[i + 1]
        block: list[dict] = [{"type": "dense", "inputs": inputs, "outputs": outputs, "init": schemes[i]}]
        activation = hidden_activations[i] if i + 1 < n_layers else output_activation
        if i + 1 < n_layers and norm is not None:
            block.append(_norm_spec(norm, outputs))
        if activation != "linear":
            block.append({"type": "activation", "name": activation})
        if i + 1 < n_layers and dropout > 0:
            block.append({"type": "dropout", "p": dropout})
        if i + 1 < n_layers and residual and inputs == outputs:
            layers.append({"type": "residual", "block": block})
        else:
            if i + 1 == n_layers and norm is not None and any(layer["type"] == "residual" for layer in layers):
                layers.append(_norm_spec(norm, inputs))  # the final norm: see the module's docstring
            layers.extend(block)
    return layers


def normalize(spec, resolve_init, *, _where: str = "architecture", _nested: bool = False) -> list[dict]:
    """A user's layer list checked and completed (widths chained and filled in,
    defaults written out, "auto" initialisations resolved with ``resolve_init(init,
    activation)``); ValueError or TypeError names the first bad entry."""
    if isinstance(spec, (str, bytes, dict)) or not hasattr(spec, "__iter__"):
        raise TypeError(f"{_where}: expected a list of layer dicts such as "
                        f"[{{'type': 'dense', 'inputs': 2, 'outputs': 8}}, ...], got {spec!r:.200}")
    layers = list(spec)
    if not layers:
        raise ValueError(f"{_where}: the layer list is empty")
    out: list[dict] = []
    for i, layer in enumerate(layers):
        where = f"{_where}[{i}]"
        if not isinstance(layer, dict):
            raise TypeError(f"{where}: expected a dict with a 'type', got {layer!r:.200}")
        kind = check_choice(layer.get("type"), f"{where} type", LAYER_TYPES)
        unknown = set(layer) - {"type", *_KEYS[kind]}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} for a {kind} layer "
                             f"(it takes {', '.join(_KEYS[kind])})")
        entry: dict = {"type": kind}
        if kind == "dense":
            for key in ("inputs", "outputs"):
                if key not in layer:
                    raise ValueError(f"{where}: a dense layer needs '{key}'")
                entry[key] = check_int(layer[key], f"{where} {key}", minimum=1, maximum=MAX_WIDTH)
            entry["init"] = check_choice(layer.get("init", "auto"), f"{where} init", _inits())
        elif kind in ("layer_norm", "batch_norm"):
            if "width" in layer:
                entry["width"] = check_int(layer["width"], f"{where} width", minimum=1, maximum=MAX_WIDTH)
            entry["eps"] = check_real(layer.get("eps", DEFAULT_EPS), f"{where} eps", 0.0, math.inf, low_open=True, high_open=True)
            if kind == "batch_norm":
                entry["momentum"] = check_real(layer.get("momentum", DEFAULT_MOMENTUM), f"{where} momentum", 0.0, 1.0,
                                               low_open=True)
        elif kind == "activation":
            entry["name"] = check_choice(layer.get("name"), f"{where} name", _core.ACTIVATIONS)
        elif kind == "dropout":
            entry["p"] = check_real(layer.get("p", 0.5), f"{where} p", 0.0, 1.0, high_open=True)
        else:
            if _nested:
                raise ValueError(f"{where}: residual blocks do not nest")
            if "block" not in layer:
                raise ValueError(f"{where}: a residual layer needs 'block', the list of its layers")
            entry["block"] = normalize(layer["block"], resolve_init, _where=f"{where} block", _nested=True)
        out.append(entry)
    if not _nested:
        _chain_widths(out, _where)
        if not any(_walk_dense(out)):
            raise ValueError(f"{_where}: the layer list has no dense layer")
        _resolve_inits(out, resolve_init)
    return out


def _inits():
    from .network import INITS

    return INITS


def _chain_widths(layers: list[dict], where: str, width: int | None = None) -> int | None:
    """Fills in and checks every width along the list; returns the output width."""
    for i, layer in enumerate(layers):
        kind = layer["type"]
        if kind == "dense":
            if width is not None and layer["inputs"] != width:
                raise ValueError(f"{where}[{i}]: the dense layer takes {layer['inputs']} inputs "
                                 f"but the layer before gives {width}")
            width = layer["outputs"]
        elif kind in ("layer_norm", "batch_norm"):
            if width is None:
                if "width" not in layer:
                    raise ValueError(f"{where}[{i}]: a first {kind} layer needs its 'width'")
                width = layer["width"]
            elif layer.setdefault("width", width) != width:
                raise ValueError(f"{where}[{i}]: the {kind} layer has width {layer['width']} "
                                 f"but the layer before gives {width}")
        elif kind == "residual":
            if width is None:
                width = _input_width(layer["block"], f"{where}[{i}] block")
            block_out = _chain_widths(layer["block"], f"{where}[{i}] block", width)
            if block_out != width:
                raise ValueError(f"{where}[{i}]: the residual block maps width {width} to {block_out}; "
                                 "out = in + block(in) needs the same width")
        elif width is None:
            raise ValueError(f"{where}[{i}]: a first {kind} layer has no width; start with a dense layer")
    return width


def _input_width(layers: list[dict], where: str) -> int:
    """The input width of a list that comes first: its first dense or norm layer's
    (looking into a residual block that comes first)."""
    for i, layer in enumerate(layers):
        if layer["type"] == "residual":
            return _input_width(layer["block"], f"{where}[{i}] block")
        if layer["type"] == "dense":
            return layer["inputs"]
        if layer["type"] in ("layer_norm", "batch_norm"):
            if "width" not in layer:
                raise ValueError(f"{where}[{i}]: a first {layer['type']} layer needs its 'width'")
            return layer["width"]
    raise ValueError(f"{where}: a first block needs a dense or norm layer to give its width")


def _walk_dense(layers):
    for layer in layers:
        if layer["type"] == "dense":
            yield layer
        elif layer["type"] == "residual":
            yield from _walk_dense(layer["block"])


def _resolve_inits(layers: list[dict], resolve_init) -> None:
    flat = _flat_entries(layers)
    for i, layer in enumerate(flat):
        if layer["type"] == "dense":
            layer["init"] = resolve_init(layer["init"], _block_activation(flat, i))


def _flat_entries(layers: list[dict]) -> list[dict]:
    flat: list[dict] = []
    for layer in layers:
        flat.extend(layer["block"] if layer["type"] == "residual" else [layer])
    return flat


def _block_activation(flat: list[dict], dense_index: int) -> str:
    """The activation of the block that starts at flat[dense_index]: the first
    activation layer before the next dense layer, else "linear"."""
    for layer in flat[dense_index + 1:]:
        if layer["type"] == "dense":
            break
        if layer["type"] == "activation":
            return layer["name"]
    return "linear"


def flatten(layers: list[dict]) -> list[dict]:
    """The engine's flat list of a normalized architecture (keys as the engine reads them)."""
    flat: list[dict] = []

    def add(layer: dict, width: int) -> int:
        kind = layer["type"]
        if kind == "dense":
            flat.append({"type": "dense", "inputs": layer["inputs"], "outputs": layer["outputs"],
                         "init": layer["init"]})
            return layer["outputs"]
        entry = {"type": kind, "inputs": width, "outputs": width}
        if kind in ("layer_norm", "batch_norm"):
            entry["eps"] = layer["eps"]
            if kind == "batch_norm":
                entry["momentum"] = layer["momentum"]
        elif kind == "activation":
            entry["activation"] = layer["name"]
        elif kind == "dropout":
            entry["p"] = layer["p"]
        flat.append(entry)
        return width

    width = _input_width(layers, "architecture")
    for layer in layers:
        if layer["type"] == "residual":
            start = len(flat)
            for inner in layer["block"]:
                width = add(inner, width)
            flat.append({"type": "residual", "inputs": width, "outputs": width, "skip_from": start})
        else:
            width = add(layer, width)
    return flat


def sizes(flat: list[dict]) -> tuple[int, int]:
    """(parameters, state values) of a flat layer list: a dense layer's W and b, a
    norm layer's gain and bias; batch norm's running mean and variance."""
    n_params = sum(layer["inputs"] * layer["outputs"] + layer["outputs"] for layer in flat
                   if layer["type"] == "dense")
    n_params += sum(2 * layer["inputs"] for layer in flat if layer["type"] in ("layer_norm", "batch_norm"))
    n_state = sum(2 * layer["inputs"] for layer in flat if layer["type"] == "batch_norm")
    return n_params, n_state


def nest(engine_layers: list[dict]) -> list[dict]:
    """The architecture (nested, JSON-able) of the engine's flat list of layers."""
    def spec(layer: dict) -> dict:
        kind = layer["type"]
        if kind == "dense":
            return {"type": "dense", "inputs": layer["inputs"], "outputs": layer["outputs"], "init": layer["init"]}
        if kind == "layer_norm":
            return {"type": kind, "width": layer["inputs"], "eps": layer["eps"]}
        if kind == "batch_norm":
            return {"type": kind, "width": layer["inputs"], "eps": layer["eps"], "momentum": layer["momentum"]}
        if kind == "activation":
            return {"type": kind, "name": layer["activation"]}
        return {"type": kind, "p": layer["p"]}  # dropout

    out: list[dict] = []
    for r, layer in enumerate(engine_layers):
        if layer["type"] == "residual":
            # blocks do not nest, so layers skip_from .. r - 1 are the last r - skip_from entries
            size = r - layer["skip_from"]
            block = out[len(out) - size:]
            del out[len(out) - size:]
            out.append({"type": "residual", "block": block})
        else:
            out.append(spec(layer))
    return out


def dense_blocks(engine_layers: list[dict]) -> list[tuple[int, str, int]]:
    """Per dense layer of the engine's flat list: (its index, its block's activation,
    the index of that activation layer, or the dense layer's own when linear)."""
    blocks = []
    for i, layer in enumerate(engine_layers):
        if layer["type"] != "dense":
            continue
        name, where = "linear", i
        for j in range(i + 1, len(engine_layers)):
            kind = engine_layers[j]["type"]
            if kind == "dense":
                break
            if kind == "activation":
                name, where = engine_layers[j]["activation"], j
                break
        blocks.append((i, name, where))
    return blocks
