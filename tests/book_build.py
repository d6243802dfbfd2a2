"""Build the book into a folder of its own, with ``-W`` (any Sphinx warning fails).

Two builds use it:

- the tests' build (``tests/conftest.py``, ``built_book``): notebooks not executed,
  for the static checks and the browser test;
- ``make test``'s executed build, as a user builds the book (``make book``), under the
  profile, ``COURSE_SEED`` and ``COURSE_AMP`` of the environment (``make book-smoke``:
  another seed than the book's and a T4's float16 numerics, on the CPU)::

      COURSE_PROFILE=smoke COURSE_SEED=1 COURSE_AMP=fp16 python tests/book_build.py _build/smoke

  The notebooks first run in parallel, one per core, each in a process of its own,
  and go into the jupyter-cache that the build then reads, so the build itself
  executes nothing. A cell that raises (an ``assert`` that does not hold for this
  seed), a glued value Sphinx cannot format, or anything a cell writes to stderr
  (``nb_output_stderr: warn``: a torch warning on a machine without CUDA, say) fails
  the build. So does a figure without a text alternative: every image a notebook cell
  draws needs ``metadata.mystnb.image.alt`` on its cell (myst-nb writes the file's
  path as ``alt`` otherwise), see :func:`figures_without_alt`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_config(out: Path, execute: bool) -> Path:
    """A copy of ``_config.yml`` for a build into ``out`` (paths made absolute)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]  # paths relative to the book, not to this copy of the config
    sphinx["local_extensions"] = {k: str(ROOT / v) for k, v in sphinx["local_extensions"].items()}
    sphinx["config"]["html_static_path"] = [
        str(ROOT / p) for p in sphinx["config"]["html_static_path"]
    ]
    if execute:
        config["execute"]["cache"] = str(out / "jupyter_cache")
        sphinx["config"]["nb_output_stderr"] = "warn"  # stderr in a page fails -W
    else:
        config["execute"]["execute_notebooks"] = "off"
        # Unexecuted notebooks have no glued values; test_notebooks_static checks the keys.
        sphinx["config"]["suppress_warnings"].append("mystnb.glue")
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def build(out: Path, execute: bool = False, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``jupyter-book build`` of the repository into ``out`` with ``-W``."""
    out.mkdir(parents=True, exist_ok=True)
    jb = Path(sys.executable).parent / "jupyter-book"
    command = [
        str(jb),
        "build",
        str(ROOT),
        "--config",
        str(write_config(out, execute)),
        "--path-output",
        str(out),
        "--warningiserror",
        "--keep-going",
        "--quiet",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def ipc_kernel_manager(folder: str, **kwargs):
    """A kernel manager whose kernel talks over IPC sockets in ``folder``, not TCP ports.

    Two kernels started at the same moment over TCP can be handed the same free port,
    and one notebook then waits forever for replies that went to the other kernel
    (seen twice, on chapters 1 and 3); IPC also needs no network at all, not even a
    loopback interface (``unshare -n make test``).
    """
    from jupyter_client.manager import KernelManager

    return KernelManager(transport="ipc", ip=os.path.join(folder, "kernel"), **kwargs)


def execute_one(source: Path, executed: Path, timeout: int) -> None:
    """Run one notebook with nbclient (its folder as working directory), as myst-nb would,
    and write it with its outputs to ``executed``; a failing cell raises."""
    import nbclient
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    sockets = tempfile.mkdtemp(prefix="book-kernel-")
    client = nbclient.NotebookClient(
        notebook,
        km=ipc_kernel_manager(sockets, kernel_name="python3"),
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # timings in the cell metadata would change the cache's hash
        resources={"metadata": {"path": str(source.parent)}},
    )
    try:
        client.execute()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    nbformat.write(notebook, executed)


def execute_into_cache(cache_path: Path, notebooks: list[Path], timeout: int) -> list[str]:
    """Run ``notebooks`` one per core, each in a fresh process, and store the executed
    ones in the jupyter-cache at ``cache_path``, where the build finds them; returns the
    ones that failed, with the end of their error."""
    from jupyter_cache import get_cache

    executed_dir = cache_path.parent / "executed_notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)

    def run(notebook: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
        executed = executed_dir / notebook.name
        command = [sys.executable, __file__, "--execute-one", str(notebook), str(executed)]
        command += ["--timeout", str(timeout)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=3 * timeout, env=os.environ
        )
        print(f"  {notebook.name}: {'ok' if result.returncode == 0 else 'FAILED'}", flush=True)
        return notebook, executed, result

    jobs = max(1, len(os.sched_getaffinity(0)))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run, notebooks))
    cache = get_cache(str(cache_path))
    failed = []
    for notebook, executed, result in results:
        if result.returncode == 0:
            cache.cache_notebook_file(str(executed), uri=str(notebook), overwrite=True)
        else:
            failed.append(f"{notebook.name}\n{(result.stdout + result.stderr)[-3000:]}")
    return failed


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def figures_without_alt(site: Path) -> list[str]:
    """The figures drawn by notebook cells (``_images/...``) in ``site``'s chapter pages
    whose ``alt`` is missing, empty or the file's own path: "page: src" for each."""
    missing = []
    for page in sorted((site / "notebooks").glob("*.html")):
        parser = _Images()
        parser.feed(page.read_text())
        for image in parser.images:
            src, alt = image.get("src") or "", (image.get("alt") or "").strip()
            if "_images/" in src and (not alt or alt == src or alt.endswith((".png", ".jpg"))):
                missing.append(f"{page.name}: {src}")
    return missing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="the book, executed, with -W")
    parser.add_argument("out", type=Path)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per notebook")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    start = time.perf_counter()
    failed = execute_into_cache(out / "jupyter_cache", notebooks, args.timeout)
    executed = time.perf_counter() - start
    settings = {k: os.environ.get(k, "") for k in ("COURSE_PROFILE", "COURSE_SEED", "COURSE_AMP")}
    print(f"executed {len(notebooks)} notebooks in {executed:.0f} s ({settings})", flush=True)
    if failed:
        print("\n\n".join(failed))
        print(f"{len(failed)} notebooks failed under {settings}")
        return 1
    result = build(out, execute=True)
    print(f"book built in {time.perf_counter() - start - executed:.0f} s", flush=True)
    if result.returncode != 0:
        print(result.stdout[-6000:] + result.stderr[-6000:])
        return 1
    missing = figures_without_alt(out / "_build" / "html")
    if missing:
        print("figures without a text alternative (give their cell metadata.mystnb.image.alt):")
        print("\n".join(f"  {m}" for m in missing))
        return 1
    print(f"open {out / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--execute-one"]:  # SOURCE EXECUTED --timeout SECONDS
        execute_one(Path(sys.argv[2]), Path(sys.argv[3]), timeout=int(sys.argv[5]))
    else:
        sys.exit(main(sys.argv[1:]))
