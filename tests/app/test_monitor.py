"""The tower monitor on the real worker: an unload and a load (real TowerEvents from the residency manager), the
budget snapshot in Status replies, the running state during an answer, the routing timeline, the memory time
series, and a tower's models.toml entry with its measured footprint."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer

from app.monitor_model import MonitorModel
from nexus_engine.config import load_config
from nexus_engine.protocol import LoadTower, ResidencyEvent, TowerEvent, UnloadTower
from nexus_engine.residency.budget import Budget, GiB

TOWER = "smollm2-chat"


def test_monitor_follows_residency_events_of_a_real_request(window: Any, qtbot: Any) -> None:
    mon, engine = window.monitor, window.engine
    window.tabs.setCurrentWidget(mon)
    engine.submit(LoadTower(tower=TOWER))
    qtbot.waitUntil(lambda: mon.state_of(TOWER) == "hot", timeout=30_000)
    engine.submit(UnloadTower(tower=TOWER))  # a real residency change: the next chat must load the tower
    qtbot.waitUntil(lambda: mon.state_of(TOWER) == "cold", timeout=10_000)
    assert any(e.action == "unload" and e.tower == TOWER and e.bytes > 0 for e in mon.model.events)

    states: set[str] = set()
    sampler = QTimer(interval=10)
    sampler.timeout.connect(lambda: states.add(mon.state_of(TOWER) or ""))
    sampler.start()
    window.composer.edit.setPlainText("Name a large animal.")
    window.composer.submit()
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=60_000)
    qtbot.waitUntil(lambda: mon.state_of(TOWER) == "hot" and len(mon.samples) >= 2, timeout=10_000)
    sampler.stop()
    assert "running" in states, states

    loads = [e for e in mon.model.events if e.action == "load" and e.tower == TOWER]
    assert loads and loads[-1].bytes > 50 * 2**20 and loads[-1].ms > 0
    row = mon.model.rows[TOWER]
    assert row.ram > 50 * 2**20 and row.measured
    assert mon.model.budget.source == "residency snapshot" and mon.model.budget.ram_limit > row.ram
    assert "of" in mon.ram_text.text()
    mon.redraw()
    assert mon.events.rowCount() >= 2 and mon.events.item(0, 2).text() == "load"
    routes = list(mon.model.routes)
    assert routes and routes[-1].towers == [TOWER] and routes[-1].from_router and routes[-1].reason  # the router
    assert mon.routes.item(0, 2).text() == TOWER
    assert mon.curves["ram"].getData()[1] is not None and max(mon.curves["rss"].getData()[1]) > 50

    names = [mon.table.item(i, 0).text() for i in range(mon.table.rowCount())]
    qtbot.mouseClick(mon.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=mon.table.visualItemRect(mon.table.item(names.index(TOWER), 0)).center())
    qtbot.waitUntil(lambda: "[towers.smollm2-chat]" in mon.details.toPlainText(), timeout=5000)
    details = mon.details.toPlainText()
    assert 'backend = "llama_cpp"' in details and "footprint now (measured by the worker)" in details
    assert "# weights: installed at" in details


def test_model_reads_a_budget_snapshot_and_tower_events() -> None:
    """The two snapshot shapes the engine can send: a bare Budget.snapshot() and the manager's."""
    config = load_config()
    model = MonitorModel(config, "starter", ram_budget=8 * GiB)
    budget = Budget.fixed(vram=16 * GiB, ram=32 * GiB)
    budget.reserve("smollm2-chat", "cpu", 300 * 2**20)
    budget.commit("smollm2-chat", "cpu", 220 * 2**20)
    assert model.on_message(ResidencyEvent(snapshot=budget.snapshot()))
    assert model.rows["smollm2-chat"].state == "hot" and model.rows["smollm2-chat"].ram == 220 * 2**20
    assert model.budget.vram_limit == budget.limit("cuda:0") and model.budget.ram_used == 220 * 2**20
    snap = {"budget": budget.snapshot(), "towers": {"smollm2-chat": {"tier": "warm", "vram": 0, "ram": 5,
                                                                     "in_use": False}}}
    model.on_message(ResidencyEvent(snapshot=snap))
    assert model.rows["smollm2-chat"].state == "warm"
    model.on_message(TowerEvent(tower="whisper-base", action="load", bytes=1234, ms=12.0))
    assert model.rows["whisper-base"].state == "hot" and model.events[-1].bytes == 1234
    model.on_message(TowerEvent(tower="whisper-base", action="swap_out", bytes=1234, ms=3.0))
    assert model.rows["whisper-base"].state == "warm"
    model.on_message(TowerEvent(tower="whisper-base", action="evict", bytes=1234, ms=1.0))
    assert model.rows["whisper-base"].state == "cold"
