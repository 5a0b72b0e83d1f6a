"""The reduce job's halves: the PCA's numpy core, its two distributed passes, the label
separation figures and the report."""
