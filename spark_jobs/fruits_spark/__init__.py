"""Code shared by the featurize and reduce Spark jobs (shipped with --py-files)."""
