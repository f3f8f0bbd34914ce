"""The official Ollama Python client against llmfile's server. Usage: ollama_client.py URL

The model list, its description, the running models, chat replies whole and streamed (the
same text at temperature 0), generate, JSON output, a refused option, and embeddings.
"""

import json
import sys
import urllib.request

import ollama


def main() -> None:
    url = sys.argv[1].rstrip("/")
    client = ollama.Client(host=url, timeout=120)

    with urllib.request.urlopen(f"{url}/api/version", timeout=30) as reply:
        version = json.load(reply)["version"]
    assert version, version
    print(f"ollama: version {version!r}")

    models = client.list().models
    assert len(models) == 1, models
    model = models[0].model
    assert models[0].details.format == "gguf", models[0]
    assert models[0].details.family == "gemma3", models[0]
    assert models[0].size > 100_000_000, models[0]
    print(f"ollama: model {model!r}, {models[0].details.parameter_size}, "
          f"{models[0].details.quantization_level}")

    shown = client.show(model)
    assert shown.modelinfo["general.architecture"] == "gemma3", shown.modelinfo
    assert shown.modelinfo["gemma3.context_length"] > 0, shown.modelinfo
    assert "completion" in shown.capabilities, shown.capabilities
    assert shown.template, shown
    print("ollama: show OK")

    running = client.ps().models
    assert [m.model for m in running] == [model], running
    assert running[0].context_length == 4096, running[0]

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."},
    ]
    options = {"temperature": 0, "num_predict": 24}
    whole = client.chat(model=model, messages=messages, options=options, stream=False)
    text = whole.message.content
    assert whole.done and whole.message.role == "assistant", whole
    assert text and text.strip(), whole
    assert whole.done_reason in ("stop", "length"), whole
    assert whole.eval_count > 0 and whole.prompt_eval_count > 0, whole
    for marker in ("<end_of_turn>", "<start_of_turn>"):
        assert marker not in text, text
    print(f"ollama: chat reply {text!r}")

    pieces = []
    last = None
    for part in client.chat(model=model, messages=messages, options=options, stream=True):
        pieces.append(part.message.content or "")
        last = part
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(pieces) == text, (pieces, text)
    assert last.done and last.done_reason == whole.done_reason, last
    print(f"ollama: streamed the same reply in {len(pieces)} objects")

    generated = client.generate(
        model=model, prompt="The capital of France is", raw=True,
        options={"temperature": 0, "num_predict": 8},
    )
    assert generated.response.strip(), generated
    assert generated.done_reason == "length" and generated.eval_count == 8, generated
    print(f"ollama: generate {generated.response!r}")

    as_json = client.generate(
        model=model, prompt="Describe a cat as JSON with the keys name and age.",
        format={"type": "object", "properties": {"name": {"type": "string"},
                "age": {"type": "integer"}}, "required": ["name", "age"]},
        options={"temperature": 0, "num_predict": 200},
    )
    cat = json.loads(as_json.response)
    assert isinstance(cat["name"], str) and isinstance(cat["age"], int), cat
    print(f"ollama: JSON {cat}")

    try:
        client.generate(model=model, prompt="Hi", options={"mirostat": 2})
    except ollama.ResponseError as error:
        assert error.status_code == 400, error
        assert "mirostat" in error.error, error.error
    else:
        raise AssertionError("an option that is not honoured is refused")
    embedded = client.embed(model=model, input=["Hello", "The sky is blue"])
    assert len(embedded.embeddings) == 2, embedded
    for vector in embedded.embeddings:
        assert abs(sum(v * v for v in vector) - 1) < 1e-3, vector[:4]
    print(f"ollama: embed gave {len(embedded.embeddings)} vectors of {len(vector)}")
    print("ollama: client OK")


if __name__ == "__main__":
    main()
