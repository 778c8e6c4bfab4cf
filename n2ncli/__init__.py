"""n2ncli: self-supervised photo and raw denoising with Neighbor2Neighbor."""

__version__ = "0.2.0"
