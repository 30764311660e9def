"""Network architectures; importing this package fills ARCH_REGISTRY."""

from traiNNer.archs import paragonsr2, spandrel_archs, spandrel_archs_upstream

__all__ = ["paragonsr2", "spandrel_archs", "spandrel_archs_upstream"]
