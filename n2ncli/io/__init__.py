"""Reading and writing images (PNG, JPEG, TIFF) and raw files, with their metadata."""
