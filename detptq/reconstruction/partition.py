"""Split a quantized model into reconstruction units (docs/METHOD.md section 6).

``partition_units(model, mode='block') -> list[(name, module)]``

A unit is the piece BRECQ/QDrop reconstructs at once; it must never split a
residual add or a concat, because its input/output are cached at the unit's
boundary. The walk starts at the root and decides per child module:

1. no quant layer inside -> ignored;
2. a quant layer itself (``QuantConv2d``/``QuantLinear``: anything with a
   ``weight_quantizer`` and an ``input_quantizer``) -> a unit;
3. a known block type (``UNIT_TYPES``: RepVGG, CSP/BepC3/ELAN/SPPF, neck
   fusion blocks, conv-bn-act wrappers) -> one unit;
4. a container whose forward only chains or routes its children
   (``TRANSPARENT_TYPES``: ``nn.Sequential``/``ModuleList``/``ModuleDict``,
   ``RepBlock``; the root; the root's ``backbone``/``neck``/``bbox_head``)
   -> recurse. Inside such a container, paired ModuleLists named in
   ``HEAD_BRANCHES`` (``cls_convs`` + ``cls_preds`` ...) are chained per level
   into one head-branch unit (a ``ChainUnit``);
5. anything else (opaque forward) -> one unit, so unknown residual blocks are
   never split.

``mode='layer'`` makes every quant layer its own unit (layer-wise AdaRound).
Units come in module-registration order; ``block_reconstruction`` re-orders
them by execution order with one forward pass.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from torch import nn

#: block classes reconstructed as one unit (class names, any package)
UNIT_TYPES = {
    # re-parameterised convs (one conv after fusion) and conv wrappers
    'RepVGGBlock', 'QARepVGGBlock', 'QARepVGGBlockV2', 'RepConv', 'ConvBNAct', 'ConvBNReLU',
    'ConvBNSiLU', 'ConvBNHS', 'SimConv', 'Conv', 'ConvModule', 'ConvWrapper',
    'ImplicitPredConv',
    # residual / concat blocks
    'BottleRep', 'BottleRep3', 'BepC3', 'CSPBlock', 'CSPStackRep', 'MBLABlock',
    'ELANBlock', 'ELAN', 'ELANW', 'MPConvBlock', 'MPConv',
    'SPPF', 'SimSPPF', 'CSPSPPF', 'SimCSPSPPF', 'SPPCSPC', 'SPPCSPCBlock',
    # neck fusion blocks
    'BiFusion', 'Transpose',
}
#: containers whose forward is a plain chain/routing of children: recurse
TRANSPARENT_TYPES = {'Sequential', 'ModuleList', 'ModuleDict', 'RepBlock'}
#: children of the root that are always walked into (detector parts)
TRANSPARENT_ROOT_CHILDREN = {'backbone', 'neck', 'bbox_head', 'head'}
#: (first, second) ModuleLists chained level by level into one head branch
HEAD_BRANCHES = (('cls_convs', 'cls_preds'), ('reg_convs', 'reg_preds'))


def is_quant_layer(module: nn.Module) -> bool:
    """True for QuantConv2d/QuantLinear-like modules (weight and input quantizers)."""
    return hasattr(module, 'weight_quantizer') and hasattr(module, 'input_quantizer')


def quant_layers(module: nn.Module, prefix: str = '') -> List[Tuple[str, nn.Module]]:
    """All quant layers below ``module`` (itself included) in registration order."""
    found = []
    for name, m in module.named_modules(prefix=prefix):
        if is_quant_layer(m):
            found.append((name, m))
    return found


class ChainUnit(nn.Module):
    """Several model modules run one after another (a head branch) as one unit."""

    def __init__(self, members: Sequence[Tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.member_names = [n for n, _ in members]
        self.chain = nn.ModuleList([m for _, m in members])

    def forward(self, x):
        for m in self.chain:
            x = m(x)
        return x


def unit_members(name: str, module: nn.Module) -> List[str]:
    """Model module names a unit consists of: the first takes the input, the last gives the output."""
    return list(getattr(module, 'member_names', [name]))


def unit_layer_names(name: str, module: nn.Module) -> List[str]:
    """Model names of the quant layers inside a unit (chain units included)."""
    chain = getattr(module, 'chain', None)
    parts = (list(zip(module.member_names, chain)) if chain is not None
             and hasattr(module, 'member_names') else [(name, module)])
    return [n for prefix, m in parts for n, _ in quant_layers(m, prefix)]


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


class _Partitioner:
    def __init__(self, unit_types: Iterable[str], transparent_types: Iterable[str]) -> None:
        self.unit_types = set(UNIT_TYPES) | set(unit_types)
        self.transparent_types = set(TRANSPARENT_TYPES) | set(transparent_types)
        self.units: List[Tuple[str, nn.Module]] = []

    def walk(self, module: nn.Module, prefix: str, transparent: bool) -> None:
        if not quant_layers(module):
            return
        if is_quant_layer(module):
            self.units.append((prefix, module))
            return
        kind = type(module).__name__
        if not transparent and kind in self.unit_types:
            self.units.append((prefix, module))
            return
        if not transparent and kind not in self.transparent_types:
            self.units.append((prefix, module))  # opaque forward: keep whole
            return
        children = dict(module.named_children())
        pairs = self._head_branch_pairs(children)
        for name, child in children.items():
            if name in pairs:
                self._add_head_branches(children, prefix, name, pairs[name])
            elif name not in pairs.values():
                self.walk(child, _join(prefix, name), transparent=False)

    @staticmethod
    def _head_branch_pairs(children: dict) -> dict:
        """{first: second} for HEAD_BRANCHES pairs present as equal-length ModuleLists."""
        pairs = {}
        for first, second in HEAD_BRANCHES:
            a, b = children.get(first), children.get(second)
            if isinstance(a, nn.ModuleList) and isinstance(b, nn.ModuleList) and len(a) == len(b):
                pairs[first] = second
        return pairs

    def _add_head_branches(self, children: dict, prefix: str, first: str, second: str) -> None:
        """One ChainUnit per level: children[first][i] then children[second][i]."""
        for i, (ma, mb) in enumerate(zip(children[first], children[second])):
            if not (quant_layers(ma) or quant_layers(mb)):
                continue
            names = (_join(prefix, f'{first}.{i}'), _join(prefix, f'{second}.{i}'))
            self.units.append((f'{names[0]}+{names[1]}', ChainUnit(list(zip(names, (ma, mb))))))


def partition_units(model: nn.Module, mode: str = 'block',
                    unit_types: Iterable[str] = (),
                    transparent_types: Iterable[str] = ()
                    ) -> List[Tuple[str, nn.Module]]:
    """Reconstruction units of ``model``: 'block' (BRECQ/QDrop) or 'layer' (each quant layer)."""
    if mode == 'layer':
        units = quant_layers(model)
    elif mode == 'block':
        part = _Partitioner(unit_types, transparent_types)
        if is_quant_layer(model):
            part.units.append(('', model))
        else:
            for name, child in model.named_children():
                part.walk(child, name, transparent=name in TRANSPARENT_ROOT_CHILDREN)
        units = part.units
    else:
        raise ValueError(f"mode must be 'block' or 'layer', got {mode!r}")
    check_partition(model, units)
    return units


def check_partition(model: nn.Module, units: Sequence[Tuple[str, nn.Module]]) -> None:
    """Raise if a quant layer is in no unit or in more than one."""
    owner: dict = {}
    for name, unit in units:
        for _, layer in quant_layers(unit):
            if id(layer) in owner:
                raise ValueError(f'quant layer in two units: {owner[id(layer)]!r} and {name!r}')
            owner[id(layer)] = name
    missing = [n for n, m in quant_layers(model) if id(m) not in owner]
    if missing:
        raise ValueError(f'quant layers outside every unit: {missing[:5]}')


def find_unit(units: Sequence[Tuple[str, nn.Module]], layer_name: str) -> Optional[str]:
    """Name of the unit that contains the quant layer ``layer_name`` (None if none)."""
    for name, unit in units:
        for member in unit_members(name, unit):
            if layer_name == member or layer_name.startswith(member + '.'):
                return name
    return None
