"""Fuzz every file format fmq_np reads: N mutations per format, each loaded in a worker process with a time budget.

Mutations (tests/fuzzing.py, drawn from the seed, the four kinds in turn): bit flips, truncation, a zeroed 512-byte
block, random 8-byte overwrites. Formats: a float checkpoint as fmq_np writes it now (``fq.io.save`` of a small MLP:
HDF5 1.10 object format, checksummed metadata), the same checkpoint in the pre-issue-12 'earliest' format
(``legacy_float_h5``: no metadata checksums, variable-length strings; still read), a quantized model (format
version 2: its small tensors in a pack) and the committed version 1 one (``quantized_v1_h5``), ``.npz``,
``.safetensors``. Prints, per format, the counts of {loaded identically, loaded faithfully (safetensors: equals a plain
parse of the mutated bytes, the format has no data checksum), FormatError, loaded but different, other exception,
hang}, then every case that is not one of the first three; writes benchmarks/results/fuzz_files.json. A load that
misses the budget is loaded again alone with ``--recheck`` seconds: one that then finishes is reported as slow (with
its outcome and time), one that does not as a hang.

    python benchmarks/fuzz_files.py [--n 1000] [--budget 20] [--recheck 300] [--jobs 2] [--formats float_h5 npz ...]
                                    [--seeds 42 399 ...]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import fuzzing  # noqa: E402

OK = ("identical", "faithful", "format_error")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="mutations per format (seeds 0..n-1)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds a load may take before it counts as a hang")
    ap.add_argument("--recheck", type=float, default=300.0, help="budget for loading a hung case again, alone")
    ap.add_argument("--seeds", type=int, nargs="+", help="run these seeds instead of 0..n-1")
    ap.add_argument("--jobs", type=int, default=2, help="formats fuzzed at once (one worker process each)")
    ap.add_argument("--formats", nargs="+", default=list(fuzzing.FORMATS), choices=fuzzing.FORMATS)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fuzz_files.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pristine = fuzzing.make_files(tmp)

        def run(fmt):
            t0 = time.perf_counter()
            folder = os.path.join(tmp, fmt)
            os.makedirs(folder)
            res = fuzzing.run_mutations(fmt, pristine[fmt], args.seeds or range(args.n), folder, args.budget)
            return fmt, res, time.perf_counter() - t0

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            runs = list(pool.map(run, args.formats))
        slow = {}
        for fmt, res, _ in runs:                    # hung cases again, alone, with the long budget
            for i, (seed, what, outcome, _) in enumerate(res):
                if outcome == "hang":
                    t0 = time.perf_counter()
                    (_, _, again, detail), = fuzzing.run_mutations(fmt, pristine[fmt], [seed], tmp, args.recheck)
                    if again != "hang":
                        slow.setdefault(fmt, []).append(dict(seed=seed, mutation=what, outcome=again, detail=detail,
                                                             seconds=time.perf_counter() - t0))
                        res[i] = (seed, what, again, f"slow (over {args.budget:g} s): {detail}")
        sizes = {fmt: os.path.getsize(pristine[fmt]) for fmt in args.formats}
    print(f"| format | file bytes | mutations | identical | faithful | FormatError | different | other | hang | "
          f"slow (> {args.budget:g} s, counted by outcome) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    report = {"n": args.n, "seeds": args.seeds, "budget_s": args.budget, "recheck_s": args.recheck, "formats": {}}
    for fmt, res, secs in runs:
        c = fuzzing.counts(res)
        print(f"| {fmt} | {sizes[fmt]} | {len(res)} | {c['identical']} | {c['faithful']} | {c['format_error']} | "
              f"{c['different']} | {c['other']} | {c['hang']} | {len(slow.get(fmt, []))} | {secs:.0f} |")
        bad = [dict(seed=s, mutation=w, outcome=o, detail=d) for s, w, o, d in res if o not in OK]
        by_kind = {k: fuzzing.counts([r for r in res if f" {k}:" in r[1]]) for k in fuzzing.KINDS}
        report["formats"][fmt] = dict(file_bytes=sizes[fmt], counts=c, by_kind=by_kind, seconds=secs, not_ok=bad,
                                      slow=slow.get(fmt, []))
    for fmt, info in report["formats"].items():
        for b in info["not_ok"]:
            print(f"{fmt}: {b['outcome']}: {b['mutation']}: {b['detail']}")
        for b in info["slow"]:
            print(f"{fmt}: slow ({b['seconds']:.0f} s, then {b['outcome']}): {b['mutation']}: {b['detail']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
