"""Channel adapters: one per file, all behind `channels.base.Channel`."""
