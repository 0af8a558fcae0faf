"""Continue a prompt with a causal LM saved in a local directory, streaming the text to stdout as it comes.

    python -m finetune.families.generative.generate --model models/model "To be, or not to be" [--max-new-tokens 64 --temperature 0.8
        --top-p 0.95 --seed 0 --prompt-lookup 10 --trust-remote-code]

Sampling, seeding and the checks on the prompt are finetune.families.generative.generation.generate's (temperature 0 = greedy).
Prompt lookup decoding is on (10 draft tokens; --prompt-lookup 0 turns it off): the same greedy text, sooner.
The model and tokenizer load from the directory only (nothing is downloaded); code shipped with the model runs only
with --trust-remote-code. At the end, stderr gets the number of new tokens and tokens/s (prompt processing included).
A mistake the user can fix (no such directory, no causal-LM weights in it, a prompt too long for the context) is
one line on stderr and exit status 2, like the stages.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from finetune.errors import UserError


def counting_streamer(tokenizer):
    """A TextStreamer that also counts the new tokens (model.generate hands it the prompt first, then each token)."""
    from transformers import TextStreamer

    class CountingStreamer(TextStreamer):
        new_tokens = 0

        def put(self, value):
            if not self.next_tokens_are_prompt:
                self.new_tokens += value.numel()
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def load(model_dir: str, trust_remote_code: bool):
    """(model in eval mode, tokenizer) from model_dir, refusing a directory without a complete causal-LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(model_dir).is_dir():
        raise UserError(f"model directory {model_dir} does not exist")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, output_loading_info=True,
                                                           trust_remote_code=trust_remote_code, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # no config/weights/tokenizer files, or an architecture with no LM head
        first_line = str(error).strip().partition("\n")[0]  # an unknown architecture's error goes on to list 200 others
        raise UserError(f"cannot load a causal LM and its tokenizer from {model_dir}: {first_line}") from error
    if info["missing_keys"]:  # e.g. a BERT encoder: the LM head would be random weights
        raise UserError(f"{model_dir} holds no causal-LM head: {len(info['missing_keys'])} weights missing, e.g. "
                        f"{sorted(info['missing_keys'])[:3]}")
    return model.eval(), tokenizer


def command_line(doc: str, model_help: str, defaults: dict) -> argparse.ArgumentParser:
    """The parser `generate` and `chat` share: --help from the module docstring `doc`, --model, the sampling flags
    defaulting to `defaults` (max_new_tokens, temperature, top_p, seed) and --trust-remote-code."""
    name, _, description = doc.strip().partition("\n")
    parser = argparse.ArgumentParser(description=name, epilog=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=f"directory with {model_help} and its tokenizer (e.g. models/model)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults["max_new_tokens"], help="at most this many new tokens (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=defaults["temperature"], help="0 = greedy (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=defaults["top_p"], help="nucleus sampling mass (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="the same seed gives the same text (default: %(default)s)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run modelling code shipped in the directory")
    return parser


def run_command(parser: argparse.ArgumentParser, run, argv: list[str] | None) -> None:
    """run(parsed argv) with transformers quiet (its "Loading weights" bar would interleave with the streamed text, and a
    load report of missing weights becomes load's one-line error instead); a UserError is one line on stderr, exit 2."""
    from transformers.utils import logging

    args = parser.parse_args(argv)
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = command_line(__doc__, "the model", {"max_new_tokens": 64, "temperature": 0.8, "top_p": 0.95, "seed": 0})
    parser.add_argument("prompt", help="the text to continue")
    parser.add_argument("--prompt-lookup", type=int, default=10,
                        help="draft tokens copied from earlier text and checked in one step; 0 = off (default: %(default)s)")
    run_command(parser, run, argv)


def run(args: argparse.Namespace) -> None:
    from finetune.families.generative.generation import generate

    model, tokenizer = load(args.model, args.trust_remote_code)
    streamer = counting_streamer(tokenizer)
    start = time.perf_counter()
    generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
             top_p=args.top_p, seed=args.seed, streamer=streamer, prompt_lookup=args.prompt_lookup)
    seconds = time.perf_counter() - start
    print(f"{streamer.new_tokens} new tokens in {seconds:.2f} s: {streamer.new_tokens / seconds:.1f} tokens/s", file=sys.stderr)


if __name__ == "__main__":
    main()
