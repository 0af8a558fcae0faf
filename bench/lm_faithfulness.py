"""Are the causal LM's prompt explanations faithful on more than one corpus (issue 39)? configs/lm.yaml fine-tuned on
two corpora, only the data keys changed: the default Shakespeare plays and Python's own documentation (the 79 topic
pages of the standard library's pydoc_data, one document each: technical prose and code, nothing like verse; its
evaluate.prompts left to `auto`, the openings of test documents). Then the explain stage with EXAMPLES prompts (the
configured prompts, then seeded 24-token windows of test blocks) and both attribution methods: feature ablation and
layer integrated gradients over the embeddings. Prints each method's verdict from reports/explain.json: the mean over
the prompts of (log-probability drop of the continuation when its top-3 attributed prompt tokens are removed) minus
(the drop for 3 random tokens, mean of 5 draws), with its percentile-bootstrap 95 % interval; faithful when the
interval lies above zero.

    PYTHONPATH=. .venv/bin/python bench/lm_faithfulness.py [--examples 24]    # ~6 min a corpus on 2 cores
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import scratch  # bench/scratch.py (this script's folder is on sys.path)
import yaml


def pydoc_corpus(folder: Path) -> None:
    """data/raw/pydoc/<topic>.txt: each pydoc_data topic page as one document."""
    from pydoc_data.topics import topics

    target = folder / "data/raw/pydoc"
    target.mkdir(parents=True)
    for name, text in topics.items():
        (target / f"{name}.txt").write_text(text, encoding="utf-8")


def main(examples: int) -> None:
    from stages import explain

    base = yaml.safe_load((scratch.ROOT / "configs/lm.yaml").read_text())
    base["explain"] = {"examples": examples, "methods": ["feature_ablation", "layer_integrated_gradients"]}
    pydoc = {**base, "data": {**base["data"], "source": "data/raw/pydoc"}, "evaluate": {}}
    results = {}
    for corpus, raw, setup in (("shakespeare", base, None), ("pydoc", pydoc, pydoc_corpus)):
        run = scratch.train_and_evaluate(f"lm-faithfulness-{corpus}-", raw, then=explain.run, setup=setup)
        results[corpus] = {"perplexity": run["evaluate"].get("perplexity"), "explain": run["then"]}
    for corpus, result in results.items():
        print(f"\n{corpus}: test perplexity {result['perplexity']}; {result['explain']['examples']} prompts explained")
        for method, f in result["explain"]["faithfulness"].items():
            ci = f["ci95"] or {}
            print(f"  {method:28s} top-k beat random in {f['top_beats_random_share']:.0%}; mean drop {f['mean_top_drop']:.3f} vs "
                  f"{f['mean_random_drop']:.3f} nats; difference {f['difference']:+.3f} [{ci.get('low')}, {ci.get('high')}]: "
                  f"{'faithful' if f['faithful'] else 'NOT shown faithful'}")
    print(json.dumps(results, indent=1, default=str)[:4000])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=24)
    main(parser.parse_args().examples)
