"""Get the datasets the experiments read (`make data`): Fashion-MNIST is needed, MNIST is optional.

Fashion-MNIST's four IDX files are looked up where `gdjax.data.load_dataset` looks (`$GDJAX_DATA_DIR`, then
Debian's `/usr/share/datasets/fashion-mnist`). When they are missing and apt-get is available, Debian's package
`dataset-fashion-mnist` is installed (with sudo when not root). Otherwise one message says the two ways to get
them, and the exit status is 1. MNIST (no package ships it) is only reported: found, or where to put it.

    python experiments/get_data.py              # check, install Fashion-MNIST if missing
    python experiments/get_data.py --check      # only check (exit 1 when Fashion-MNIST is missing)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from gdjax import data

PACKAGE = "dataset-fashion-mnist"


def find(name: str) -> tuple[str | None, str]:
    """(folder holding `name`'s four IDX files or None, the message saying where it looked and how to get them)."""
    try:
        files = data.find_idx_files(name, data.default_data_dirs(name))
    except FileNotFoundError as err:
        return None, str(err)
    return str(files["train"][0].parent), ""


def apt_install_command() -> list[str] | None:
    """The command installing Debian's package (sudo when not root), or None without apt-get (or sudo)."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return ["apt-get", "install", "-y", "-qq", PACKAGE]
    if shutil.which("sudo") is None:
        return None
    return ["sudo", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", PACKAGE]


def install() -> bool:
    """Install Debian's package with apt-get; True when the install command succeeded."""
    cmd = apt_install_command()
    if cmd is None:
        return False
    print(f"get_data: installing Debian's {PACKAGE}: {' '.join(cmd)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = [*cmd[: cmd.index("apt-get") + 1], "update", "-qq"]
    subprocess.call(update, env=env)  # a stale package list is not fatal: the install says what went wrong
    return subprocess.call(cmd, env=env) == 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = [a for a in argv if a != "--check"]
    if bad:
        print(f"get_data: error: unknown argument {bad[0]!r}; use --check or nothing", file=sys.stderr)
        return 2
    where, message = find("fashion-mnist")
    if where is None and "--check" not in argv and install():
        where, message = find("fashion-mnist")
    if where is None:
        print(f"get_data: error: {message}", file=sys.stderr)
        return 1
    print(f"get_data: fashion-mnist found in {where}")
    mnist, _ = find("mnist")
    print(f"get_data: mnist found in {mnist}" if mnist else
          f"get_data: mnist (optional) not found: put its four IDX files in ${data.ENV_VAR}/mnist to also run "
          "the lecture's network on MNIST")
    return 0


if __name__ == "__main__":
    sys.exit(main())
