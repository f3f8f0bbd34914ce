"""The official OpenAI Python client against llmfile's server. Usage: openai_client.py URL

Replies from /v1/chat/completions, whole and streamed (the same text at temperature 0), the
model list, /v1/completions, logprobs on both, logit_bias banning a token, frequency and
presence penalties, and stream_options.include_usage.
"""

import json
import math
import sys
import urllib.request

import openai


def main() -> None:
    base_url = sys.argv[1].rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", timeout=120, max_retries=0)

    models = client.models.list()
    model = models.data[0].id
    print(f"openai: model {model!r}")

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."},
    ]
    # Both replies evaluate the whole prompt in one pass: a reply that reused the other's cached
    # prompt would take its first token from a pass over the last prompt token alone, which
    # rounds differently and may flip a near tie (llama-server's cache_prompt does the same).
    fresh = {"cache_prompt": False}
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0, extra_body=fresh
    )
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion", whole
    assert whole.choices[0].message.role == "assistant", whole
    assert text and text.strip(), whole
    assert whole.choices[0].finish_reason in ("stop", "length"), whole
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0, whole
    for marker in ("<end_of_turn>", "<start_of_turn>", "<|im_end|>"):
        assert marker not in text, text
    print(f"openai: chat reply {text!r}")

    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0, stream=True,
        extra_body=fresh,
    )
    pieces = []
    finish_reason = None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish_reason = choice.finish_reason or finish_reason
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(pieces) == text, (pieces, text)
    assert finish_reason == whole.choices[0].finish_reason, finish_reason
    print(f"openai: streamed the same reply in {len(pieces)} chunks")

    completion = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert completion.choices[0].text.strip(), completion
    assert completion.choices[0].finish_reason == "length", completion
    print(f"openai: completion {completion.choices[0].text!r}")

    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
    except openai.BadRequestError as error:
        assert "messages is empty" in str(error), error
    else:
        raise AssertionError("an empty conversation is refused")
    check_logprobs(client, model, messages, text)
    check_logit_bias_and_penalties(client, model)
    check_include_usage(client, model, messages)
    print("openai: client OK")


def check_logprobs(client, model, messages, text):
    """Each token's log-probability with its top alternatives: the chosen token among them at
    temperature 0, the tokens spelling the reply, streamed as whole."""
    # Without the prompt cache both read the prompt in one pass, so the logits are the same.
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0, logprobs=True,
        top_logprobs=3, extra_body={"cache_prompt": False},
    )
    content = whole.choices[0].logprobs.content
    assert "".join(t.token for t in content).startswith(text.rstrip()), content
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3, entry
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token, entry
        best = entry.top_logprobs[0]
        assert best.logprob >= entry.logprob - 1e-4, entry
        assert best.token == entry.token, entry
    total = sum(math.exp(t.logprob) for t in content[0].top_logprobs)
    assert 0 < total <= 1.0001, content[0]
    streamed = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0, logprobs=True,
        top_logprobs=3, stream=True, extra_body={"cache_prompt": False},
    )
    pieces = [entry for chunk in streamed for choice in chunk.choices
              if choice.logprobs for entry in choice.logprobs.content]
    assert [p.token for p in pieces] == [c.token for c in content], (pieces, content)
    assert all(abs(p.logprob - c.logprob) < 1e-4 for p, c in zip(pieces, content))

    completion = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text, logprobs
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs), logprobs
    offsets = [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets, logprobs
    print(f"openai: logprobs of {len(content)} chat tokens and {len(logprobs.tokens)} text tokens")


def check_logit_bias_and_penalties(client, model):
    """A token banned by logit_bias never comes; the penalties change a greedy completion."""
    prompt = "Count: one, two, three, four, five, six, seven,"
    plain = client.completions.create(
        model=model, prompt=prompt, max_tokens=16, temperature=0, logprobs=1
    )
    first = plain.choices[0].logprobs.tokens[0]
    request = urllib.request.Request(
        str(client.base_url).removesuffix("v1/") + "completion",
        data=json.dumps({"prompt": prompt, "n_predict": 1, "temperature": 0,
                         "return_tokens": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        first_id = json.load(reply)["tokens"][0]
    banned = client.completions.create(
        model=model, prompt=prompt, max_tokens=16, temperature=0, logprobs=1,
        logit_bias={str(first_id): -100},
    )
    assert first not in banned.choices[0].logprobs.tokens[:1], banned
    penalized = client.completions.create(
        model=model, prompt=prompt, max_tokens=16, temperature=0, frequency_penalty=2.0,
        presence_penalty=2.0,
    )
    assert penalized.choices[0].text != plain.choices[0].text, penalized
    print(f"openai: logit_bias banned {first!r}; penalties changed the completion")


def check_include_usage(client, model, messages):
    """With stream_options.include_usage the stream ends with a chunk of the usage alone."""
    chunks = list(client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0, chunks[-1]
    assert all(chunk.usage is None for chunk in chunks[:-1]), chunks
    print("openai: include_usage gave the usage in a last chunk")


if __name__ == "__main__":
    main()
