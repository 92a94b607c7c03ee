"""A worked example: a character-level GRU text generator as people write it (nn.Embedding, a
two-layer nn.GRU with its own (layers, batch, hidden) state, a linear head giving logits),
trained on a short public-domain text shipped below, exported with the toolkit (token input,
logits output, sampled feedback, and its vocabulary: the character of each id), verified against
eager PyTorch on its own text (every character id included), and sampled with temperature by the
torch-free runtime, the whole loop (step, softmax, draw, next token) in one onnxruntime run.

    python examples/char_generator/char_generator.py --out out/char_generator [--epochs 100]
        [--temperature 0.8] [--seed 0] [--length 300]

The folder carries its vocabulary, so the command line prints text too (the same text for the
same seed):

    rnn generate out/char_generator --prompt "Alice was " --steps 300 --temperature 0.8 --seed 0

The module is the user's; the toolkit needs its step signature, forward(char, h) -> (logits, h),
described as inputs/outputs/states (the README's "character-level GRU generator").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter 1: public domain.
TEXT = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, and what is the use of a book, thought Alice, without "
    "pictures or conversations? So she was considering in her own mind (as well as she could, for "
    "the hot day made her feel very sleepy and stupid), whether the pleasure of making a "
    "daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a "
    "White Rabbit with pink eyes ran close by her. There was nothing so very remarkable in that; "
    "nor did Alice think it so very much out of the way to hear the Rabbit say to itself, Oh dear! "
    "Oh dear! I shall be late! But when the Rabbit actually took a watch out of its "
    "waistcoat-pocket, and looked at it, and then hurried on, Alice started to her feet, for it "
    "flashed across her mind that she had never before seen a rabbit with either a "
    "waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across "
    "the field after it, and fortunately was just in time to see it pop down a large rabbit-hole "
    "under the hedge. In another moment down went Alice after it, never once considering how in "
    "the world she was to get out again."
)
ALPHABET = sorted(set(TEXT))  # the vocabulary: every character of the text, in a fixed order
EMBED, HIDDEN, LAYERS = 16, 64, 2


class CharGRU(nn.Module):
    """One step: a character id in, logits over the next character out, the GRU's state carried."""

    def __init__(self, vocabulary: int = len(ALPHABET)) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, EMBED)
        self.gru = nn.GRU(EMBED, HIDDEN, num_layers=LAYERS)
        self.head = nn.Linear(HIDDEN, vocabulary)

    def forward(self, char, h):  # char (batch,) int64, h (layers, batch, hidden)
        out, h = self.gru(self.embed(char).unsqueeze(0), h)
        return self.head(out[0]), h


def make() -> CharGRU:
    """The factory verification rebuilds the module with (weights come from the folder)."""
    return CharGRU()


def encode(text: str) -> np.ndarray:
    return np.array([ALPHABET.index(c) for c in text], dtype=np.int64)


def decode(ids) -> str:
    return "".join(ALPHABET[int(i)] for i in ids)


def train(module: CharGRU, ids: np.ndarray, epochs: int, seed: int = 0) -> list[float]:
    """Next-character training over windows of 64 characters, the windows a batch; loss per epoch."""
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    windows = torch.from_numpy(np.stack([ids[i : i + 65] for i in range(0, len(ids) - 65, 16)]))  # (n, 65)
    losses = []
    for _ in range(epochs):
        h = torch.zeros(LAYERS, len(windows), HIDDEN)
        loss = torch.zeros(())
        for t in range(64):
            logits, h = module(windows[:, t], h)
            loss = loss + nn.functional.cross_entropy(logits, windows[:, t + 1])
        optimiser.zero_grad()
        (loss / 64).backward()
        nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimiser.step()
        losses.append(float(loss.detach()) / 64)
    return losses


SIGNATURE = {
    "inputs": [{"name": "char", "vocabulary": len(ALPHABET)}],  # token ids: int64 (batch,)
    "outputs": [{"name": "logits", "vocabulary": len(ALPHABET)}],  # sampled into the next char
    "states": [{"name": "h", "shape": [LAYERS, "batch", HIDDEN]}],  # nn.GRU's own layout
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/char_generator"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import runtime
    from export import export_module, verify_folder

    ids = encode(TEXT)
    torch.manual_seed(0)  # the initial weights: a rerun gives the same folder
    module = make()
    losses = train(module, ids, args.epochs)
    print(f"trained: loss {losses[0]:.3f} -> {losses[-1]:.3f}", file=sys.stderr)
    folder = export_module(module, args.out, vocabulary=ALPHABET, **SIGNATURE)  # each id's text, in the manifest
    report = verify_folder(folder, factory=make, inputs={"char": ids[:200]}, trust=True)  # its own text too
    print(f"verified: {'passed' if report.passed else 'FAILED'} ({folder / 'verify.json'})", file=sys.stderr)

    model = runtime.load(folder)  # numpy + onnxruntime only from here
    vocabulary = model.vocabulary  # the folder's own: text in and out without this file's ALPHABET
    prompt = vocabulary.encode("Alice was ")
    _, state = model.predict({"char": prompt[:-1].reshape(-1, 1)})  # warm the state up on the prompt
    sampler = runtime.Sampler("temperature", temperature=args.temperature, seed=args.seed)
    tokens, _ = model.generate({"char": prompt[-1:]}, args.length, state, sampler=sampler)
    print(vocabulary.decode(prompt) + vocabulary.decode(tokens[:, 0]))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
