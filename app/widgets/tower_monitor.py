"""The tower monitor: one row per tower with its state and memory, device totals, a VRAM/RAM time series, the
routing timeline and the load/evict/swap log. Clicking a tower shows its models.toml entry and footprints.

Numbers come from MonitorModel (app/monitor_model.py), which the main window feeds with engine messages,
status replies and memory samples; this widget only draws. Redraws are coalesced (at most every 100 ms) so a
burst of events costs one redraw.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.monitor_model import RUNNING, MonitorModel
from app.tasks import run_async
from nexus_engine.config.schema import TowerSpec
from nexus_engine.config.units import fmt_bytes
from nexus_engine.protocol import Message, Status

HISTORY_S = 600  # seconds of memory samples kept in the plot
STATE_COLORS = {"cold": "#8b929e", "warm": "#d19a66", "hot": "#98c379", "running": "#61afef"}
TOWER_COLUMNS = ["Tower", "Roles", "State", "VRAM", "RAM", "Last event"]
ROUTE_COLUMNS = ["Time", "Request", "Towers", "Scores", "Reason"]
EVENT_COLUMNS = ["Time", "Tower", "Action", "Bytes", "ms", "Detail"]


class TowerMonitor(QWidget):
    def __init__(self, model: MonitorModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.t0 = time.monotonic()
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=HISTORY_S * 2)  # t, vram, ram, rss
        self.vram_bar, self.vram_text = QProgressBar(textVisible=False), QLabel()
        self.ram_bar, self.ram_text = QProgressBar(textVisible=False), QLabel()
        self.source = QLabel(objectName="muted")
        self.show_all = QCheckBox("show every declared tower")
        self.table = _table(TOWER_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.details = QPlainTextEdit(readOnly=True, placeholderText="Click a tower to see its models.toml entry "
                                                                     "and measured footprint.")
        self.plot = pg.PlotWidget()
        self.plot.setLabel("left", "MiB")
        self.plot.setLabel("bottom", "seconds")
        self.plot.addLegend(offset=(10, 5))
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.curves = {
            "vram": self.plot.plot(name="VRAM (towers)", pen=pg.mkPen("#e06c75", width=2)),
            "ram": self.plot.plot(name="RAM (towers)", pen=pg.mkPen("#61afef", width=2)),
            "rss": self.plot.plot(name="worker process RSS", pen=pg.mkPen("#98c379", width=1,
                                                                          style=Qt.PenStyle.DashLine)),
        }
        self.routes = _table(ROUTE_COLUMNS)
        self.events = _table(EVENT_COLUMNS)
        self._build_layout()
        self._redraw_timer = QTimer(self, singleShot=True, interval=100)
        self._redraw_timer.timeout.connect(self.redraw)
        self.table.itemSelectionChanged.connect(self._on_tower_selected)
        self.show_all.toggled.connect(self._on_show_all)
        self.redraw()

    def _build_layout(self) -> None:
        bars = QGridLayout()
        bars.addWidget(QLabel("VRAM"), 0, 0)
        bars.addWidget(self.vram_bar, 0, 1)
        bars.addWidget(self.vram_text, 0, 2)
        bars.addWidget(QLabel("RAM"), 1, 0)
        bars.addWidget(self.ram_bar, 1, 1)
        bars.addWidget(self.ram_text, 1, 2)
        bars.setColumnStretch(1, 1)
        head = QHBoxLayout()
        head.addWidget(self.source, 1)
        head.addWidget(self.show_all)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.table)
        top.addWidget(self.details)
        top.setSizes([640, 320])
        logs = QTabWidget()
        logs.addTab(self.routes, "Routing timeline")
        logs.addTab(self.events, "Load / evict / swap")
        self.logs = logs
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(top)
        body.addWidget(self.plot)
        body.addWidget(logs)
        body.setSizes([260, 200, 200])
        layout = QVBoxLayout(self)
        layout.addLayout(bars)
        layout.addLayout(head)
        layout.addWidget(body, 1)

    # ---------------------------------------------------------------------------------------- inputs
    def on_message(self, msg: Message) -> None:
        if self.model.on_message(msg):
            self.schedule_redraw()

    def on_request(self, msg: Message) -> None:
        self.model.on_request(msg)

    def on_status(self, status: Status) -> None:
        if self.model.on_status(status):
            self.schedule_redraw()

    def on_sample(self, sample: dict[str, Any]) -> None:
        b = self.model.budget
        self.samples.append((sample["t"] - self.t0, b.vram_used, b.ram_used, int(sample.get("worker_rss", 0))))
        self.schedule_redraw()

    def set_colors(self, background: str, foreground: str) -> None:
        """Follow the app theme (pyqtgraph draws with its own colors, not the palette)."""
        self.plot.setBackground(background)
        for side in ("left", "bottom"):
            self.plot.getAxis(side).setTextPen(foreground)
            self.plot.getAxis(side).setPen(foreground)

    def schedule_redraw(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    # ---------------------------------------------------------------------------------------- drawing
    def redraw(self) -> None:
        b = self.model.budget
        _bar(self.vram_bar, self.vram_text, b.vram_used, b.vram_limit, "no GPU budget (CPU only)")
        _bar(self.ram_bar, self.ram_text, b.ram_used, b.ram_limit, "no RAM budget set")
        self.source.setText(f"Profile {self.model.profile} · numbers from the {b.source}")
        self._draw_towers()
        self._draw_log(self.routes, [(_clock(r.t), r.request_id, " + ".join(r.towers) or "—",
                                      ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.scores.items(),
                                                                                  key=lambda kv: -kv[1])) or "—",
                                      r.reason if r.from_router else f"⚠ {r.reason}")
                                     for r in self.model.routes])
        self._draw_log(self.events, [(_clock(e.t), e.tower, e.action, fmt_bytes(e.bytes), f"{e.ms:.0f}", e.detail)
                                     for e in self.model.events])
        if self.samples:
            xs = [s[0] for s in self.samples]
            for i, key in enumerate(("vram", "ram", "rss"), start=1):
                self.curves[key].setData(xs, [s[i] / 2**20 for s in self.samples])

    def _draw_towers(self) -> None:
        rows = list(self.model.rows.values())
        selected = self.selected_tower()
        self.table.blockSignals(True)  # restoring the selection must not re-read the details
        self.table.setRowCount(len(rows))
        vram_max = max([self.model.budget.vram_limit, *(r.vram for r in rows), 1])
        ram_max = max([self.model.budget.ram_limit, *(r.ram for r in rows), 1])
        for i, r in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(r.name))
            self.table.setItem(i, 1, QTableWidgetItem(", ".join(r.roles) or "—"))
            state = QTableWidgetItem(r.state + ("" if r.measured or r.state in ("cold", RUNNING) else " (estimate)"))
            state.setForeground(pg.mkColor(STATE_COLORS.get(r.state, "#8b929e")))
            self.table.setItem(i, 2, state)
            for col, value, top in ((3, r.vram, vram_max), (4, r.ram, ram_max)):
                bar = self.table.cellWidget(i, col)
                if not isinstance(bar, QProgressBar):
                    bar = QProgressBar()
                    bar.setRange(0, 1000)
                    self.table.setCellWidget(i, col, bar)
                bar.setValue(min(1000, int(value / top * 1000)) if value else 0)
                bar.setFormat(fmt_bytes(value) if value else "—")
            self.table.setItem(i, 5, QTableWidgetItem(r.last_event))
            if r.name == selected:
                self.table.selectRow(i)
        self.table.blockSignals(False)

    @staticmethod
    def _draw_log(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
        if rows and table.rowCount() == len(rows) and table.item(0, 1) is not None:
            newest = tuple(table.item(0, c).text() for c in range(table.columnCount()))
            if newest == rows[-1]:
                return  # nothing new (the newest row is drawn first)
        table.setRowCount(len(rows))
        for i, row in enumerate(reversed(rows)):  # newest first
            for c, value in enumerate(row):
                table.setItem(i, c, QTableWidgetItem(value))

    # ---------------------------------------------------------------------------------------- details
    def selected_tower(self) -> str | None:
        items = self.table.selectedItems()
        return self.table.item(items[0].row(), 0).text() if items else None

    def state_of(self, tower: str) -> str | None:
        row = self.model.rows.get(tower)
        return row.state if row else None

    def _on_tower_selected(self) -> None:
        name = self.selected_tower()
        spec = self.model.config.towers.get(name or "")
        if spec is None:
            return
        row = self.model.rows.get(spec.name)
        run_async(lambda: describe_tower(spec, row.ram if row else 0, row.vram if row else 0,
                                         row.measured if row else False),
                  self.details.setPlainText, lambda e: self.details.setPlainText(f"could not read: {e}"), owner=self)

    def _on_show_all(self, on: bool) -> None:
        if on:
            self.model.show_all_declared()
        self.redraw()


def describe_tower(spec: TowerSpec, ram: int, vram: int, measured: bool) -> str:
    """The models.toml entry of a tower plus its footprints: what the worker measured now, what the residency
    store measured before (footprints.json), and the estimate from its size. Reads a few files: off the UI
    thread."""
    from nexus_engine import weights
    from nexus_engine.residency.footprints import FootprintStore, estimate

    d = spec.to_dict()
    lines = [f"[towers.{spec.name}]"]
    for key, value in d.items():
        if key in ("name", "options") or value in (None, "", [], {}):
            continue
        lines.append(f"{key} = {_toml(value)}")
    if d.get("options"):
        lines.append(f"\n[towers.{spec.name}.options]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in d["options"].items())
    ok, where = weights.installed(spec)
    lines += ["", "# weights: " + (f"installed at {where}" if ok else f"MISSING — {where}")]
    if ram or vram:
        lines.append(f"# footprint now ({'measured' if measured else 'reported'} by the worker): "
                     f"RAM {fmt_bytes(ram)}, VRAM {fmt_bytes(vram)}")
    stored = FootprintStore().get(spec.name, spec.quantization, spec.device)
    if stored is not None:
        lines.append(f"# footprint measured at an earlier load: RAM {fmt_bytes(stored.ram)}, "
                     f"VRAM {fmt_bytes(stored.vram)}")
    est = estimate(spec)
    if est is not None:
        lines.append(f"# estimate before loading: {fmt_bytes(est.gpu_bytes)} ({est.basis})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- helpers
def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.verticalHeader().hide()
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _bar(bar: QProgressBar, label: QLabel, used: int, limit: int, none: str) -> None:
    if limit <= 0:
        bar.setRange(0, 1)
        bar.setValue(0)
        label.setText(f"{fmt_bytes(used)} used · {none}" if used else none)
        return
    bar.setRange(0, 1000)
    bar.setValue(min(1000, int(used / limit * 1000)))
    label.setText(f"{fmt_bytes(used)} of {fmt_bytes(limit)}")


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
