"""How long each stack takes to evaluate under the unit tests' Pulumi mocks, and what it declares.

    .venv/bin/python bench/stack_eval.py [--rounds 5]

Prints, per stack, the resources the program registers (components, Kubernetes objects,
generated secrets) and the cold (first, imports included) and warm (median of the next rounds)
evaluation times. Runs the real program from the real stack files, as tests/unit does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.harness import Recorded, run_program


def family(resource: Recorded) -> str:
    if resource.type.startswith("onboarding:"):
        return "components"
    if resource.type.startswith("kubernetes:") and resource.kind != "kubernetes":
        return "kubernetes objects"
    if resource.type.startswith("random:"):
        return "generated secrets"
    return "providers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="warm evaluations per stack")
    args = parser.parse_args()

    for stack in ("prod", "preprod"):
        started = time.perf_counter()
        resources = run_program(stack)
        cold = time.perf_counter() - started
        warm = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            run_program(stack)
            warm.append(time.perf_counter() - started)
        counts = Counter(family(r) for r in resources)
        kinds = Counter(r.kind for r in resources if family(r) == "kubernetes objects")
        print(
            f"{stack}: {len(resources)} resources registered "
            + ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        )
        print(
            f"{stack}: kubernetes kinds " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        )
        print(
            f"{stack}: evaluation under mocks: first {cold:.2f} s, "
            f"then median {statistics.median(warm):.2f} s over {args.rounds} rounds"
        )


if __name__ == "__main__":
    main()
