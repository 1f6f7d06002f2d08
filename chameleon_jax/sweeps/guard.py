"""Runs a command that dies with the process that started it.

  python -m chameleon_jax.sweeps.guard PARENT_PID COMMAND [ARGS...]

Sets PR_SET_PDEATHSIG (SIGKILL), checks that PARENT_PID is still the
parent (it may have died before the flag was set), then replaces itself
with COMMAND (execv keeps the flag). The sweep starts its training runs
through it, so a killed sweep leaves no orphan writing into a run
directory, without forking the multithreaded sweep process with a
pre-exec hook.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
  """Guards and runs `argv[2:]` (module docstring)."""
  parent, command = int(argv[1]), argv[2:]
  ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent:
    sys.exit(f"guard: parent {parent} is gone; not starting {command[0]}.")
  os.execv(command[0], command)


if __name__ == "__main__":
  main(sys.argv)
