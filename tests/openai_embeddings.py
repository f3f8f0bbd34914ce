"""The official OpenAI Python client's embeddings against llmfile's server (Gemma 3 270M).
Usage: openai_embeddings.py URL

`client.embeddings.create` with one text, a list of texts, a list of token ids and a list of
token lists; the client asks for base64 unless told float, so both encodings are read. The
vectors are compared with llama-embedding's for the same texts (the parity fixture), with
tests/parity.rs's bound: cosine 0.999, or 1.25 times llama.cpp's own disagreement between its
flash-attention paths where that is larger.
"""

import json
import math
import pathlib
import sys
import urllib.request

import openai

FIXTURE = pathlib.Path(__file__).parent / "fixtures/gemma3-270m-q4_k_m/embeddings.json"


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def bound(case):
    return min(0.999, 1 - 1.25 * (1 - case["flash_attn_cosine"]))


def tokenize(url, text):
    """The text's ids as the server's llama.cpp /tokenize gives them, BOS included."""
    body = json.dumps({"content": text, "add_special": True, "parse_special": True}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/tokenize", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)["tokens"]


def main() -> None:
    base_url = sys.argv[1].rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", timeout=120, max_retries=0)
    model = client.models.list().data[0].id
    reference = json.loads(FIXTURE.read_text())
    texts = [case["text"] for case in reference["cases"]]
    wants = [case["embedding"] for case in reference["cases"]]
    bounds = [bound(case) for case in reference["cases"]]

    one = client.embeddings.create(model=model, input=texts[1])
    assert one.object == "list", one
    assert len(one.data) == 1 and one.data[0].index == 0, one
    assert len(one.data[0].embedding) == len(wants[1]), len(one.data[0].embedding)
    assert one.usage.prompt_tokens == reference["cases"][1]["tokens"], one.usage
    similarity = cosine(one.data[0].embedding, wants[1])
    assert similarity >= bounds[1], similarity
    print(f"openai: one text (base64), cosine {similarity:.6f} with llama-embedding")

    batched = client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert [d.index for d in batched.data] == list(range(len(texts))), batched.data
    assert batched.usage.prompt_tokens == sum(c["tokens"] for c in reference["cases"])
    similarities = [cosine(d.embedding, want) for d, want in zip(batched.data, wants)]
    assert all(s >= b for s, b in zip(similarities, bounds)), (similarities, bounds)
    print(f"openai: {len(texts)} texts in one request, cosines {similarities} with llama-embedding")

    tokenized = [tokenize(sys.argv[1], text) for text in texts[:2]]
    ids = client.embeddings.create(model=model, input=tokenized[1])
    assert len(ids.data) == 1, ids
    assert cosine(ids.data[0].embedding, one.data[0].embedding) > 0.99999
    lists = client.embeddings.create(model=model, input=tokenized)
    assert len(lists.data) == 2, lists
    for data, text in zip(lists.data, texts[:2]):
        alone = client.embeddings.create(model=model, input=text).data[0].embedding
        assert cosine(data.embedding, alone) > 0.99999
    print("openai: token ids and lists of token ids embed as their texts")

    try:
        client.embeddings.create(model=model, input=[])
    except openai.BadRequestError as error:
        assert "empty" in str(error), error
    else:
        raise AssertionError("an empty input is refused")
    print("openai: embeddings OK")


if __name__ == "__main__":
    main()
