"""Write two tiny random GGUF models for the real llama.cpp lane: ``python llama_models.py FOLDER``.

Run with the llama venv's python (tests/real_llama.py does), since it needs ``gguf`` and numpy, which the
kit's own venv does not have. It writes ``FOLDER/kit-tiny-chat.gguf`` and ``FOLDER/kit-tiny-embed.gguf``:
``llama`` architecture, 2 layers, hidden size 64, 4 heads, a context of 2048, a byte-level ("gpt2") tokenizer
of the 256 bytes, ~40 merges and 3 ChatML tokens, and a ChatML template. The embedding model pools by the
mean: without that llama-cpp-python answers one vector per token. Both are seeded, so the files are the
same on every run. The weights are noise: the text is gibberish, and tests check its shape only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np

HIDDEN, LAYERS, HEADS, FFN, CONTEXT = 64, 2, 4, 128, 2048
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ["the", "and", "ing", "er", "in", "on", "an", "re", "at", "en", "or", "es", "is", "ed", "it", "al",
         "st", "to", "Ġthe", "Ġa", "Ġs", "Ġc", "Ġw", "Ġo", "Ġf", "Ġb", "Ġp", "Ġm", "Ġt"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")


def byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: each byte as the printable character its BPE vocabulary uses."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[byte] for byte in range(256)]


def vocabulary() -> tuple[list[str], list[str], list[int], set[int]]:
    """Tokens, merges, token types and the ids of printable tokens (ASCII letters, digits, punctuation, space)."""
    symbols = byte_symbols()
    tokens, merges = list(symbols), []
    for word in WORDS:  # each word merged left to right, so every merge joins two tokens that exist
        piece = word[0]
        for char in word[1:]:
            if piece + char not in tokens:
                merges.append(f"{piece} {char}")
                tokens.append(piece + char)
            piece += char
    printable = {i for i, byte in enumerate(range(256)) if 0x20 <= byte < 0x7F} | set(range(256, len(tokens)))
    types = [1] * len(tokens) + [3] * len(SPECIAL)  # 1 normal, 3 control
    return tokens + SPECIAL, merges, types, printable


def write_model(path: Path, name: str, seed: int, pooling: bool) -> None:
    rng = np.random.default_rng(seed)
    tokens, merges, types, printable = vocabulary()

    def noise(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if pooling:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    vocab = len(tokens)
    # Printable text from noise: dimension 0 of every token's embedding is 1, so after the RMS norms it stays
    # large; the output layer's column 0 is +1 for printable tokens and -1 for the rest (control bytes, broken
    # UTF-8, the ChatML tokens), which outweighs the random part of every logit.
    embed = noise(vocab, HIDDEN, scale=0.5)
    embed[:, 0] = 4.0
    output = noise(vocab, HIDDEN, scale=0.5)
    output[:, 0] = [1.0 if i in printable else -1.0 for i in range(vocab)]
    writer.add_tensor("token_embd.weight", embed)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.add_tensor("output.weight", output)
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", noise(HIDDEN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", noise(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_up.weight", noise(FFN, HIDDEN))
        writer.add_tensor(f"{block}.ffn_down.weight", noise(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, seed, pooling in (("kit-tiny-chat", 0, False), ("kit-tiny-embed", 1, True)):
        partial = out / f"{name}.gguf.partial"  # renamed when complete: a killed run leaves no half model
        write_model(partial, name, seed, pooling)
        partial.replace(out / f"{name}.gguf")


if __name__ == "__main__":
    main(sys.argv[1])
