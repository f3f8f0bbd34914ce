"""The official OpenAI Python client against llmfile's server. Usage: openai_client.py URL

Replies from /v1/chat/completions, whole and streamed (the same text at temperature 0), the
model list, and /v1/completions.
"""

import sys

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
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0
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
        model=model, messages=messages, max_tokens=24, temperature=0, stream=True
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
    print("openai: client OK")


if __name__ == "__main__":
    main()
