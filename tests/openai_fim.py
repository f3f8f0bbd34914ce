"""The official OpenAI Python client asks for fill-in-the-middle: `completions.create` with
`suffix`, on the FIM test model (scripts/make-fim-models). Usage: openai_fim.py URL

The server must run the SmolLM2 FIM model with the first run's `server_args` of
tests/fixtures/infill/smollm2-135m-fim-q4_1.json (-c 4096). The prompt must be as long as
llama-server's for the same prefix and suffix, and the completion, whole and streamed, the
text this server's /infill gives (which tests/infill.rs compares with llama-server's).
"""

import json
import pathlib
import sys
import urllib.request

import openai

FIXTURE = pathlib.Path(__file__).parent / "fixtures/infill/smollm2-135m-fim-q4_1.json"


def infill(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + "/infill",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)


def main() -> None:
    url = sys.argv[1]
    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="none", timeout=120,
                           max_retries=0)
    model = client.models.list().data[0].id
    cases = json.loads(FIXTURE.read_text())["runs"][0]["cases"]
    for case in cases:
        if case["name"] not in ("prefix-suffix", "empty-suffix"):
            continue
        request = case["request"]
        asked = dict(model=model, prompt=request["input_prefix"], suffix=request["input_suffix"],
                     max_tokens=request["n_predict"], temperature=0)
        whole = client.completions.create(**asked)
        text = whole.choices[0].text
        assert text, whole
        assert whole.usage.prompt_tokens == case["tokens_evaluated"], whole.usage
        streamed = "".join(
            choice.text
            for chunk in client.completions.create(**asked, stream=True)
            for choice in chunk.choices
        )
        assert streamed == text, (streamed, text)
        ours = infill(url, {k: request[k] for k in ("input_prefix", "input_suffix", "n_predict",
                                                    "temperature")})
        assert ours["content"] == text, (ours["content"], text)
        print(f"openai fim: {case['name']}: {text!r}, as /infill")

    try:
        client.completions.create(model=model, prompt="a", suffix=["b"], max_tokens=2)
    except openai.BadRequestError as error:
        assert "suffix must be a string" in str(error), error
    else:
        raise AssertionError("a suffix that is not a string was accepted")
    print("openai fim: all passed")


if __name__ == "__main__":
    main()
