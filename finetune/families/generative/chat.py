"""Talk to a chat model saved in a local directory: a multi-turn session through the model's chat template, each reply
streamed to stdout as it comes.

    finetune chat --model models/model [--system "You are terse."] [--prompts FILE] [--max-new-tokens 48
        --temperature 0.8 --top-p 0.95 --seed 0 --trust-remote-code]

Interactive (no --prompts): each line you type is your turn; the history is kept and sent with every turn. `/reset`
forgets the history (the system prompt stays), `/system TEXT` sets a new system prompt and starts over, `/exit` (or
end of input) ends. With --prompts FILE: each non-empty line of the file is a turn of the same conversation (the same
commands work there), each printed with its reply: a scripted session for checks and demos.
Generation settings default to the evaluate stage's (GenerativeEvaluate: temperature, top_p, max_new_tokens, seed), so a
reply here is what the report shows; the seed is the session's, each turn sampling on from where the last left off. A
history longer than the model's context (minus max_new_tokens) loses its oldest exchanges, as preprocess's
`long_conversations: truncate` does. Loading and its errors are generate.py's (one line on stderr, exit status 2).
"""
from __future__ import annotations

import argparse
import sys

from finetune.errors import UserError
from finetune.families.generative import GenerativeEvaluate

DEFAULTS = {name: GenerativeEvaluate.model_fields[name].default for name in ("max_new_tokens", "temperature", "top_p", "seed")}


class Session:
    """A conversation with one model: `ask` sends a user turn with the history and keeps the reply."""

    def __init__(self, model, tokenizer, system: str | None = None, **settings):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("the model's tokenizer has no chat template (tokenizer_config.json `chat_template`): it cannot hold "
                            "a conversation; use `finetune generate` to continue text with it")
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.settings = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
        self.history: list[dict] = []
        self.turns = 0

    def reset(self, system: str | None = None) -> None:
        self.history = []
        if system is not None:
            self.system = system or None

    def prompt(self) -> str:
        """The conversation so far through the template, ending with the assistant's generation prompt; the oldest
        exchanges dropped while it does not leave max_new_tokens of the context."""
        from finetune.families.generative.models import context_length

        context = context_length(self.model.config)
        while True:
            turns = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
            text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            too_long = context and len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + self.settings["max_new_tokens"] > context
            if not too_long or len(self.history) <= 1:
                return text
            self.history = self.history[2:]

    def ask(self, text: str, streamer=None) -> str:
        from finetune.families.generative.generation import generate

        self.history.append({"role": "user", "content": text})
        settings = self.settings
        reply = generate(self.model, self.tokenizer, self.prompt(), max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                         top_p=settings["top_p"], seed=settings["seed"] + self.turns, streamer=streamer).strip()
        self.turns += 1
        self.history.append({"role": "assistant", "content": reply})
        return reply


def handle(session: Session, line: str, out, streamer_for) -> bool:
    """One line of input: a command or a turn. False when the session should end."""
    line = line.strip()
    if not line:
        return True
    if line == "/exit":
        return False
    if line == "/reset":
        session.reset()
        print("(history cleared)", file=out)
    elif line.startswith("/system"):
        session.reset(line.removeprefix("/system").strip())
        print(f"(system prompt: {session.system or 'none'}; history cleared)", file=out)
    else:
        print("assistant: ", end="", file=out, flush=True)
        session.ask(line, streamer_for())
    return True


def main(argv: list[str] | None = None) -> None:
    from finetune.families.generative.generate import command_line, run_command

    parser = command_line(__doc__, "the chat model", DEFAULTS)  # evaluate's settings: a reply here is what the report shows
    parser.add_argument("--system", help="a system prompt (default: none, or the template's own)")
    parser.add_argument("--prompts", help="a file whose lines are the user's turns (default: read them interactively)")
    run_command(parser, run, argv)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from finetune.families.generative.generate import counting_streamer, load

    if args.prompts and not Path(args.prompts).is_file():
        raise UserError(f"--prompts {args.prompts}: no such file")
    model, tokenizer = load(args.model, args.trust_remote_code)
    session = Session(model, tokenizer, args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, seed=args.seed)
    if args.prompts:
        for line in Path(args.prompts).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("/"):
                print(f"user: {line.strip()}")
            if not handle(session, line, sys.stdout, lambda: counting_streamer(tokenizer)):
                break
        return
    print("chat: type a message; /reset, /system TEXT, /exit", file=sys.stderr)
    while True:
        try:
            line = input("you: ")
        except EOFError:
            break
        if not handle(session, line, sys.stdout, lambda: counting_streamer(tokenizer)):
            break


if __name__ == "__main__":
    main()
