"""traiNNer-auto: super-resolution training with built-in automations."""

__version__ = "0.1.0"
