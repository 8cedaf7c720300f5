"""Lung CT data, in three layers:

- :mod:`augforge.data.records`: the ``Slice`` and ``Dataset`` records every source produces;
- :mod:`augforge.data.sources`: where slices come from (``load_dataset`` resolves ``--data``): the
  embedded ``lidc-phantom``, the LIDC per-slice export, LIDC DICOM series, the seed paper's Mendeley
  pickles, an image/mask folder;
- :mod:`augforge.data.processing`: what is done to loaded slices: the lung field, preprocessing to
  the network input, patient-level splits, Lung-RADS classes, checks, the on-disk cache;
- :mod:`augforge.data.display`: counts and preview figures for people.
"""

from augforge.data.records import LUNG_RADS_CLASSES, Dataset, Slice

__all__ = ["LUNG_RADS_CLASSES", "Dataset", "Slice"]
