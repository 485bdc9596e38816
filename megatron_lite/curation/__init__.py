"""Data curation before preprocessing: deduplication, filters, PII, decontamination, statistics."""
