"""Check that the installed Qt binding keeps Python's reference counts straight.

PySide6 6.12.0 on Python 3.11 loses one reference to True on every Python-side `Signal.emit()` and one to None on
every Qt-to-Python slot call (measured here: 50 emits, True's count drops by 50). Python 3.12 made True and None
immortal, which hides the bug; on 3.11 the process aborts with "Fatal Python error: bool_dealloc" or
"none_dealloc" after a few hundred streamed tokens. The constraints file pins 6.11.3; this probe makes a wrong
install fail at start with a clear sentence instead of a crash minutes later.
"""

from __future__ import annotations

import sys

PROBE_EMITS = 64


def binding_problem() -> str | None:
    """None when signals and slots keep True/None reference counts unchanged, else what to do."""
    import PySide6
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal(object)

    probe = _Probe()
    seen: list[object] = []
    probe.ping.connect(seen.append)
    before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(PROBE_EMITS):
        probe.ping.emit(1)
    seen.clear()
    after = sys.getrefcount(True), sys.getrefcount(None)
    probe.deleteLater()
    lost = max(before[0] - after[0], before[1] - after[1])
    if lost < PROBE_EMITS // 2:
        return None
    return (f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} corrupts reference counts on every "
            f"signal ({lost} references lost in {PROBE_EMITS} emits) and would crash Nexus. Install the pinned "
            "version: pip install -c packaging/constraints-cpu.txt PySide6-Essentials (6.11.3), or run ./setup.sh.")
