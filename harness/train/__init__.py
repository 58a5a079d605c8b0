"""Training: the Trainer (one optimizer step readable in one place), checkpoints, seeding, the
multi-process launch, LoRA."""
