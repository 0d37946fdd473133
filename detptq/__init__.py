"""detptq: post-training quantization for YOLO detectors, as an OpenMMLab plugin."""
from .utils.checkpoint import install_mmengine_loader
from .version import __version__

# mmengine's Runner loads checkpoints with torch.load's default, which refuses
# its own checkpoints on torch >= 2.6; route it through our safe loader once.
install_mmengine_loader()

__all__ = ['__version__']
