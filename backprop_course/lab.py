"""The JupyterLab that ``backprop-course start`` runs: its settings, and finding it again.

``start`` gives its own server two things through settings overrides, without
touching the learner's own JupyterLab settings:

- ``@jupyter-widgets/jupyterlab-manager:plugin`` ``saveState``: widget state is saved
  in the notebook, so an explorer still shows its picture when the notebook is reopened;
- ``@jupyterlab/apputils-extension:notification``: no news pop-up, no question about
  news, no update check.

They are *defaults* (JupyterLab's ``default_setting_overrides``), written to
``COURSE/.backprop_course/jupyter/labconfig/`` and found through
``JUPYTER_CONFIG_PATH``, which only the course's server is started with. A setting the
learner changes in JupyterLab's Settings Editor still wins.

A second ``start`` on a folder that a server still serves finds it through the
runtime file every Jupyter server writes (``jpserver-PID.json``, with its root folder
and URL) and prints its address instead of starting another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["LAB_OVERRIDES", "course_env", "launch", "running_server", "server_url"]

LAB_OVERRIDES = {
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def write_lab_config(state: Path) -> Path:
    """Write the overrides under ``state`` (a course folder's ``.backprop_course``);
    return the folder to put on ``JUPYTER_CONFIG_PATH``."""
    config = Path(state) / "jupyter"
    labconfig = config / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "default_setting_overrides.json").write_text(
        json.dumps(LAB_OVERRIDES, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return config


def course_env(state: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the course's server: ``environ`` (default: this process's) with
    the course's settings folder first on ``JUPYTER_CONFIG_PATH``."""
    env = dict(os.environ if environ is None else environ)
    config = str(write_lab_config(state))
    rest = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p != config]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([config, *rest])
    return env


def _answers(info: dict) -> bool:
    """True when the server of ``info`` answers on its URL (a killed server's runtime file
    can outlive it, and its process number can be reused)."""
    if info.get("sock") or info.get("secure"):
        return True  # a socket or TLS server: trust its runtime file
    headers = {"Authorization": f"token {info['token']}"} if info.get("token") else {}
    request = urllib.request.Request(info["url"].rstrip("/") + "/api/status", headers=headers)
    try:
        urllib.request.urlopen(request, timeout=15).close()
    except urllib.error.HTTPError:
        return True  # it answered, if only to refuse
    except (OSError, ValueError):
        return False
    return True


def running_server(folder: Path) -> dict | None:
    """The info of a running Jupyter server whose root folder is ``folder``, or None."""
    from jupyter_server.serverapp import list_running_servers

    folder = Path(folder).resolve()
    for info in list_running_servers():
        try:
            if Path(info.get("root_dir", "")).resolve() == folder and _answers(info):
                return info
        except OSError:
            continue
    return None


def server_url(info: dict, path: str) -> str:
    """The address that opens ``path`` (relative to the root folder) on server ``info``."""
    url = info["url"].rstrip("/") + f"/lab/tree/{path}"
    return f"{url}?token={info['token']}" if info.get("token") else url


def launch(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Become ``command`` (POSIX: ``exec``), so that stopping this process, by Ctrl+C or
    ``kill PID``, stops JupyterLab itself, which then shuts down its kernels.

    Where ``exec`` does not replace the process (Windows), run it as a child and wait.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.chdir(cwd)
        os.execve(command[0], command, env)  # does not return
    try:
        return subprocess.call(command, cwd=cwd, env=env)
    except KeyboardInterrupt:
        return 0
