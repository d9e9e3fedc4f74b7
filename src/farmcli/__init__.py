"""farmcli: FARM (Frequency-Aware Model) for cross-domain live-streaming recommendation."""

__version__ = "0.1.0"

from farmcli.errors import UserError

__all__ = ["UserError", "__version__"]
