"""De-identification benchmark: Deidentifier.deidentify_bytes beside a plain pydicom read + write.

    python bench/deid.py [--instances 2000] [--seed 1]

Generates N sample instances (dicomlake.samples), then measures in the same run, on the same bytes
held in memory, one process:
  reference  pydicom.dcmread + pydicom.dcmwrite(enforce_file_format=True) of every file: the floor
             for "read a file and write it back"
  basic      Deidentifier(DeidOptions(key)).deidentify_bytes of every file: the Basic Profile
  options    the same with all three options (modified dates, patient characteristics, descriptors)
and prints files/s and MB/s for each and the ratio ours / reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.samples import generate_sample_drop


def rate(datas: list[bytes], work) -> float:
    started = time.perf_counter()
    for data in datas:
        work(data)
    return len(datas) / (time.perf_counter() - started)


def read_write(data: bytes) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, pydicom.dcmread(BytesIO(data)), enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_sample_drop(Path(tmp), n_instances=args.instances, seed=args.seed).files
        datas = [path.read_bytes() for path in files]
    megabytes = sum(map(len, datas)) / 1e6
    print(f"{len(datas)} instances, {megabytes:.1f} MB in memory")
    reference = rate(datas, read_write)
    per_file = megabytes / len(datas)
    print(f"  reference  pydicom read+write  {reference:8.0f} files/s  {reference * per_file:6.1f} MB/s")
    runs = {
        "basic": DeidOptions(project_key="bench-project-key"),
        "options": DeidOptions(
            project_key="bench-project-key",
            retain_longitudinal_modified_dates=True,
            retain_patient_characteristics=True,
            clean_descriptors=True,
        ),
    }
    for name, options in runs.items():
        ours = rate(datas, Deidentifier(options).deidentify_bytes)
        print(
            f"  {name:9}  deidentify_bytes     {ours:8.0f} files/s  {ours * megabytes / len(datas):6.1f} MB/s"
            f"  ratio {ours / reference:.2f}"
        )


if __name__ == "__main__":
    main()
