"""Training on Ray Train: model, loop, pretraining, SFT, reward model, PPO, DPO, GRPO."""
