"""Reading and writing images (PNG, JPEG, TIFF incl. float, HEIF/HEIC, AVIF, WebP) and raw files, with their metadata."""
