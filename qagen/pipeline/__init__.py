"""``ingest`` end to end: stage assembly, the executors (local, Ray), the summary."""
