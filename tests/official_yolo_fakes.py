"""Test helpers: stand-ins for the official YOLOv7 / YOLOv6 class trees.

The YOLOv7 fakes re-implement the official semantics independently of
detptq: a ``models.yolo.Model`` runs the yaml layer list (``from`` indices and
Concat lists are data transcribed from ``cfg/training/yolov7*.yaml``), so a
converted checkpoint reproducing its outputs proves the layer-index mapping
and every concat order. Classes are placed in fake ``models.common`` /
``models.yolo`` (and ``yolov6.*``) modules in ``sys.modules`` only while files
are written; tests remove them before converting.
"""
from __future__ import annotations

import copy
import sys
import types
from typing import Dict, List, Sequence

import torch
from torch import nn

# (from, kind, args) per official layer; Conv args = (c2, k, s)
C, CAT, MAXP, UP = 'Conv', 'Concat', 'MP', 'Upsample'


def _elan_l(c_mid: int, c_blk: int, c_out: int, n_chain: int, cat: list):
    rows = [(-1, C, (c_mid, 1, 1)), (-2, C, (c_mid, 1, 1))]
    rows += [(-1, C, (c_blk, 3, 1))] * n_chain
    return rows + [(cat, CAT, ()), (-1, C, (c_out, 1, 1))]


def _mp_l(c: int, cat: list):
    return [(-1, MAXP, ()), (-1, C, (c, 1, 1)), (-3, C, (c, 1, 1)),
            (-1, C, (c, 3, 2)), (cat, CAT, ())]


_B4 = [-1, -3, -5, -6]
_H6 = [-1, -2, -3, -4, -5, -6]
YOLOV7_L_LAYERS: List[tuple] = (
    [(-1, C, (32, 3, 1)), (-1, C, (64, 3, 2)), (-1, C, (64, 3, 1)),
     (-1, C, (128, 3, 2))]
    + _elan_l(64, 64, 256, 4, _B4)                                  # 4-11
    + _mp_l(128, [-1, -3]) + _elan_l(128, 128, 512, 4, _B4)         # 12-24
    + _mp_l(256, [-1, -3]) + _elan_l(256, 256, 1024, 4, _B4)        # 25-37
    + _mp_l(512, [-1, -3]) + _elan_l(256, 256, 1024, 4, _B4)        # 38-50
    + [(-1, 'SPPCSPC', (512,)), (-1, C, (256, 1, 1)), (-1, UP, ()),
       (37, C, (256, 1, 1)), ([-1, -2], CAT, ())]                   # 51-55
    + _elan_l(256, 128, 256, 4, _H6)                                # 56-63
    + [(-1, C, (128, 1, 1)), (-1, UP, ()), (24, C, (128, 1, 1)),
       ([-1, -2], CAT, ())]                                         # 64-67
    + _elan_l(128, 64, 128, 4, _H6)                                 # 68-75
    + _mp_l(128, [-1, -3, 63]) + _elan_l(256, 128, 256, 4, _H6)     # 76-88
    + _mp_l(256, [-1, -3, 51]) + _elan_l(512, 256, 512, 4, _H6)     # 89-101
    + [(75, 'RepConv', (256,)), (88, 'RepConv', (512,)),
       (101, 'RepConv', (1024,))])                                  # 102-104
YOLOV7_L_DETECT_FROM = [102, 103, 104]


def _elan_t(c_mid: int, c_out: int):
    return [(-1, C, (c_mid, 1, 1)), (-2, C, (c_mid, 1, 1)),
            (-1, C, (c_mid, 3, 1)), (-1, C, (c_mid, 3, 1)),
            ([-1, -2, -3, -4], CAT, ()), (-1, C, (c_out, 1, 1))]


YOLOV7_TINY_LAYERS: List[tuple] = (
    [(-1, C, (32, 3, 2)), (-1, C, (64, 3, 2))] + _elan_t(32, 64)    # 0-7
    + [(-1, MAXP, ())] + _elan_t(64, 128)                             # 8-14
    + [(-1, MAXP, ())] + _elan_t(128, 256)                            # 15-21
    + [(-1, MAXP, ())] + _elan_t(256, 512)                            # 22-28
    + [(-1, C, (256, 1, 1)), (-2, C, (256, 1, 1)), (-1, 'SP', (5,)),
       (-2, 'SP', (9,)), (-3, 'SP', (13,)), ([-1, -2, -3, -4], CAT, ()),
       (-1, C, (256, 1, 1)), ([-1, -7], CAT, ()),
       (-1, C, (256, 1, 1))]                                        # 29-37
    + [(-1, C, (128, 1, 1)), (-1, UP, ()), (21, C, (128, 1, 1)),
       ([-1, -2], CAT, ())] + _elan_t(64, 128)                      # 38-47
    + [(-1, C, (64, 1, 1)), (-1, UP, ()), (14, C, (64, 1, 1)),
       ([-1, -2], CAT, ())] + _elan_t(32, 64)                       # 48-57
    + [(-1, C, (128, 3, 2)), ([-1, 47], CAT, ())] + _elan_t(64, 128)   # 58-65
    + [(-1, C, (256, 3, 2)), ([-1, 37], CAT, ())] + _elan_t(128, 256)  # 66-73
    + [(57, C, (128, 3, 1)), (65, C, (256, 3, 1)), (73, C, (512, 3, 1))])
YOLOV7_TINY_DETECT_FROM = [74, 75, 76]


def _register(module_name: str, *classes: type) -> types.ModuleType:
    """Put classes into a fake module (creating parents) in sys.modules."""
    parts = module_name.split('.')
    for i in range(1, len(parts) + 1):
        name = '.'.join(parts[:i])
        sys.modules.setdefault(name, types.ModuleType(name))
    mod = sys.modules[module_name]
    for cls in classes:
        cls.__module__ = module_name
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


def remove_fake_modules(*packages: str) -> None:
    """Delete fake packages and their sub-modules from sys.modules."""
    for name in list(sys.modules):
        if name.split('.')[0] in packages:
            del sys.modules[name]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.03)  # official YOLO init


class Conv(nn.Module):
    """Official models.common.Conv: conv (no bias), bn, act."""

    def __init__(self, c1, c2, k=1, s=1, act=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = _bn(c2)
        self.act = act if act is not None else nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class MP(nn.Module):
    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(k, k)

    def forward(self, x):
        return self.m(x)


class SP(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        return self.m(x)


class SPPCSPC(nn.Module):
    """Official SPPCSPC semantics (cv1..cv7, parallel 5/9/13 pools)."""

    def __init__(self, c1, c2, e=0.5):
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1, self.cv2 = Conv(c1, c_), Conv(c1, c_)
        self.cv3, self.cv4 = Conv(c_, c_, 3), Conv(c_, c_)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv5, self.cv6 = Conv(4 * c_, c_), Conv(c_, c_, 3)
        self.cv7 = Conv(2 * c_, c2)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class RepConv(nn.Module):
    """Official RepConv training form (3x3+BN, 1x1+BN, identity BN if c1 == c2)."""

    def __init__(self, c1, c2):
        super().__init__()
        self.rbr_identity = _bn(c1) if c1 == c2 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, 3, 1, 1, bias=False), _bn(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, 1, 0, bias=False), _bn(c2))
        self.act = nn.SiLU()

    def forward(self, x):
        if hasattr(self, 'rbr_reparam'):  # official deploy (fused) form
            return self.act(self.rbr_reparam(x))
        idt = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + idt)


class ImplicitA(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))

    def forward(self, x):
        return self.implicit.expand_as(x) + x


class ImplicitM(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))

    def forward(self, x):
        return self.implicit.expand_as(x) * x


class IDetect(nn.Module):
    """Official IDetect parameters/buffers; forward returns the raw maps."""

    def __init__(self, nc, anchors, ch, strides=(8, 16, 32), implicit=True):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        a = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer('anchors', a / torch.tensor(strides).view(-1, 1, 1))
        self.register_buffer('anchor_grid', a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.stride = torch.tensor(strides, dtype=torch.float32)  # plain attribute
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        if implicit:
            self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
            self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def forward(self, xs):
        outs = []
        for i, x in enumerate(xs):
            if hasattr(self, 'ia'):
                x = self.im[i](self.m[i](self.ia[i](x)))
            else:
                x = self.m[i](x)
            outs.append(x)
        return outs


class Detect(IDetect):
    """Official deploy Detect: IDetect without implicit layers."""

    def __init__(self, nc, anchors, ch, strides=(8, 16, 32)):
        super().__init__(nc, anchors, ch, strides, implicit=False)


class Model(nn.Module):
    """Official models.yolo.Model: an nn.Sequential run by ``from`` indices."""

    def __init__(self, layers, detect_from, nc, anchors, width=1.0,
                 act=None, implicit=True):
        super().__init__()
        chs, mods = [], []
        for i, (f, kind, args) in enumerate(layers):
            c_in = (chs[f] if chs else 3) if isinstance(f, int) else None
            if kind == C:
                c2 = int(args[0] * width)
                m, c_out = Conv(c_in, c2, args[1], args[2], copy.deepcopy(act)), c2
            elif kind == CAT:
                m, c_out = Concat(1), sum(chs[j] for j in f)
            elif kind == MAXP:
                m, c_out = MP(), c_in
            elif kind == 'SP':
                m, c_out = SP(args[0]), c_in
            elif kind == UP:
                m, c_out = nn.Upsample(None, 2, 'nearest'), c_in
            elif kind == 'SPPCSPC':
                c_out = int(args[0] * width)
                m = SPPCSPC(c_in, c_out)
            else:  # RepConv
                c_out = int(args[0] * width)
                m = RepConv(c_in, c_out)
            m.f, m.i, m.type = f, i, kind
            mods.append(m)
            chs.append(c_out)
        head_cls = IDetect if implicit else Detect
        det = head_cls(nc, anchors, [chs[j] for j in detect_from])
        det.f, det.i, det.type = detect_from, len(mods), head_cls.__name__
        mods.append(det)
        self.model = nn.Sequential(*mods)
        self.yaml = {'nc': nc, 'anchors': anchors}
        self.names = [str(k) for k in range(nc)]

    def forward(self, x):
        y: List[torch.Tensor] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [
                    x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return x


YOLOV7_CLASSES = (Conv, Concat, MP, SP, SPPCSPC, RepConv, ImplicitA, ImplicitM)


def install_fake_yolov7() -> None:
    """Register the official class names (models.common / models.yolo)."""
    _register('models.common', *YOLOV7_CLASSES)
    _register('models.yolo', IDetect, Detect, Model)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (variance-preserving), BN statistics and implicit vectors."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point() or 'anchor' in name or 'proj' in name:
            continue  # constants of the model, not weights
        noise = torch.randn(t.shape, generator=gen)
        if name.endswith('running_var'):
            t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.75)
        elif t.dim() >= 2 and 'implicit' not in name:
            t.copy_(noise / t[0].numel() ** 0.5)  # conv weight, 1/sqrt(fan_in)
        elif name.endswith('weight') or '.im.' in name or 'implicit_mul' in name:
            t.copy_(1.0 + 0.1 * noise)  # BN scale, implicit multiplier
        else:
            t.copy_(0.1 * noise)  # biases, BN shifts/means, implicit add
    return model


def official_raw_maps(ours_head, cls_scores: Sequence[torch.Tensor],
                      bbox_preds: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Re-assemble our (cls, bbox) split into the official (B, A*(5+C), H, W) maps."""
    out = []
    for c, b in zip(cls_scores, bbox_preds):
        n, _, h, w = c.shape
        a = ours_head.num_anchors
        out.append(torch.cat([b.view(n, a, 4, h, w), c.view(n, a, -1, h, w)],
                             2).view(n, -1, h, w))
    return out


def _is_plain(value) -> bool:
    """Data the restricted unpickler accepts (exact builtin types, tensors)."""
    if value is None or type(value) in (int, float, str, bool):
        return True
    if isinstance(value, torch.Tensor):
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(_is_plain(v) for v in value.values())
    return False


def stand_in_tree(model: nn.Module, package: str, renames: Dict[str, str]
                  ) -> nn.Module:
    """Deep copy where every non-torch module class becomes a fake ``package`` class.

    ``renames`` renames top-level children (e.g. bbox_head -> detect).
    Non-torch modules holding no tensors (losses, assigners) are dropped, as
    the official trees have none.
    """
    tree = copy.deepcopy(model)
    cache: Dict[str, type] = {}

    def convert(mod: nn.Module) -> None:
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            is_torch = type(child).__module__.startswith('torch.')
            if not is_torch and not any(True for _ in child.parameters()) \
                    and not any(True for _ in child.buffers()):
                del mod._modules[name]
                continue
            convert(child)
            if not is_torch:
                cname = type(child).__name__
                if cname not in cache:
                    cache[cname] = type(cname, (nn.Module,), {})
                    _register(f'{package}.layers.common', cache[cname])
                child.__class__ = cache[cname]
                for attr in [k for k, v in vars(child).items()
                             if not k.startswith('_') and not _is_plain(v)]:
                    delattr(child, attr)

    convert(tree)
    model_cls = type('Model', (nn.Module,), {})
    _register(f'{package}.models.yolo', model_cls)
    root = model_cls()
    for name, child in tree._modules.items():
        if name in ('data_preprocessor',):
            continue
        root._modules[renames.get(name, name)] = child
    return root


# --------------------------------------------------------------- YOLOv6 QARepVGG v2
class QARepVGGBlockV2(nn.Module):
    """Official YOLOv6 ``QARepVGGBlockV2`` semantics, written independently of detptq.

    Training form: ``relu(bn(bn_d(conv3x3(x)) + conv1x1(x) + x + avgpool3x3(x)))``
    where the identity and the average pool (stride 1, padding 1, zeros
    counted) exist only when in == out channels and stride == 1. The official
    deploy form (``switch_to_deploy``) keeps ``bn`` after ``rbr_reparam``.
    """

    def __init__(self, c1, c2, k=3, s=1, groups=1):
        super().__init__()
        self.c1, self.k, self.groups = c1, k, groups
        self.rbr_dense = nn.Sequential()
        self.rbr_dense.add_module('conv', nn.Conv2d(c1, c2, k, s, k // 2, groups=groups,
                                                    bias=False))
        self.rbr_dense.add_module('bn', nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Conv2d(c1, c2, 1, s, 0, groups=groups, bias=False)
        same = c1 == c2 and s == 1
        self.rbr_identity = nn.Identity() if same else None
        self.rbr_avg = nn.AvgPool2d(k, s, k // 2) if same else None
        self.bn = nn.BatchNorm2d(c2)
        self.nonlinearity = nn.ReLU()

    def forward(self, x):
        if hasattr(self, 'rbr_reparam'):
            return self.nonlinearity(self.bn(self.rbr_reparam(x)))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x) + self.rbr_avg(x)
        return self.nonlinearity(self.bn(out))

    @torch.no_grad()
    def official_switch_to_deploy(self):
        """Fuse dense (conv+BN), 1x1, identity and average pool; keep the post BN."""
        conv, bn = self.rbr_dense.conv, self.rbr_dense.bn
        t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        kernel = conv.weight * t.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * t
        kernel = kernel + nn.functional.pad(self.rbr_1x1.weight, [1, 1, 1, 1])
        if self.rbr_identity is not None:
            per_group = self.c1 // self.groups
            extra = torch.zeros_like(kernel)
            for ch in range(self.c1):  # avg: 1/k^2 over the window; id: centre 1
                extra[ch, ch % per_group] = 1.0 / self.k ** 2
                extra[ch, ch % per_group, 1, 1] += 1.0
            kernel = kernel + extra
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                          conv.stride, conv.padding, groups=conv.groups, bias=True)
        fused = fused.to(kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity, self.rbr_avg
        self.rbr_reparam = fused


def swap_in_official_qa_v2(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose QARepVGGBlockV2 blocks are the official-semantics fake.

    Weights are copied key for key (the official attribute names are ours).
    """
    ref = copy.deepcopy(model)

    def visit(mod: nn.Module) -> None:
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            if type(child).__name__ == 'QARepVGGBlockV2' and \
                    not isinstance(child, QARepVGGBlockV2):
                dense = child.rbr_dense.conv
                fake = QARepVGGBlockV2(dense.in_channels, dense.out_channels,
                                       dense.kernel_size[0], dense.stride[0],
                                       dense.groups).to(dense.weight.dtype)
                fake.load_state_dict(child.state_dict(), strict=True)
                # the release's BN eps (YOLOv6 initialize_weights sets 1e-3)
                fake.rbr_dense.bn.eps, fake.bn.eps = child.rbr_dense.bn.eps, child.bn.eps
                mod._modules[name] = fake.train(child.training)
            else:
                visit(child)

    visit(ref)
    return ref
