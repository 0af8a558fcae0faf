"""A stand-in training member for bench/flow_vs_dvc.py: fine-tunes a small BERT built from a
config (hidden 256, 4 layers) for a fixed number of steps on seeded random tokens. Real training
work (forward, backward, AdamW), independent of the data pipeline, so two members are truly
independent DVC stages."""
import json
import sys
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

out, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(seed)
model = BertForSequenceClassification(BertConfig(vocab_size=2000, hidden_size=256, num_hidden_layers=4,
                                                 num_attention_heads=4, intermediate_size=1024, num_labels=3))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
start = time.time()
for _ in range(steps):
    ids = torch.randint(0, 2000, (16, 64))
    loss = model(input_ids=ids, labels=torch.randint(0, 3, (16,))).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
json.dump({"seed": seed, "threads": torch.get_num_threads(), "seconds": time.time() - start, "loss": loss.item()}, open(out, "w"))
