"""Importing this module registers every real provider in channels.registry."""

from __future__ import annotations
