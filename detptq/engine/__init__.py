"""Runner extensions (hooks, loops); importing registers them."""
from . import hooks, loops  # noqa: F401
