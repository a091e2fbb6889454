"""Curation on Ray Data: read crawls, filter, deduplicate, remove PII."""
