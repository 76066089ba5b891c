"""Storage behind one interface: the runner never sees SQL."""

from engine.store.base import Store
from engine.store.urls import open_store

__all__ = ["Store", "open_store"]
