"""Datasets: the ``SOURCES`` registry (``sources``), its base types (``base``), image
folders (``folders``), the streaming sources ``parquet`` and ``webdataset`` (``stream``,
``parquet``, ``webdataset``, read by Ray Data through ``ray_read``), listings
(``listing``) and image decoding/resizing (``images``). No Ray at import time."""
