"""Dandelion's functions (predict, ingest_one_url, validate_label) and the library code they share."""
