"""Acquisition: Common Crawl listings, a polite crawler, and the demo crawl generator."""
