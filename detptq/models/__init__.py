"""detptq models; importing this package registers them in detptq.registry."""
from . import backbones, dense_heads, detectors, layers, necks  # noqa: F401
from .deploy import switch_to_deploy

__all__ = ['switch_to_deploy']
