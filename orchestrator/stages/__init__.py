"""The pipeline's stages, in data order: encode, embed, proxy, score (and select), export,
sweep, report.

Each module is a stage driver: it decides what is cached, launches Ray work through
:mod:`orchestrator.runtime`, and leaves model code to :mod:`orchestrator.training`.
"""
