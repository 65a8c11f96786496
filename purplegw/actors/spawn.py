"""Starting worker processes: ``spawn``, without the resource tracker and the main module.

A worker is a fresh interpreter (the ``spawn`` start method): the main
process runs threads (the SIP front's loop, the writer, pykka actors) by
the time a dead worker is started again, and ``fork`` would copy their
locks as they are, held ones included.  ``forkserver`` would avoid that
but keeps a server process of its own (one more interpreter) and, like
``spawn``, starts multiprocessing's resource tracker.

Two things multiprocessing's own ``spawn`` does that a worker never needs:

* **The resource tracker.**  ``spawn`` starts one more interpreter (~13
  MiB RSS) that unlinks named semaphores and shared memory left behind by
  dead children.  Workers create neither: they talk to the main process
  over a ``Pipe`` (a socket pair) and use thread locks only.  Should a
  worker ever create such a resource, multiprocessing starts a tracker of
  its own in that worker then (``resource_tracker.ensure_running``).
* **Running the main module again.**  ``spawn`` re-imports the parent's
  ``__main__`` in the child so that pickled objects defined there can be
  found.  For the ``purplegw`` console script that is ``purplegw.cli``
  with click, the config loader and what they import.  A worker's target
  (``workers.worker_main``) and its arguments are all importable by module
  name, so the main module is left out.

Everything else is multiprocessing's ``spawn``: the same command line
(``spawn_main``), preparation data (``sys.path``, working directory,
authkey) and pickling of the ``Process`` object.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from multiprocessing.context import set_spawning_popen
from typing import Any

_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


class _Popen(popen_spawn_posix.Popen):
    """``spawn``'s POSIX launcher, passing no resource tracker and no main module."""

    method = "spawn"

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)  # noqa: SLF001 - as multiprocessing's launcher reads it
        for key in _MAIN_KEYS:
            prep_data.pop(key, None)
        fp = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            # tracker_fd=None: the child has no tracker until it needs one.
            cmd = spawn.get_command_line(tracker_fd=None, pipe_handle=child_r)
            self._fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            self.finalizer = util.Finalize(
                self, util.close_fds, [fd for fd in (parent_r, parent_w) if fd is not None]
            )
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class WorkerProcess(multiprocessing.context.SpawnProcess):
    """A ``spawn`` process started by ``_Popen``: no resource tracker, no main module."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - multiprocessing's hook name
        return _Popen(process_obj)
