"""Execute the chapters' code cells without Jupyter and time each notebook.

    COURSE_PROFILE=gpu python benchmarks/run_notebooks.py notebooks/*.ipynb

For machines that have PyTorch but no Jupyter kernel (a bare GPU box): each
notebook's code cells run in order in a fresh namespace (in a subprocess),
with matplotlib's Agg backend; the install cell is skipped (the package is
imported from ``src/``). When ipywidgets is missing, a stand-in whose
``interact`` does nothing lets the widget cells pass. A failing ``assert``
fails the notebook, as under ``pytest --nbval-lax``. Prints one line per
notebook with its wall time; exit status 1 if any failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _widgets_stand_in() -> None:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        stub = types.ModuleType("ipywidgets")

        def widget(*args, **kwargs):
            return None

        def module_getattr(name: str):
            if name[:1].isupper():  # IntSlider, Dropdown, ...
                return widget
            raise AttributeError(name)

        stub.interact = widget
        stub.__getattr__ = module_getattr
        sys.modules["ipywidgets"] = stub


def execute(path: Path) -> None:
    """Run one notebook's code cells in this process (called in a subprocess)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *args, **kwargs: plt.close("all")
    _widgets_stand_in()
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or 'find_spec("course")' in source:
            continue
        start = time.perf_counter()
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
        print(f"    cell {i}: {time.perf_counter() - start:.1f} s", flush=True)


def main(paths: list[str]) -> int:
    failed = 0
    for name in paths:
        path = Path(name).resolve()
        start = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--one", str(path)], cwd=path.parent)
        seconds = time.perf_counter() - start
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"{path.name}: {seconds:.0f} s {status}", flush=True)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        sys.path.insert(0, str(ROOT / "src"))
        execute(Path(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
