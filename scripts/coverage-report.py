#!/usr/bin/env python3
"""Print line coverage per folder and per file from a gcovr --json-summary file.

Usage: scripts/coverage-report.py <summary.json>   (run by `make coverage`)

A folder is the first path component, or engine/<name> under engine/ (engine/engines.c, the
composition root, is the row "engine/"). Issue 10 asks for >= 80 % from unit tests alone in
api/ and every engine folder; those rows carry a goal column.
"""
import json
import sys

GOAL = 80.0


def folder_of(path):
    parts = path.split("/")
    if parts[0] == "engine" and len(parts) > 2:
        return "engine/" + parts[1] + "/"
    return parts[0] + "/"


def pct(covered, total):
    return 100.0 * covered / total if total else 100.0


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    with open(sys.argv[1], encoding="utf-8") as f:
        files = json.load(f)["files"]
    folders = {}
    for entry in files:
        row = folders.setdefault(folder_of(entry["filename"]), [0, 0])
        row[0] += entry["line_covered"]
        row[1] += entry["line_total"]

    print("Line coverage from the unit tests (ctest -L unit), per file:")
    print(f"  {'file':<36} {'lines':>6} {'hit':>6} {'cover':>7}")
    for entry in sorted(files, key=lambda e: e["filename"]):
        print(f"  {entry['filename']:<36} {entry['line_total']:>6} {entry['line_covered']:>6} "
              f"{pct(entry['line_covered'], entry['line_total']):>6.1f}%")

    print()
    print("Per folder:")
    print(f"  {'folder':<20} {'lines':>6} {'hit':>6} {'cover':>7}  goal")
    all_hit = all_total = 0
    for name in sorted(folders):
        hit, total = folders[name]
        all_hit += hit
        all_total += total
        goal = ""
        if name == "api/" or (name.startswith("engine/") and name != "engine/"):
            goal = f"{'ok' if pct(hit, total) >= GOAL else 'below'} (>= {GOAL:.0f}%)"
        print(f"  {name:<20} {total:>6} {hit:>6} {pct(hit, total):>6.1f}%  {goal}")
    print(f"  {'total':<20} {all_total:>6} {all_hit:>6} {pct(all_hit, all_total):>6.1f}%")


if __name__ == "__main__":
    main()
