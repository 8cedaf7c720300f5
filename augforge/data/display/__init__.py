"""What a dataset looks like to a person: counts per split and class, and preview figures."""
