"""Safe defaults that are not about one feature: the worker stays off the network, paths stay inside their folder,
and a process can be checked for sockets others could reach.

- `offline_env()`: the environment the worker starts with unless hub downloads are enabled (NEXUS_ALLOW_HUB=1):
  Hugging Face libraries in offline mode and without telemetry, so no library phones home behind the engine's back
  (weights.py already looks hub sources up only in the local cache).
- `confine(path, root)`: the path resolved (symlinks followed, `..` collapsed) and refused unless it is inside
  `root`, so a name from outside (an LLM answer, a stored record, a request id) cannot point elsewhere.
- `reachable_sockets(pid)`: the sockets a process holds that another process or user could connect to (listening
  TCP, any UDP, a named or abstract Unix socket), read from /proc (Linux); the worker's pipe is an anonymous
  socketpair and must never show up here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nexus_engine.errors import BadInputError

HUB_ENV = "NEXUS_ALLOW_HUB"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never call the hub (reads it at import, hence set at process start)
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # no stored token is sent anywhere
    "DO_NOT_TRACK": "1",
}


def hub_allowed(environ: dict[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(HUB_ENV) == "1"


def offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Variables to add to a worker's environment: OFFLINE unless the hub is enabled (then nothing)."""
    return {} if hub_allowed(environ) else dict(OFFLINE)


def apply_offline(environ: dict[str, str] | None = None) -> None:
    """Set the offline variables in this process (the worker does it first thing, for launchers other than
    EngineClient); values the user set explicitly are kept."""
    env = os.environ if environ is None else environ
    for key, value in offline_env(dict(env)).items():
        env.setdefault(key, value)


def confine(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """`path` resolved, if it lies inside `root` (also resolved); else BadInputError. Relative paths are taken
    relative to `root`."""
    base = Path(root).resolve()
    p = Path(path)
    if "\0" in str(p):
        raise BadInputError(f"the {what} name contains a NUL byte")
    full = (p if p.is_absolute() else base / p).resolve()
    if not full.is_relative_to(base):
        raise BadInputError(f"the {what} {str(path)[:200]!r} is outside {base}",
                            "Nexus only opens its own files here; attach the file again")
    return full


# ------------------------------------------------------------------------------------------------- sockets
@dataclass(frozen=True)
class Socket:
    kind: str  # tcp, tcp6, udp, udp6, unix
    inode: int
    local: str  # address:port (hex, as /proc shows it) or the Unix path ("@name" for abstract)
    state: str  # TCP state code (0A = LISTEN), "" for others

    def __str__(self) -> str:
        return f"{self.kind} {self.local} state={self.state or '-'} inode={self.inode}"


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets among a process's open file descriptors."""
    found: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _table(pid: int, name: str) -> list[list[str]]:
    try:
        lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
    except OSError:
        return []
    return [ln.split() for ln in lines if ln.strip()]


def process_sockets(pid: int) -> list[Socket]:
    """Every TCP/UDP/Unix socket the process holds, with its local address."""
    mine = socket_inodes(pid)
    out: list[Socket] = []
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        for row in _table(pid, kind):
            if len(row) > 9 and row[9].isdigit() and int(row[9]) in mine:
                out.append(Socket(kind, int(row[9]), row[1], row[3]))
    for row in _table(pid, "unix"):
        # Num RefCount Protocol Flags Type St Inode [Path]
        if len(row) > 6 and row[6].isdigit() and int(row[6]) in mine:
            path = row[7] if len(row) > 7 else ""
            listening = int(row[3], 16) & 0x10000  # __SO_ACCEPTCON
            out.append(Socket("unix", int(row[6]), path, "LISTEN" if listening else ""))
    return out


def reachable_sockets(pid: int) -> list[Socket]:
    """Sockets another process or user could connect to: listening TCP, any UDP, listening or named Unix."""
    def reachable(s: Socket) -> bool:
        if s.kind.startswith("tcp"):
            return s.state == "0A"  # LISTEN
        if s.kind.startswith("udp"):
            return True  # a bound UDP socket receives from anyone
        return s.state == "LISTEN" or bool(s.local)  # a named (or abstract "@") Unix socket can be connected to

    return [s for s in process_sockets(pid) if reachable(s)]
