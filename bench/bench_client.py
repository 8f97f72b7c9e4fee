"""The A1111 client's overhead, and batching, against the kit's own server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json

import requests
from PIL import Image

from helpers.a1111 import A1111Client
from sdserver import serve_in_thread

from .timing import compare, line

FIELDS = {"steps": 4, "width": 256, "height": 256, "seed": 1, "sampler_name": "Euler a", "override_settings": {}}


def run(rounds: int = 15) -> list[str]:
    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview")
    try:
        client = A1111Client(server.url, auth="")
        session = requests.Session()

        def bare():
            body = session.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "a red fox", **FIELDS}).json()
            images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in body["images"]]
            for image in images:
                image.load()
            json.loads(body["info"])["all_seeds"]

        def helper():
            client.txt2img("a red fox", **FIELDS)

        t_client, t_bare = compare(helper, bare, rounds)
        out = [line("txt2img round trip", "A1111Client.txt2img", t_client, "requests.post + decode", t_bare)]

        def batch():
            client.txt2img("a red fox", batch_size=5, **FIELDS)

        def five():
            for _ in range(5):
                client.txt2img("a red fox", **FIELDS)

        t_batch, t_five = compare(batch, five, max(3, rounds // 3))
        out.append(line("5 images", "one request batch_size=5", t_batch, "five requests", t_five))
        return out
    finally:
        server.stop()
