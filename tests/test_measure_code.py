"""tools/measure_code.py: function lengths and string key reads, read with ast."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "measure_code.py"
spec = importlib.util.spec_from_file_location("measure_code", TOOL)
measure_code = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measure_code)

SOURCE = '''
def short():
    return 1


class Box:
    def method(self):
        x = 1
        return x


def reads(ckpt, meta):
    ckpt["arch"] = "seed"  # a write: not counted
    a = ckpt["arch"]
    b = meta.get("metrics", {})
    c = ckpt["not_a_key"]
    return a, b, c, ckpt.arch
'''


def test_function_lengths_count_methods_and_functions():
    assert measure_code.function_lengths(SOURCE) == {"short": 2, "Box.method": 3, "reads": 6}


def test_key_reads_count_string_subscripts_and_gets_of_known_keys_only():
    assert measure_code.key_reads(SOURCE) == 2


def test_the_working_tree_measures():
    result = measure_code.measure(None)
    assert result["engine_lines"] > 0 and result["train_lines"] > 0 and result["longest"]
