"""pytest configuration shared by tests/ and notebooks/.

Notebook kernels talk to pytest over IPC sockets instead of TCP, so that
`pytest --nbval-lax notebooks` also runs with no network at all, not even a
loopback interface (`unshare -n make test`).
"""

import os
import shutil
import tempfile

import nbval.kernel
from jupyter_client.manager import KernelManager

_IPC_DIR = tempfile.mkdtemp(prefix="nbval-ipc-")


def _ipc_kernel_manager(**kwargs) -> KernelManager:
    return KernelManager(transport="ipc", ip=os.path.join(_IPC_DIR, "kernel"), **kwargs)


nbval.kernel.KernelManager = _ipc_kernel_manager


def pytest_unconfigure(config):
    shutil.rmtree(_IPC_DIR, ignore_errors=True)
