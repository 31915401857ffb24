"""`nexus-app`: the desktop window, with the engine in a worker process.

Start-up order: settings, models.toml (a mistake there is shown in a dialog with the file, line and fix, not a
traceback), the history (answers a killed app left 'streaming' become 'interrupted'), the window, and only then
the engine, in the background: the window is usable before the worker has said hello.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nexus-app", description="Nexus desktop assistant")
    parser.add_argument("--profile", help="models.toml profile (default: the one in the settings, else starter)")
    parser.add_argument("--theme", choices=["dark", "light"], help="override the saved theme for this run")
    parser.add_argument("--quit-after", type=float, metavar="SECONDS",
                        help="close the window after this many seconds (smoke tests)")
    args, qt_args = parser.parse_known_args(argv)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app import settings as app_settings
    from app import theme
    from app.engine_client import QtEngine
    from app.main_window import MainWindow
    from app.qt_check import binding_problem
    from app.watchdog import StallWatchdog
    from nexus_engine import paths
    from nexus_engine.config import load_config
    from nexus_engine.errors import NexusError
    from nexus_engine.history import History

    log_file = paths.data_dir() / "logs" / "app.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s app %(levelname)s %(message)s")
    qapp = QApplication([sys.argv[0], *qt_args])
    qapp.setApplicationName("Nexus")
    problem = binding_problem()
    if problem:
        print(problem, file=sys.stderr)
        QMessageBox.critical(None, "Nexus cannot start", problem)
        return 2
    settings = app_settings.load()
    if args.profile:
        settings.profile = args.profile
    theme.apply(qapp, args.theme or settings.theme)
    try:
        config = load_config()
        config.profile(settings.profile or None)  # an unknown profile is reported here, with the choices
        history = History(settings.history_path())
    except NexusError as err:
        QMessageBox.critical(None, "Nexus cannot start", str(err))
        return 2
    history.recover_interrupted()
    engine = QtEngine(profile=settings.profile or None, env=app_settings.engine_env(settings))
    window = MainWindow(engine, history, settings, config)
    if os.environ.get("NEXUS_UI_WATCHDOG") == "1":  # log UI stalls while using the app
        StallWatchdog(log_above_ms=50, parent=window).start()
    window.show()
    engine.start()
    if args.quit_after:
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    try:
        return qapp.exec()
    finally:
        engine.close()
        history.close()


if __name__ == "__main__":
    sys.exit(main())
