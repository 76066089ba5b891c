"""Storage behind one interface: the runner never sees SQL."""

from .base import Changes, Store, open_store

__all__ = ["Changes", "Store", "open_store"]
