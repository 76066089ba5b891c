"""kaskad: trigger-chain automation daemon for e-commerce."""

__version__ = "0.1.0"
