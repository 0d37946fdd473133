"""Runner extensions (hooks, loops); importing registers them."""
from . import hooks  # noqa: F401
