"""Whether pairs of samples.jsonl files hold the same completions, in the same order.

    python results/vllm-cpu/same_samples.py A.jsonl B.jsonl [C.jsonl D.jsonl ...] > same-samples.json
"""

import json
import sys
from pathlib import Path


def completions(path: str) -> list[str]:
    return [json.loads(line)["completion"] for line in Path(path).read_text().splitlines()]


def main(paths: list[str]) -> None:
    pairs = []
    for a, b in zip(paths[::2], paths[1::2]):
        left, right = completions(a), completions(b)
        pairs.append({"a": a, "b": b, "samples": [len(left), len(right)], "identical": left == right})
    print(json.dumps(pairs, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
