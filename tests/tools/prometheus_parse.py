#!/usr/bin/env python3
"""Parse Prometheus text exposition from stdin with the prometheus_client parser and print it as
JSON: {"family": {"type": ..., "help": ..., "samples": [[name, {labels}, value], ...]}}.

Used by tests/monitor.rs so that /metrics is checked by a real Prometheus parser, not by string
matching. Fails (exit 1) on anything the parser refuses.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in out:
            raise SystemExit(f"family {family.name} appears twice")
        samples = []
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and math.isinf(value):
                value = "+Inf" if value > 0 else "-Inf"
            samples.append([s.name, dict(s.labels), value])
        out[family.name] = {"type": family.type, "help": family.documentation, "samples": samples}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
