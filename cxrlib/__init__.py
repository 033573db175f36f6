"""cxrlib: the helper library of the book *Detecting COVID-19 on chest X-rays with deep learning*.

One concept per module, listed from the ground up (a module imports only those above it):

* :mod:`~cxrlib.config`: where things are (data, cache, runs), fast mode, one-line errors;
* :mod:`~cxrlib.imaging`: reading any X-ray file as 8-bit gray;
* :mod:`~cxrlib.stats`: exact intervals and paired tests;
* :mod:`~cxrlib.metrics`: pure metrics of probabilities and labels (AUC, bootstrap, calibration);
* :mod:`~cxrlib.regions`: the lung region (masks, the chest box, blackout);
* :mod:`~cxrlib.transforms`: augmentation and normalization;
* :mod:`~cxrlib.models`: the ResNets, ImageNet weights and the CAM layers;
* :mod:`~cxrlib.data`: scan, split, pixel cache, datasets;
* :mod:`~cxrlib.recipe`: the training configuration and its presets;
* :mod:`~cxrlib.checkpoint`: checkpoints on disk, the device, the one prediction path;
* :mod:`~cxrlib.train`: the training loop;
* :mod:`~cxrlib.runs`: where a chapter's model comes from, and what its run says;
* :mod:`~cxrlib.explain`: class activation maps;
* :mod:`~cxrlib.evaluate`: predictions on splits and folders, and their report;
* :mod:`~cxrlib.ablation`: the measured runs behind the recipe (chapter 3's table);
* :mod:`~cxrlib.viz`: figures; :mod:`~cxrlib.widgets`: the prediction explorer;
* :mod:`~cxrlib.trust`: shortcut and leakage experiments (chapter 7);
* :mod:`~cxrlib.checks`, :mod:`~cxrlib.exercises`, :mod:`~cxrlib.pages`: what the chapters
  call for their self-checks, exercises and page notes;
* :mod:`~cxrlib.bench`: speed benchmarks; :mod:`~cxrlib.cli`: the ``cxr`` command.

Importing the package has no side effects; submodules are imported on use.
"""

__version__ = "0.1.0"
