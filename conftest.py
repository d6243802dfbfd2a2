"""pytest configuration shared by tests/ and notebooks/.

Notebook kernels talk to pytest over IPC sockets instead of TCP
(``tests.book_build.ipc_kernel_manager``, which the executed book build uses too), so
that `pytest --nbval-lax notebooks` also runs with no network at all, not even a
loopback interface (`unshare -n make test`).
"""

import functools
import shutil
import tempfile

import nbval.kernel

from tests.book_build import ipc_kernel_manager

_IPC_DIR = tempfile.mkdtemp(prefix="nbval-ipc-")

nbval.kernel.KernelManager = functools.partial(ipc_kernel_manager, _IPC_DIR)


def pytest_unconfigure(config):
    shutil.rmtree(_IPC_DIR, ignore_errors=True)
