"""Build the datasets fmq_np ships under data/ from the read-only originals in ../shared/data.

Run from the repository root:  python data/build_data.py [--shared ../shared/data]

Each output is checked against the SHA-256 below (also in data/PROVENANCE.md), so a rebuild is verifiably identical.
Only what the package needs at run time is copied; the originals are never required afterwards.
"""
import argparse
import hashlib
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# file -> SHA-256 of the shipped copy. MNIST / Fashion-MNIST / faces / natural images arrive with the reproduction work.
SHIPPED = {"digits.npz": "6f801551877abf69fbf3711373bb642a18dc933430a3385cd6febc235225ea6f"}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "data"),
                        help="folder holding the original .npz files (default: ../shared/data)")
    args = parser.parse_args(argv)
    for name, expected in SHIPPED.items():
        src = os.path.join(args.shared, name)
        if not os.path.isfile(src):
            sys.exit(f"build_data: {src} not found (pass --shared)")
        dst = os.path.join(HERE, name)
        tmp = dst + ".tmp"
        shutil.copyfile(src, tmp)
        digest = sha256(tmp)
        if digest != expected:
            os.remove(tmp)
            sys.exit(f"build_data: {src} has sha256 {digest}, expected {expected}")
        os.replace(tmp, dst)
        print(f"{name}: {os.path.getsize(dst)} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
