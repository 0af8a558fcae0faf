"""Fine-tuning: `fit` (fit.py, the transformers Trainer), what trains at which rate (strategies.py), data-parallel runs
(distributed.py), the loss of several heads (head_loss.py)."""
