"""The lifecycle's stages: curation, tokenizer and token shards, training, evaluation, report."""
