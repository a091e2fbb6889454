"""Default inputs of the training stages: files in the shared data folder beside the checkout.

    from pipeline.train.datasets import HH_PAIRS     # the default of reward/dpo `pairs`, ppo `prompts`

Paths are relative to the working directory the stages run from (the repository root);
any stage field that takes one also takes another path or an fsspec URI.
"""

HH_PAIRS = "../shared/data/prefs/hh_rlhf_harmless_base_test.jsonl.gz"
"""Anthropic HH-RLHF harmless-base test split: preference pairs (TRL-convertible)."""
GSM8K_TRAIN = "../shared/data/math/train.jsonl"
"""GSM8K-format training problems (`#### N` answers)."""
GSM8K_TEST = "../shared/data/math/test.jsonl"
"""GSM8K-format held-out problems."""
