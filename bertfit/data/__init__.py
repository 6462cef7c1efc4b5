"""Reading data: files, Parquet, rows in memory, labels, splits, named tasks, downloads, packing."""
