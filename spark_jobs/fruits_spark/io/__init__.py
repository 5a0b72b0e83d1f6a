"""How the jobs read and write: Hadoop's FileSystem for every URI, local Parquet read by
the Python tasks, and Arrow columns of feature vectors."""
