"""Build the datasets fmq_np ships under data/ from the read-only originals in ../shared/data.

Run from the repository root:  python data/build_data.py [--shared ../shared/data]

Whole-file copies are checked against the SHA-256 of the file; subsets (MNIST, Fashion-MNIST) against the SHA-256
of their array contents (``content_sha256``: name, dtype, shape and bytes of every array in order), because the
compressed bytes of a zip may differ between zlib versions. Subsets are written as deterministic .npz files
(fixed zip timestamps), so a rebuild with the same zlib is byte-identical too. Both digests are in
data/PROVENANCE.md. Only what the package needs at run time is copied; the originals are never required afterwards.
"""
import argparse
import hashlib
import io
import os
import shutil
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# file -> SHA-256 of the shipped file (whole-file copies)
SHIPPED = {"digits.npz": "6f801551877abf69fbf3711373bb642a18dc933430a3385cd6febc235225ea6f",
           "lfw_faces.npz": "ceb4d295fd01afe8b2a17eb68beb43953c9fad10de7221eb71f0a844aec24a01",
           "natural_images.npz": "537bdd49e7c7748da6391d7c7a6d46ad75e08168aa6be9336bbda27350d6c59b"}
# file -> (source file, train images, extra images, test images, content SHA-256): the first n_train training
# images (what the generative models learn from), the next n_extra training images (only the FD feature nets
# learn from them: ``split="extra"``) and the first n_test test images of the original
SUBSETS = {
    "mnist.npz": ("mnist.npz", 8_000, 16_000, 5_000,
                  "fccb88f15e25503f904d1b1b4151df9110aeaa3a37580dc9048720b35362285e"),
    "fashion_mnist.npz": ("fashion_mnist.npz", 8_000, 16_000, 5_000,
                          "863225dd6104a11aae6404068a7922494cec9c99aff2942c0c16f43e80e191c9"),
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(arrays):
    """SHA-256 over (name, dtype, shape, C-order bytes) of every array of the dict, in its order."""
    h = hashlib.sha256()
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(path, arrays):
    """Write ``arrays`` as a compressed .npz readable by ``np.load`` with fixed zip timestamps (atomic)."""
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def copy_checked(src, dst, expected):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    digest = sha256(tmp)
    if expected is not None and digest != expected:
        os.remove(tmp)
        sys.exit(f"build_data: {src} has sha256 {digest}, expected {expected}")
    os.replace(tmp, dst)
    return digest


def build_subset(src, dst, n_train, n_extra, n_test, expected):
    with np.load(src, allow_pickle=False) as f:
        arrays = {"x_train": f["x_train"][:n_train], "y_train": f["y_train"][:n_train],
                  "x_test": f["x_test"][:n_test], "y_test": f["y_test"][:n_test],
                  "x_extra": f["x_train"][n_train:n_train + n_extra],
                  "y_extra": f["y_train"][n_train:n_train + n_extra]}
    digest = content_sha256(arrays)
    if expected is not None and digest != expected:
        sys.exit(f"build_data: {src} subset has content sha256 {digest}, expected {expected}")
    write_npz(dst, arrays)
    return digest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "data"),
                        help="folder holding the original .npz files (default: ../shared/data)")
    args = parser.parse_args(argv)
    sources = list(SHIPPED) + [src for src, *_ in SUBSETS.values()]
    for name in sources:
        if not os.path.isfile(os.path.join(args.shared, name)):
            sys.exit(f"build_data: {os.path.join(args.shared, name)} not found (pass --shared)")
    for name, expected in SHIPPED.items():
        dst = os.path.join(HERE, name)
        digest = copy_checked(os.path.join(args.shared, name), dst, expected)
        print(f"{name}: {os.path.getsize(dst)} bytes, sha256 {digest}")
    for name, (src, n_train, n_extra, n_test, expected) in SUBSETS.items():
        dst = os.path.join(HERE, name)
        digest = build_subset(os.path.join(args.shared, src), dst, n_train, n_extra, n_test, expected)
        print(f"{name}: {os.path.getsize(dst)} bytes, content_sha256 {digest}, file sha256 {sha256(dst)}")


if __name__ == "__main__":
    main()
