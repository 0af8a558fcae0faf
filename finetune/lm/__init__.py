"""Causal language models: what the causal-lm task (finetune/tasks/causal-lm.py) does in each stage."""
