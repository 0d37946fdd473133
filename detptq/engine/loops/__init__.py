"""Runner loops; importing registers them in detptq.registry.LOOPS."""
from .ptq_loop import PTQLoop

__all__ = ["PTQLoop"]
