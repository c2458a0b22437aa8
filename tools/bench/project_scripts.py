"""The project's Python tools are scripts without a .py suffix (they run as
commands); this loads one of them as a module so another can use its parts.
Each tool imports this with sys.dont_write_bytecode set, so running the
tools leaves no __pycache__ in the tree."""
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]


def load_script(name, path):
    """The script at `path` as a module named `name`."""
    sys.dont_write_bytecode = True
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def load_kvm_lab():
    """tools/kvm-lab: its lab, and its check of whether this host's /dev/kvm can boot Linux."""
    return load_script("kvm_lab", REPO / "tools" / "kvm-lab")


def load_bench_tool(name):
    """A tool of tools/bench (`run`, `linux-boot`, ...), as a module (dashes become underscores)."""
    return load_script(name.replace("-", "_"), BENCH / name)
