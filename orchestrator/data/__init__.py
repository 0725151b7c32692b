"""Datasets: the ``SOURCES`` registry (``sources``), its base types (``base``), image
folders (``folders``) and image decoding/resizing (``images``). No Ray at import time."""
