"""Writes kit-demo.safetensors, the kit's demo LoRA (run: python data/loras/make_kit_demo.py).

It is a kohya/A1111-style LoRA file with one rank-2 adapter on the self-attention output of the UNet's
middle block (SD 1.x and 2.x both have 1280 channels there), filled with small seeded random numbers.
It was never trained: on a real model it changes the picture a little (not a style); on the kit's
preview engine a LoRA only changes the placeholder; on the tests' tiny model its shapes do not fit and
the server says it could not be loaded. Its use is to show the <lora:kit-demo:weight> mechanics.
No torch needed: the file is written with the standard library (safetensors is a JSON header + raw bytes).
"""

import json
import random
import struct
from pathlib import Path

PREFIX = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0"
RANK, CHANNELS = 2, 1280
METADATA = {
    "ss_output_name": "kit-demo",
    "ss_network_module": "networks.lora",
    "ss_network_dim": str(RANK),
    "ss_network_alpha": str(RANK),
    "ss_base_model_version": "sd_v1",
    "description": "The course kit's demo LoRA: seeded random numbers, never trained; it shows how "
                   "<lora:kit-demo:weight> works and changes a real SD 1.x/2.x picture a little. "
                   "On the kit's preview engine LoRAs only change the placeholder.",
}


def main(target: Path = Path(__file__).with_name("kit-demo.safetensors")) -> Path:
    rng = random.Random(14)
    tensors = {  # name: (shape, float32 values)
        f"{PREFIX}.alpha": ((), [float(RANK)]),
        f"{PREFIX}.lora_down.weight": ((RANK, CHANNELS), [rng.gauss(0, 0.02) for _ in range(RANK * CHANNELS)]),
        f"{PREFIX}.lora_up.weight": ((CHANNELS, RANK), [rng.gauss(0, 0.02) for _ in range(CHANNELS * RANK)]),
    }
    header, data = {"__metadata__": METADATA}, b""
    for name, (shape, values) in sorted(tensors.items()):
        raw = struct.pack(f"<{len(values)}e", *values)  # float16
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the header is padded to 8 bytes, as safetensors writes it
    target.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return target


if __name__ == "__main__":
    print(main())
