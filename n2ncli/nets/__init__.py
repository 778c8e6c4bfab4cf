"""Network architectures."""

from n2ncli.nets.unet import UNet, pad_to_multiple

__all__ = ["UNet", "pad_to_multiple"]
