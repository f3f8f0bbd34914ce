"""llmfile's /metrics through Prometheus's own text parser. Usage: prometheus_metrics.py URL

Run after the other clients, so that there is something counted: every llama-server metric is
there with its type, and the token counters have counted.
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Sample names and types; the parser names a counter's family without its `_total`.
EXPECTED = {
    "llamacpp:prompt_tokens_total": "counter",
    "llamacpp:prompt_seconds_total": "counter",
    "llamacpp:tokens_predicted_total": "counter",
    "llamacpp:tokens_predicted_seconds_total": "counter",
    "llamacpp:n_decode_total": "counter",
    "llamacpp:n_busy_slots_per_decode": "gauge",
    "llamacpp:prompt_tokens_seconds": "gauge",
    "llamacpp:predicted_tokens_seconds": "gauge",
    "llamacpp:kv_cache_usage_ratio": "gauge",
    "llamacpp:kv_cache_tokens": "gauge",
    "llamacpp:requests_processing": "gauge",
    "llamacpp:requests_deferred": "gauge",
}


def main() -> None:
    with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/metrics", timeout=60) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4"), reply.headers
        text = reply.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family
        for sample in family.samples:
            found[sample.name] = (family.type, sample.value)
    assert set(found) == set(EXPECTED), sorted(found)
    for name, kind in EXPECTED.items():
        assert found[name][0] == kind, (name, found[name])
    for name in ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total"):
        assert found["llamacpp:" + name][1] > 0, (name, found)
    print(f"metrics: {len(found)} metrics, {found['llamacpp:tokens_predicted_total'][1]:.0f} tokens predicted")


if __name__ == "__main__":
    main()
