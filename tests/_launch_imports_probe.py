"""main_func of tests/test_user_components.py's launch test: records, per process, whether a module is
imported (launch imports the parent's IMPORTS in every worker before main_func runs)."""
import json
import os
import sys

from detectron2.utils import comm


def report_imports(out_dir: str, module: str) -> None:
    rank = comm.get_rank()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "imported": module in sys.modules}, f)
