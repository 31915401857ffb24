"""`nexus-app`: start the desktop window with the engine in a worker process."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nexus-app")
    parser.add_argument("--profile", help="models.toml profile")
    args, qt_args = parser.parse_known_args(argv)
    from PySide6.QtWidgets import QApplication

    from app.engine_bridge import EngineBridge
    from app.main_window import MainWindow

    qapp = QApplication([sys.argv[0], *qt_args])
    bridge = EngineBridge(args.profile)
    window = MainWindow(bridge)
    window.show()
    try:
        return qapp.exec()
    finally:
        bridge.close()


if __name__ == "__main__":
    sys.exit(main())
