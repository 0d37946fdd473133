"""Re-parameterisable 3x3 blocks: RepVGG, QARepVGG v1 and v2 (docs/METHOD.md section 4).

Training form: several parallel linear branches summed before one activation.
``switch_to_deploy()`` folds every branch (each with its own BN, and for
QARepVGG the BN after the sum) into one ``rbr_reparam`` conv with bias, as the
official YOLOv6 code names it. Branch attribute names follow YOLOv6
(``rbr_dense.conv``, ``rbr_dense.bn``, ``rbr_1x1``, ``rbr_identity``, ``bn``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detptq.registry import MODELS
from .conv import build_activation


def fold_bn(kernel: torch.Tensor, bias: Optional[torch.Tensor],
            bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BN that follows a conv (kernel, bias) into both."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    new_kernel = kernel * scale.reshape(-1, *([1] * (kernel.dim() - 1)))
    new_bias = bn.bias + (bias - bn.running_mean) * scale
    return new_kernel, new_bias


def identity_kernel(channels: int, groups: int, kernel_size: int,
                    like: torch.Tensor) -> torch.Tensor:
    """The k x k (grouped) conv kernel that is the identity map."""
    in_per_group = channels // groups
    kernel = like.new_zeros((channels, in_per_group, kernel_size, kernel_size))
    centre = kernel_size // 2
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % in_per_group, centre, centre] = 1.0
    return kernel


def pad_to_kernel(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad a centred smaller kernel (e.g. 1x1) to kernel_size."""
    pad = (kernel_size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad, pad, pad, pad])


def conv_bn_branch(branch: nn.Module) -> Tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The conv and BN inside a conv+BN branch, whatever the child names."""
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in branch.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != 1 or len(bns) != 1:
        raise ValueError('a conv+BN branch must hold exactly one Conv2d and '
                         f'one BatchNorm2d, got {len(convs)} and {len(bns)}')
    return convs[0], bns[0]


def fold_conv_bn_branch(branch: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of a conv+BN branch with its (eval) BN folded in."""
    conv, bn = conv_bn_branch(branch)
    return fold_bn(conv.weight, conv.bias, bn)


@MODELS.register_module()
class RepVGGBlock(nn.Module):
    """3x3 conv+BN + 1x1 conv+BN (+ identity BN when shapes allow) -> act.

    Reusable as YOLOv7's RepConv: pass ``act='SiLU'``; a subclass may override
    :meth:`make_conv_bn` to change the branch layout (e.g. ``nn.Sequential``
    numbered children), the folding finds the conv and BN by type.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 3,
                 stride: int = 1,
                 padding: Optional[int] = None,
                 groups: int = 1,
                 act: Optional[str] = 'ReLU',
                 deploy: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        if padding is None:
            padding = kernel_size // 2
        if padding != kernel_size // 2:
            raise ValueError('only "same" padding is re-parameterisable here '
                             f'(kernel {kernel_size}, padding {padding})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.deploy = deploy
        self.nonlinearity = build_activation(act)
        if deploy:
            self.rbr_reparam = self._make_reparam_conv()
        else:
            self._build_branches()

    # ----------------------------------------------------------- structure
    def has_identity(self) -> bool:
        """Whether an identity branch exists (same shape in and out)."""
        return self.in_channels == self.out_channels and self.stride == 1

    def make_conv_bn(self, kernel_size: int, padding: int) -> nn.Module:
        """A conv (no bias) + BN branch; names as YOLOv6 (conv, bn)."""
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(self.in_channels, self.out_channels, kernel_size,
                           self.stride, padding, groups=self.groups,
                           bias=False),
            bn=nn.BatchNorm2d(self.out_channels)))

    def _build_branches(self) -> None:
        """Create the training-time branches."""
        self.rbr_identity = (nn.BatchNorm2d(self.in_channels)
                             if self.has_identity() else None)
        self.rbr_dense = self.make_conv_bn(self.kernel_size, self.padding)
        self.rbr_1x1 = self.make_conv_bn(1, 0)

    def _make_reparam_conv(self) -> nn.Conv2d:
        """The single conv with bias that replaces all branches."""
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         self.stride, self.padding, groups=self.groups,
                         bias=True)

    # ------------------------------------------------------------- forward
    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the parallel branches (pre-activation)."""
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Branches summed then activation; the fused conv in deploy mode."""
        if self.deploy:
            return self.nonlinearity(self.rbr_reparam(x))
        return self.nonlinearity(self.branch_sum(x))

    # -------------------------------------------------------------- fusing
    def _identity_kernel(self, like: torch.Tensor) -> torch.Tensor:
        return identity_kernel(self.in_channels, self.groups,
                               self.kernel_size, like)

    @torch.no_grad()
    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias of the one conv equal to the branch sum (eval BN)."""
        kernel, bias = fold_conv_bn_branch(self.rbr_dense)
        k1, b1 = fold_conv_bn_branch(self.rbr_1x1)
        kernel = kernel + pad_to_kernel(k1, self.kernel_size)
        bias = bias + b1
        if self.rbr_identity is not None:
            kid, bid = fold_bn(self._identity_kernel(kernel), None,
                               self.rbr_identity)
            kernel = kernel + kid
            bias = bias + bid
        return kernel, bias

    def _training_attrs(self) -> Tuple[str, ...]:
        return ('rbr_dense', 'rbr_1x1', 'rbr_identity')

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold all branches into ``rbr_reparam`` and delete them (idempotent)."""
        if self.deploy:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        reparam = self._make_reparam_conv().to(kernel.device, kernel.dtype)
        reparam.weight.copy_(kernel)
        reparam.bias.copy_(bias)
        for name in self._training_attrs():
            if hasattr(self, name):
                delattr(self, name)
        self.rbr_reparam = reparam
        self.deploy = True


@MODELS.register_module()
class QARepVGGBlock(RepVGGBlock):
    """QARepVGG (v1): 3x3 conv+BN + 1x1 conv (no BN) + identity (no BN) -> BN -> act.

    From "Make RepVGG Greater Again" (quantization-aware RepVGG); YOLOv6's
    ``QARepVGGBlock`` (``training_mode='qarepvgg'``). ``switch_to_deploy``
    also folds the post-sum BN into ``rbr_reparam`` (the official code keeps
    it for QAT; PTQ here always works on the fully folded conv).
    """

    def _build_branches(self) -> None:
        self.rbr_dense = self.make_conv_bn(self.kernel_size, self.padding)
        self.rbr_1x1 = nn.Conv2d(self.in_channels, self.out_channels, 1,
                                 self.stride, 0, groups=self.groups,
                                 bias=False)
        self.rbr_identity = nn.Identity() if self.has_identity() else None
        self.bn = nn.BatchNorm2d(self.out_channels)

    def unshared_branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the parallel branches before the shared BN."""
        return super().branch_sum(x)

    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the branches followed by the shared BN."""
        return self.bn(self.unshared_branch_sum(x))

    def unshared_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """Kernel of the weight-free branches (identity) summed before the BN."""
        if self.rbr_identity is None:
            return torch.zeros_like(like)
        return self._identity_kernel(like)

    @torch.no_grad()
    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernel and bias of the one conv equal to the whole block (eval BN)."""
        kernel, bias = fold_conv_bn_branch(self.rbr_dense)
        kernel = kernel + pad_to_kernel(self.rbr_1x1.weight,
                                        self.kernel_size)
        kernel = kernel + self.unshared_kernel(kernel)
        return fold_bn(kernel, bias, self.bn)

    def _training_attrs(self) -> Tuple[str, ...]:
        return ('rbr_dense', 'rbr_1x1', 'rbr_identity', 'bn')


def avg_pool_kernel(channels: int, groups: int, kernel_size: int,
                    like: torch.Tensor) -> torch.Tensor:
    """The (grouped) conv kernel equal to a per-channel k x k average pool.

    ``nn.AvgPool2d`` counts padded zeros (``count_include_pad=True``), so with
    the conv's own zero padding it is exactly this conv everywhere, borders
    included.
    """
    centre = identity_kernel(channels, groups, 1, like)  # (C, C/g, 1, 1)
    return centre.expand(-1, -1, kernel_size, kernel_size) / kernel_size ** 2


@MODELS.register_module()
class QARepVGGBlockV2(QARepVGGBlock):
    """QARepVGG v2 (YOLOv6 ``QARepVGGBlockV2``, ``training_mode='qarepvggv2'``).

    As :class:`QARepVGGBlock` plus a weight-free ``rbr_avg`` branch
    (``AvgPool2d(k, stride, padding)``, only when input and output shapes
    match, like the identity) added before the shared BN:
    ``act(bn(dense(x) + conv1x1(x) + x + avgpool(x)))``. The official v3 QA
    configs (``configs/qarepvgg/yolov6{n,s,m}_qa.py``) build this block.
    """

    def _build_branches(self) -> None:
        super()._build_branches()
        self.rbr_avg = (nn.AvgPool2d(self.kernel_size, self.stride,
                                     self.padding)
                        if self.has_identity() else None)

    def unshared_branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Dense + 1x1 + identity + average pool, before the shared BN."""
        out = super().unshared_branch_sum(x)
        if self.rbr_avg is not None:
            out = out + self.rbr_avg(x)
        return out

    def unshared_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """Identity plus average-pool kernels."""
        kernel = super().unshared_kernel(like)
        if self.rbr_avg is not None:
            kernel = kernel + avg_pool_kernel(self.in_channels, self.groups,
                                              self.kernel_size, like)
        return kernel

    def _training_attrs(self) -> Tuple[str, ...]:
        return super()._training_attrs() + ('rbr_avg',)
