"""Summarises cargo-mutants runs (scripts/mutants.sh) for docs/testing.md.

    python3 scripts/mutants_summary.py mutants/core-*       # one or more output directories

A directory re-run with `--iterate` counts its `previously_caught.txt` as caught.

Prints, per file and in total: mutants tested, caught, timed out, missed and unviable, and the
score = (caught + timeout) / (caught + timeout + missed) (a mutant that makes the tests hang was
detected; unviable mutants do not compile and do not count), then every missed mutant.
"""
import collections
import json
import pathlib
import sys

KINDS = {
    "CaughtMutant": "caught",
    "Timeout": "timeout",
    "MissedMutant": "missed",
    "Unviable": "unviable",
}


def main(dirs):
    per_file = collections.defaultdict(collections.Counter)
    missed = []
    shards = 0
    for d in dirs:
        path = pathlib.Path(d) / "mutants.out" / "outcomes.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        if data.get("end_time") is None:
            print(f"(skipping {d}: still running)", file=sys.stderr)
            continue
        shards += 1
        # `--iterate` runs skip what an earlier run caught and list it here instead.
        previous = pathlib.Path(d) / "mutants.out" / "previously_caught.txt"
        if previous.exists():
            for line in previous.read_text().splitlines():
                if line.strip():
                    per_file[line.split(":", 1)[0]]["caught"] += 1
        for o in data["outcomes"]:
            mutant = o["scenario"]
            if not isinstance(mutant, dict) or "Mutant" not in mutant:
                continue  # the baseline
            m = mutant["Mutant"]
            kind = KINDS.get(o["summary"], o["summary"])
            per_file[m["file"]][kind] += 1
            if kind == "missed":
                missed.append(m["name"])
    total = collections.Counter()
    print("| file | tested | caught | timeout | missed | unviable | score |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted(per_file):
        c = per_file[f]
        total.update(c)
        print(row(f, c))
    print(row(f"**all ({shards} output dirs)**", total))
    print()
    for name in sorted(missed):
        print(f"- `{name}`")


def row(name, c):
    detected = c["caught"] + c["timeout"]
    viable = detected + c["missed"]
    score = f"{100 * detected / viable:.1f}%" if viable else "-"
    tested = viable + c["unviable"]
    return (
        f"| {name} | {tested} | {c['caught']} | {c['timeout']} | {c['missed']} | "
        f"{c['unviable']} | {score} |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
