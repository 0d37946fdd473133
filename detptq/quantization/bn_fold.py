"""Fold BatchNorm into the preceding convolution (eval-mode statistics), docs/METHOD.md §4."""
import logging
from typing import List, Optional, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

_BN_TYPES = (nn.BatchNorm2d, nn.BatchNorm1d)


def can_fold(conv: nn.Module, bn: nn.Module) -> bool:
    """True when ``bn`` (running statistics) can be folded into ``conv``'s output channels."""
    return (isinstance(conv, (nn.Conv2d, nn.Linear)) and isinstance(bn, _BN_TYPES)
            and bn.track_running_stats and bn.running_mean is not None and bn.num_features
            == (conv.out_channels if isinstance(conv, nn.Conv2d) else conv.out_features))


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Module, bn: nn.Module) -> None:
    """Rewrite ``conv``'s weight and bias so that ``conv(x) == bn(conv(x))`` in eval mode."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    factor = gamma / std
    weight = conv.weight
    conv.weight.copy_(weight * factor.reshape([-1] + [1] * (weight.dim() - 1)))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * factor + beta
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(weight.dtype))
    else:
        conv.bias.copy_(new_bias)


def _probe_input(conv: nn.Module) -> Optional[torch.Tensor]:
    weight = conv.weight
    if isinstance(conv, nn.Conv2d):
        size = max(8, *[k * d + 1 for k, d in zip(conv.kernel_size, conv.dilation)])
        return torch.randn(2,
                           conv.in_channels,
                           size,
                           size,
                           dtype=weight.dtype,
                           device=weight.device)
    return torch.randn(2, conv.in_features, dtype=weight.dtype, device=weight.device)


def _fold_attribute_pair(module: nn.Module, verify: bool) -> bool:
    """Fold ``module.bn`` into ``module.conv`` (ConvBNAct-like), probe-checked if ``verify``."""
    conv, bn = module.conv, module.bn
    if not can_fold(conv, bn):
        return False
    saved = {k: v.clone() for k, v in conv.state_dict().items()}
    had_bias = conv.bias is not None
    probe = None
    was_training = module.training
    module.eval()
    if verify:
        probe = _probe_input(conv)
        try:
            with torch.no_grad():
                reference = module(probe)
        except Exception as err:  # noqa: BLE001 - any failure means "cannot check"
            # Cannot check that forward is bn(conv(x)): keep the exact float BN.
            logger.warning('bn_fold: cannot probe %s (%s); left unfolded',
                           type(module).__name__, err)
            module.train(was_training)
            return False
    fold_bn_into_conv(conv, bn)
    module.bn = nn.Identity()
    if probe is not None:
        with torch.no_grad():
            folded = module(probe)
        if not torch.allclose(
                folded, reference, rtol=1e-4, atol=1e-4 * (1 + float(reference.abs().max()))):
            # The forward does not apply bn right after conv: undo.
            module.bn = bn
            if not had_bias:
                conv.bias = None
            conv.load_state_dict(saved)
            logger.warning(
                'bn_fold: %s has .conv and .bn but does not compute bn(conv(x)); '
                'left unfolded',
                type(module).__name__)
            module.train(was_training)
            return False
    module.train(was_training)
    return True


def fold_bn(model: nn.Module, verify: bool = True) -> List[str]:
    """Fold every foldable BatchNorm into its conv in place; returns the names of the folded BNs.

    Patterns: a module with ``.conv`` and ``.bn`` children (ConvBNAct-like; with
    ``verify`` its output on a random probe must be unchanged, otherwise the fold
    is undone), and consecutive ``Conv2d``/``Linear`` then ``BatchNorm`` children
    of an ``nn.Sequential``. Folded BNs become ``nn.Identity``.
    """
    folded: List[str] = []
    for name, module in list(model.named_modules()):
        prefix = f'{name}.' if name else ''
        if isinstance(module.__dict__.get('_modules', {}).get('conv'), nn.Module) and \
                isinstance(module._modules.get('bn'), _BN_TYPES):
            if _fold_attribute_pair(module, verify):
                folded.append(prefix + 'bn')
        if isinstance(module, nn.Sequential):
            children: List[Tuple[str, nn.Module]] = list(module.named_children())
            for (_, first), (second_name, second) in zip(children, children[1:]):
                if can_fold(first, second):
                    fold_bn_into_conv(first, second)
                    setattr(module, second_name, nn.Identity())
                    folded.append(prefix + second_name)
    return folded
