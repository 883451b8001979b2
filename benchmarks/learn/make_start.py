"""Write N evenly spaced frames of a labelled data file: the starting set of a ``remul-ff learn`` run.

Usage: python benchmarks/learn/make_start.py DATA OUT N
"""

import sys
from pathlib import Path

import ase.io

if __name__ == "__main__":
    source, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    frames = ase.io.read(source, ":")
    step = max(len(frames) // n, 1)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(target, frames[::step][:n], format="extxyz")
    print(f"wrote {min(n, len(frames[::step]))} of {len(frames)} frames of {source} to {target}")
