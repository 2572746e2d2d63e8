"""Streaming quantization (fq.quant.quantize_file): peak RSS and throughput on a synthetic sharded fp16 checkpoint.

    nice -n 15 .venv/bin/python benchmarks/bench_stream.py --total-mb 1500 --largest 64 --shards 3 --dir /tmp

Writes a Hugging Face style checkpoint (``model.safetensors.index.json`` + shards; one tensor of ``--largest`` M
values, (8192, largest/8) for 64 M, the rest 4096 x 4096 matrices and a few biases), then in fresh child processes
(each measured on its own):

* ``import``: python -c "import fmq_np; numba kernels compiled/loaded" — the fixed overhead;
* ``read``: every tensor read through np.memmap and summed (plain reading of the file, same page cache);
* ``quantize_file``: the streaming quantizer into a packed .h5 (``--out-format safetensors``: dequantized shards);
  its MB/s, and MB per CPU second of the child (a figure that does not depend on how loaded the machine is).

Peak RSS is each child's own VmHWM. Prints a Markdown table and writes benchmarks/results/stream.json. The checkpoint
and outputs are deleted at the end.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def write_checkpoint(folder, total_mb, largest_m, shards, seed=0):
    import numpy as np
    from fmq_np.io import write_safetensors
    rng = np.random.default_rng(seed)
    shapes = [(8192, largest_m * 1024 * 1024 // 8192)]
    size = 2 * shapes[0][0] * shapes[0][1]
    while size + 2 * 4096 * 4096 <= total_mb * 1e6:
        shapes += [(4096, 4096), (4096,)]
        size += 2 * (4096 * 4096 + 4096)
    per = -(-len(shapes) // shards)
    wmap = {}
    for j in range(shards):
        part = shapes[j * per:(j + 1) * per]
        name = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
        arrays = {f"layer{j * per + i}.{'weight' if len(s) > 1 else 'bias'}":
                  (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float16) for i, s in enumerate(part)}
        write_safetensors(os.path.join(folder, name), arrays, metadata={"format": "pt"})
        wmap.update({k: name for k in arrays})
        del arrays
    index = os.path.join(folder, "model.safetensors.index.json")
    with open(index, "w") as fh:
        json.dump({"metadata": {"total_size": size}, "weight_map": wmap}, fh)
    return index, size, len(shapes)


_CHILD = {
    "import": "import fmq_np, numpy as np; fmq_np.quant.quantize(np.ones((4, 8), np.float32), bits=3)",
    "read": ("import sys, numpy as np, time\n"
             "from fmq_np.io.importers import read_st_index, read_st_header, _ST_DTYPES\n"
             "t = time.perf_counter(); n = 0\n"
             "for shard in read_st_index(sys.argv[1]):\n"
             "    start, entries, _ = read_st_header(shard)\n"
             "    for name, (d, s, b, e) in entries.items():\n"
             "        a = np.memmap(shard, dtype=_ST_DTYPES[d], mode='r', offset=start + b, shape=s)\n"
             "        float(a.sum(dtype=np.float32)); n += e - b; del a\n"
             "print(n / 1e6 / (time.perf_counter() - t))\n"),
    "quantize_file": ("import sys, fmq_np as fq\n"
                      "r = fq.quant.quantize_file(sys.argv[1], sys.argv[2], bits=int(sys.argv[3]), "
                      "method=sys.argv[4])\n"
                      "print(r['mb_per_s'], r['bytes_in'], r['bytes_out'], r['tensors'], r['seconds'])\n"),
}


#: appended to every child: its own peak RSS (VmHWM starts afresh at exec, unlike ru_maxrss, which would count the
#: parent's pages copied by fork)
_PEAK = ("\nimport resource\ntry:\n"
         "    print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024)\n"
         "except (OSError, IndexError):\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n")


def run_child(kind, *args):
    """``(stdout lines but the last, wall seconds, peak RSS bytes, CPU seconds)`` of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD[kind] + _PEAK, *map(str, args)], check=True,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    lines = out.stdout.strip().splitlines()
    return " ".join(lines[:-1]), wall, int(lines[-1]), cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--total-mb", type=float, default=1500)
    p.add_argument("--largest", type=int, default=64, help="values of the largest tensor, in M (2**20)")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--bits", type=int, default=3)
    p.add_argument("--method", default="ot")
    p.add_argument("--out-format", choices=("h5", "safetensors"), default="h5")
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--json", default=os.path.join(HERE, "results", "stream.json"))
    a = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="bench_stream-", dir=a.dir)
    try:
        # written by a child process: the parent stays small (its RSS would be copied into every child by fork)
        code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_stream as b; "
                f"print(*b.write_checkpoint({folder!r}, {a.total_mb}, {a.largest}, {a.shards}))")
        index, size, n = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                        text=True).stdout.split()
        size = int(size)
        largest = a.largest * 1024 * 1024
        out = os.path.join(folder, "q.h5" if a.out_format == "h5" else "q.safetensors")
        _, _, rss_import, _ = run_child("import")
        read_mbps, read_wall, rss_read, _ = run_child("read", index)
        res, q_wall, rss_q, q_cpu = run_child("quantize_file", index, out, a.bits, a.method)
        mbps, bytes_in, bytes_out, tensors, seconds = res.split()
        row = dict(total_bytes=size, tensors=int(tensors), shards=a.shards, largest_values=largest,
                   bits=a.bits, method=a.method, out_format=a.out_format,
                   rss_import_mb=rss_import / 1e6, rss_read_mb=rss_read / 1e6, rss_quantize_mb=rss_q / 1e6,
                   read_mb_per_s=float(read_mbps), quantize_mb_per_s=float(mbps), quantize_seconds=float(seconds),
                   quantize_cpu_seconds=q_cpu, quantize_mb_per_cpu_s=int(bytes_in) / 1e6 / max(q_cpu, 1e-9),
                   bytes_in=int(bytes_in), bytes_out=int(bytes_out), cpus=os.cpu_count(),
                   loadavg=os.getloadavg()[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(row, fh, indent=1)
    print("| checkpoint | largest tensor | peak RSS: import / read / quantize_file | read MB/s | quantize MB/s | "
          "on disk in -> out |")
    print("|---|---|---|---|---|---|")
    print(f"| {size / 1e9:.2f} GB fp16, {row['tensors']} tensors, {a.shards} shards | {largest / 2**20:.0f} M values "
          f"({2 * largest / 1e6:.0f} MB) | {row['rss_import_mb']:.0f} / {row['rss_read_mb']:.0f} / "
          f"{row['rss_quantize_mb']:.0f} MB | {row['read_mb_per_s']:.0f} | {row['quantize_mb_per_s']:.1f} "
          f"({row['quantize_mb_per_cpu_s']:.1f} per CPU-s; {a.method} {a.bits}-bit -> {a.out_format}) | "
          f"{row['bytes_in'] / 1e6:.0f} MB -> "
          f"{row['bytes_out'] / 1e6:.0f} MB |")
    return row


if __name__ == "__main__":
    main()
