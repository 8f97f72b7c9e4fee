"""A1111's prompt emphasis and long prompts, for the diffusers engine.

A1111 reads ``(word)``, ``((word))``, ``[word]`` and ``(word:1.3)`` as weights on the CLIP
vectors of those words, and never cuts a prompt at 75 tokens: it encodes it in chunks of 75
(A1111's ``sd_hijack_clip``). A plain diffusers pipeline does neither: it reads the brackets as
text and drops every token after the 75th. This module does what A1111's
``prompt_parser.parse_prompt_attention`` and ``sd_hijack_clip`` do, so the same prompt means the
same thing on both servers:

* ``(x)`` multiplies the weight of x by 1.1, ``((x))`` by 1.21, ``[x]`` divides it by 1.1,
  ``(x:1.3)`` multiplies it by 1.3; ``\\(`` and ``\\)`` are literal brackets;
* ``BREAK`` ends the current 75-token chunk;
* a chunk that fills up moves the words after its last comma (within 20 tokens) to the next one;
* the weighted vectors are rescaled to their original mean (A1111's "Original" emphasis;
  the ``emphasis`` option also takes "No norm", "Ignore" and "None", as in A1111).

Not supported (read as plain text): prompt editing ``[a:b:0.5]``, alternation ``[a|b]``,
``AND`` and textual-inversion embeddings. (``<lora:...>`` tags never get here: the server takes them out of
the prompt first and applies the LoRA, see sdserver/loras.py.)

Example:
    >>> parse_prompt_attention("a (red:1.5) fox, [blurry]")
    [['a ', 1.0], ['red', 1.5], [' fox, ', 1.0], ['blurry', 0.9090909090909091]]
"""

from __future__ import annotations

import re

from helpers.prompts import CLIP_TOKEN_LIMIT

re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)

CHUNK_LENGTH = CLIP_TOKEN_LIMIT  # tokens per chunk (75), without the start and end tokens


def parse_prompt_attention(text: str) -> list[list]:
    """Split a prompt into ``[text, weight]`` runs, exactly as A1111's parser does.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    >>> parse_prompt_attention('\\\\(literal\\\\]')
    [['(literal]', 1.0]]
    >>> parse_prompt_attention('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).')  # doctest: +NORMALIZE_WHITESPACE
    [['a ', 1.0], ['house', 1.5730000000000004], [' ', 1.1], ['on', 1.0], [' a ', 1.1], ['hill', 0.55],
     [', sun, ', 1.1], ['sky', 1.4641000000000006], ['.', 1.1]]
    >>> parse_prompt_attention('a cat BREAK a dog')
    [['a cat', 1.0], ['BREAK', -1], ['a dog', 1.0]]
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start_position: int, multiplier: float) -> None:
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for match in re_attention.finditer(text):
        part = match.group(0)
        weight = match.group(1)
        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_brackets.append(len(res))
        elif part == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif part == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif part == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, piece in enumerate(re.split(re_break, part)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([piece, 1.0])

    for position in round_brackets:  # unclosed brackets close at the end
        multiply_range(position, 1.1)
    for position in square_brackets:
        multiply_range(position, 1 / 1.1)

    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):  # merge runs of equal weight
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


class PromptEncoder:
    """Turns a prompt into the CLIP vectors the UNet reads, the way A1111 does (see module docstring).

    ``encode(prompt)`` returns a tensor of shape (1, 77 * chunks, width). For a plain prompt of at
    most 75 tokens it is exactly what the diffusers pipeline computes itself.
    """

    def __init__(self, tokenizer, text_encoder) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        # SD 1.x pads with the end token, SD 2.x with "!" (id 0): the tokenizer knows which.
        self.id_pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.id_end
        self.comma_token = tokenizer.get_vocab().get(",</w>")

    def tokenize_line(self, line: str, emphasis: str = "Original",
                      comma_padding_backtrack: int = 20) -> list[tuple[list[int], list[float]]]:
        """Chunks of 77 token ids (start, 75 tokens or padding, end) with one weight per token."""
        parsed = parse_prompt_attention(line) if emphasis != "None" else [[line, 1.0]]
        texts = [text for text, _ in parsed]
        tokenized = self.tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]

        chunks: list[tuple[list[int], list[float]]] = []
        tokens: list[int] = []
        weights: list[float] = []
        last_comma = -1

        def next_chunk() -> None:
            nonlocal tokens, weights, last_comma
            padding = CHUNK_LENGTH - len(tokens)
            chunk_tokens = [self.id_start] + tokens + [self.id_end] * padding + [self.id_end]
            chunk_weights = [1.0] + weights + [1.0] * padding + [1.0]
            chunks.append((chunk_tokens, chunk_weights))
            tokens, weights, last_comma = [], [], -1

        for ids, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            for token in ids:
                if token == self.comma_token:
                    last_comma = len(tokens)
                elif (comma_padding_backtrack and len(tokens) == CHUNK_LENGTH and last_comma != -1
                      and len(tokens) - last_comma <= comma_padding_backtrack):
                    # Move the words after the last comma to the next chunk, so they stay together.
                    moved_tokens, moved_weights = tokens[last_comma + 1:], weights[last_comma + 1:]
                    tokens, weights = tokens[:last_comma + 1], weights[:last_comma + 1]
                    next_chunk()
                    tokens, weights = moved_tokens, moved_weights
                if len(tokens) == CHUNK_LENGTH:
                    next_chunk()
                tokens.append(token)
                weights.append(weight)
        if tokens or not chunks:
            next_chunk()
        return chunks

    def _encode_chunk(self, ids: list[int], clip_skip: int):
        import torch

        device = self.text_encoder.device
        tokens = torch.tensor([ids], device=device)
        if self.id_pad != self.id_end:  # SD 2.x: everything after the first end token is padding
            first_end = ids.index(self.id_end)
            tokens[0, first_end + 1:] = self.id_pad
        if clip_skip > 1:  # A1111's "Clip skip": the output of an earlier layer, then the final norm
            out = self.text_encoder(tokens, output_hidden_states=True)
            hidden = out.hidden_states[-clip_skip]
            model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 5 dropped text_model
            return model.final_layer_norm(hidden)
        return self.text_encoder(tokens)[0]

    def encode(self, prompt: str, emphasis: str = "Original", clip_skip: int = 1,
               comma_padding_backtrack: int = 20, min_chunks: int = 1):
        """CLIP vectors for ``prompt``, weighted; at least ``min_chunks`` chunks (padded with empty ones)."""
        import torch

        chunks = self.tokenize_line(prompt, emphasis, comma_padding_backtrack)
        while len(chunks) < min_chunks:
            chunks.append(([self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2)))
        vectors = []
        with torch.no_grad():
            for ids, weights in chunks:
                z = self._encode_chunk(ids, clip_skip)
                if emphasis in ("Original", "No norm") and any(w != 1.0 for w in weights):
                    multipliers = torch.tensor(weights, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
                    original_mean = z.float().mean()
                    z = z * multipliers
                    if emphasis == "Original":  # keep the overall mean as it was
                        z = z * (original_mean / z.float().mean()).to(z.dtype)
                vectors.append(z)
        return torch.cat(vectors, dim=1)

    def chunk_count(self, prompt: str, emphasis: str = "Original", comma_padding_backtrack: int = 20) -> int:
        return len(self.tokenize_line(prompt, emphasis, comma_padding_backtrack))
