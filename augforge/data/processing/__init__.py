"""Processing of loaded slices: the lung field, preprocessing to the network input, splits,
Lung-RADS classes, checks, the on-disk cache, and parallel work over chunks."""
