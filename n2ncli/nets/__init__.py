"""Network architectures (the U-Net itself imports torch: ``from n2ncli.nets.unet import UNet``)."""

#: Five 2x poolings: the U-Net's input sides are padded to a multiple of this.
DEPTH_MULTIPLE = 32


def __getattr__(name: str):  # noqa: ANN202 - lazy re-exports, so that DEPTH_MULTIPLE costs no torch import
    if name in ("UNet", "pad_to_multiple"):
        from n2ncli.nets import unet

        return getattr(unet, name)
    raise AttributeError(name)


__all__ = ["DEPTH_MULTIPLE", "UNet", "pad_to_multiple"]
