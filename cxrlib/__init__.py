"""cxrlib: the helper library of the book *Detecting COVID-19 on chest X-rays with deep learning*.

One concept per module: :mod:`~cxrlib.config` (where things are, fast mode),
:mod:`~cxrlib.imaging` (reading any X-ray file), :mod:`~cxrlib.data` (scan, split, cache,
datasets), :mod:`~cxrlib.train` (training runs), :mod:`~cxrlib.evaluate` (predictions,
metrics, intervals, calibration), :mod:`~cxrlib.explain` (class activation maps),
:mod:`~cxrlib.widgets` (the prediction explorer), :mod:`~cxrlib.viz` (figures),
:mod:`~cxrlib.trust` (shortcut and leakage experiments), :mod:`~cxrlib.cli` (the ``cxr`` command).
Importing the package has no side effects; submodules are imported on use.
"""

__version__ = "0.1.0"
