"""Lung CT data: the slice record, dataset sources, lung-field extraction, preprocessing."""

from augforge.data.records import LUNG_RADS_CLASSES, Dataset, Slice

__all__ = ["LUNG_RADS_CLASSES", "Dataset", "Slice"]
