"""Summarises cargo-mutants runs (scripts/mutants.sh) for docs/testing.md.

    python3 scripts/mutants_summary.py mutants/core-*       # one or more output directories

    python3 scripts/mutants_summary.py --recheck mutants/core mutants/core-*-of-8

counts the survivors of the shards as the later re-run in `--recheck DIR` found them (a run of
`scripts/mutants.sh core all --re ...` after new tests; the shards themselves may have run at
earlier commits).

    python3 scripts/mutants_summary.py --survivors-re mutants/core-*-of-8

prints instead one regular expression matching every missed mutant's name, for
`scripts/mutants.sh core all --re "$(...)"` (re-test the survivors after adding tests).

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


def survivors_re(dirs):
    import re

    names = set()
    for d in dirs:
        missed = pathlib.Path(d) / "mutants.out" / "missed.txt"
        if missed.exists():
            names.update(l.strip() for l in missed.read_text().splitlines() if l.strip())
    print("^(" + "|".join(re.escape(n) for n in sorted(names)) + ")$")


def outcomes(d):
    """(mutant name, file, kind) of every mutant of a finished run in `d`; None if unfinished."""
    path = pathlib.Path(d) / "mutants.out" / "outcomes.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("end_time") is None:
        print(f"(skipping {d}: still running)", file=sys.stderr)
        return None
    out = []
    for o in data["outcomes"]:
        mutant = o["scenario"]
        if isinstance(mutant, dict) and "Mutant" in mutant:  # not the baseline
            m = mutant["Mutant"]
            out.append((m["name"], m["file"], KINDS.get(o["summary"], o["summary"])))
    return out


def main(dirs, recheck_dir=None):
    recheck = {name: kind for name, _, kind in (outcomes(recheck_dir) or [])} if recheck_dir else {}
    per_file = collections.defaultdict(collections.Counter)
    missed = []
    shards = 0
    for d in dirs:
        run = outcomes(d)
        if run is None:
            continue
        shards += 1
        for name, file, kind in run:
            if kind == "missed":
                kind = recheck.get(name, kind)
            per_file[file][kind] += 1
            if kind == "missed":
                missed.append(name)
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
    if sys.argv[1:2] == ["--survivors-re"]:
        survivors_re(sys.argv[2:])
    elif sys.argv[1:2] == ["--recheck"]:
        main(sys.argv[3:], recheck_dir=sys.argv[2])
    else:
        main(sys.argv[1:])
