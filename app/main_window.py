"""The main window: conversations on the left; Chat, Generate, Monitor and Voice tabs; the crash banner on top.

Every signal is connected in `_connect_signals`, in one place, so the flow of the app reads in one screen:
composer -> controller -> engine, engine events -> chat view / monitor / generation panel, engine state ->
banner. Slots are `_on_*` methods. The window never calls anything that waits on the engine: the controller and
QtEngine run those calls on their own threads and answer with signals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import settings as app_settings
from app import theme
from app.attachments import Attachment, AttachmentError, thumbnail_for
from app.chat_controller import ChatController
from app.engine_client import CRASHED, FAILED, READY, RESTARTED, STARTING, QtEngine
from app.monitor_model import MonitorModel
from app.settings import AppSettings
from app.tasks import run_async
from app.widgets.banner import Banner
from app.widgets.chat import ChatView, MessageWidget
from app.widgets.composer import Composer
from app.widgets.conversations import ConversationList
from app.widgets.generation import GenerationPanel
from app.widgets.media_search import MediaSearch
from app.widgets.settings import SettingsDialog
from app.widgets.tower_monitor import TowerMonitor
from app.widgets.voice import VoicePanel
from nexus_engine import paths
from nexus_engine.chat_session import Turn
from nexus_engine.config.schema import ModelsConfig
from nexus_engine.config.units import parse_bytes
from nexus_engine.errors import NexusError, WorkerCrashedError
from nexus_engine.history import History
from nexus_engine.protocol import (
    Done,
    Error,
    GenerateRequest,
    Message,
    Progress,
    RouteEvent,
    SearchRequest,
    TokenChunk,
)
from nexus_engine.vision.index import history_media

log = logging.getLogger("nexus.app")
RENDER_MS = 40  # streamed text is re-rendered at most this often (tokens arrive far faster)


@dataclass
class TurnView:
    """What the window tracks for one sent message: its two bubbles, the text so far, what was sent."""

    user: MessageWidget
    answer: MessageWidget
    sent_text: str
    sent_files: list[Attachment]
    parts: list[str] = field(default_factory=list)
    request_id: str = ""
    dirty: bool = False


def final_status(msg: Message) -> tuple[str, str | None]:
    """(status, error text) of a finished turn, as ChatSession stores it."""
    if isinstance(msg, Done):
        return ("cancelled" if msg.stats.get("finish") == "cancelled" else "done"), None
    assert isinstance(msg, Error)
    if msg.code == WorkerCrashedError.code:
        return "interrupted", f"{msg.message}. {msg.hint}".strip(". ") + "."
    if msg.code == "cancelled":
        return "cancelled", None
    return "error", msg.message + (f"\nhint: {msg.hint}" if msg.hint else "")


def progress_text(msg: Progress) -> str:
    """The note under an answer while perception or a render runs."""
    if msg.message.startswith("step ") and msg.total:
        eta = f" · {msg.eta_s:.0f} s left" if msg.eta_s is not None else ""
        return f"drawing: step {msg.step}/{msg.total}{eta} (Esc stops)"
    return f"{msg.message}…" if msg.message else ""


class MainWindow(QMainWindow):
    def __init__(self, engine: QtEngine, history: History, settings: AppSettings, config: ModelsConfig,
                 settings_file: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Nexus")
        self.resize(1280, 800)
        self.engine = engine
        self.history = history
        self.settings = settings
        self.settings_file = settings_file
        self.config = config
        self.profile = settings.profile or config.default_profile
        self.controller = ChatController(engine, history, self.profile, settings.persona, settings.max_tokens, self)
        self.turns: dict[int, TurnView] = {}
        self.routes: dict[str, list[str]] = {}  # request id -> towers the router chose
        self._build()
        self._connect_signals()
        self._install_shortcuts()
        self.conversations.refresh()
        if settings.geometry:
            self.restoreGeometry(QByteArray.fromHex(settings.geometry.encode()))

    # ------------------------------------------------------------------------------------ building
    def _build(self) -> None:
        s = self.settings
        self.banner = Banner()
        self.conversations = ConversationList(self.history)
        self.chat = ChatView()
        self.composer = Composer(s.attachments_dir())
        self.generation = GenerationPanel(self.config, self.profile, paths.user_models_toml())
        self.monitor = TowerMonitor(self._monitor_model())
        self.voice = VoicePanel(s.mic, s.hands_free, s.barge_in)
        self.search = MediaSearch()
        chat_tab = QWidget()
        chat_layout = QVBoxLayout(chat_tab)
        chat_layout.addWidget(self.chat, 1)
        chat_layout.addWidget(self.composer)
        self.tabs = QTabWidget()
        self.tabs.addTab(chat_tab, "Chat")
        self.tabs.addTab(self.generation, "Generate")
        self.tabs.addTab(self.monitor, "Monitor")
        self.tabs.addTab(self.voice, "Voice")
        self.tabs.addTab(self.search, "Search")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.conversations)
        split.addWidget(self.tabs)
        split.setSizes([240, 1040])
        root = QWidget()
        layout = QVBoxLayout(root)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        self.setCentralWidget(root)
        self.engine_label = QLabel("starting the engine…")
        self.statusBar().addWidget(self.engine_label, 1)
        self.settings_action = self.menuBar().addAction("Settings…")
        self.theme_action = self.menuBar().addAction("Light theme" if s.theme == "dark" else "Dark theme")
        self._render_timer = QTimer(self, singleShot=True, interval=RENDER_MS)
        c = theme.colors(s.theme)
        self.monitor.set_colors(c.base, c.text)

    def _monitor_model(self) -> MonitorModel:
        s = self.settings
        vram = parse_bytes(s.vram_budget) if s.vram_budget else 0
        ram = parse_bytes(s.ram_budget) if s.ram_budget else psutil.virtual_memory().total
        return MonitorModel(self.config, self.profile, vram_budget=vram, ram_budget=ram)

    def _connect_signals(self) -> None:
        c, e = self.controller, self.engine
        # composer -> controller
        self.composer.send_requested.connect(self._on_send)
        self.composer.stop_requested.connect(self._on_stop)
        self.chat.files_dropped.connect(self.composer.add_mime)
        self.chat.regenerate_requested.connect(self._on_regenerate)
        # controller -> view (the slots let the controller do its bookkeeping first, in the same event)
        c.turn_started.connect(self._on_turn_started)
        c.turn_event.connect(self._on_turn_event)
        c.send_failed.connect(self._on_send_failed)
        c.conversation_changed.connect(self._on_conversation_changed)
        # conversations
        self.conversations.new_requested.connect(self._on_new_chat)
        self.conversations.open_requested.connect(self._on_open_conversation)
        self.conversations.deleted.connect(self._on_conversation_deleted)
        # engine -> monitor, generation, banner
        e.event.connect(self._on_engine_event)
        e.event.connect(self.monitor.on_message)
        e.event.connect(self.generation.on_event)
        e.event.connect(self.search.on_event)
        e.request_sent.connect(self.monitor.on_request)
        e.status.connect(self.monitor.on_status)
        e.sample.connect(self.monitor.on_sample)
        e.state_changed.connect(self._on_engine_state)
        self.banner.retry_requested.connect(self._on_retry_engine)
        # generation
        self.generation.generate_requested.connect(self._on_generate)
        self.generation.cancel_requested.connect(e.cancel)
        self.search.search_requested.connect(self._on_search)
        # voice, menu, rendering
        self.voice.toggles_changed.connect(self._on_voice_toggles)
        self.settings_action.triggered.connect(self._on_settings)
        self.theme_action.triggered.connect(self._on_toggle_theme)
        self._render_timer.timeout.connect(self._on_render)

    def _install_shortcuts(self) -> None:
        keys = {
            "Ctrl+Return": self.composer.submit, "Ctrl+Enter": self.composer.submit,
            "Esc": self._on_stop, "Ctrl+.": self._on_stop,
            "Ctrl+N": self._on_new_chat, "Ctrl+L": self.focus_composer,
            "Ctrl+R": self._on_regenerate_last, "Ctrl+,": self._on_settings,
            "Ctrl+Shift+T": self._on_toggle_theme,
        }
        for i in range(self.tabs.count()):
            keys[f"Ctrl+{i + 1}"] = lambda i=i: self.tabs.setCurrentIndex(i)
        self.shortcuts = {}
        for key, slot in keys.items():
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self.shortcuts[key] = sc

    # ----------------------------------------------------------------------------------------- chat
    def focus_composer(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.composer.edit.setFocus()

    def _on_send(self, text: str, files: list[Attachment]) -> None:
        if self.controller.busy:
            self.composer.show_error("An answer is still being written: stop it first (Esc).")
            return
        try:
            key = self.controller.send(text, files)
        except NexusError as err:
            self.composer.show_error(str(err))
            return
        user = self.chat.add_message("user", text)
        for att in files:
            if att.thumbnail is not None:
                user.add_thumbnail(att.thumbnail, att.name)
            else:
                user.add_file_chip(att.name)
        answer = self.chat.add_message("assistant")
        answer.set_status("streaming")
        self.chat.mark_last_answer(False)
        self.turns[key] = TurnView(user, answer, text, files)
        self.composer.clear_sent()
        self.composer.set_busy(True)

    def _on_regenerate(self, message_id: int) -> None:
        try:
            key = self.controller.regenerate(message_id)
        except NexusError as err:
            self.composer.show_error(str(err))
            return
        old = self.chat.last_answer()
        user = next((m for m in reversed(self.chat.messages) if m.role == "user"), None)
        if old is not None:
            self.chat.remove_message(old)  # superseded: kept in the history, hidden like ChatSession hides it
        answer = self.chat.add_message("assistant")
        answer.set_status("streaming")
        self.turns[key] = TurnView(user or answer, answer, "", [])
        self.composer.set_busy(True)

    def _on_regenerate_last(self) -> None:
        last = self.chat.last_answer()
        if last is not None and last.message_id is not None and not self.controller.busy:
            self._on_regenerate(last.message_id)

    def _on_stop(self) -> None:
        self.controller.stop()

    def _on_turn_started(self, key: int, turn: Turn) -> None:
        tv = self.turns.get(key)
        if tv is not None:
            tv.answer.message_id = turn.message_id
            tv.user.message_id = tv.user.message_id or turn.user_message_id
            tv.request_id = turn.request_id

    def _on_turn_event(self, key: int, msg: Message) -> None:
        self.controller.on_turn_event(key, msg)
        tv = self.turns.get(key)
        if tv is None:
            return
        if isinstance(msg, TokenChunk):
            tv.parts.append(msg.text)
            tv.dirty = True
            if not self._render_timer.isActive():
                self._render_timer.start()
        elif isinstance(msg, Progress):
            tv.answer.set_progress(progress_text(msg))
        elif isinstance(msg, Done | Error):
            self._finish_turn(key, tv, msg)

    def _on_render(self) -> None:
        for tv in self.turns.values():
            if tv.dirty:
                tv.dirty = False
                tv.answer.set_text("".join(tv.parts))
                if not tv.answer.note.isHidden():
                    tv.answer.set_status("streaming")  # drops the "thinking…" note once text shows

    def _finish_turn(self, key: int, tv: TurnView, msg: Done | Error) -> None:
        del self.turns[key]
        tv.answer.set_text("".join(tv.parts))
        status, error = final_status(msg)
        stats = msg.stats if isinstance(msg, Done) else {}
        tv.answer.set_status(status, error, stats, self.routes.pop(msg.id, None))
        self.composer.set_busy(False)
        self.chat.mark_last_answer(True)
        self.conversations.refresh(self.controller.conversation_id)
        if isinstance(msg, Error) and msg.code == WorkerCrashedError.code:
            self.banner.show_message("The engine stopped while answering and was restarted. Your conversation "
                                     "is kept; send the message again to retry.")

    def _on_send_failed(self, key: int, why: str) -> None:
        self.controller.on_send_failed(key, why)
        tv = self.turns.pop(key, None)
        self.composer.set_busy(False)
        if tv is None:
            return
        if tv.sent_text:  # a new message: take it back into the composer, nothing typed is lost
            self.chat.remove_message(tv.user)
            self.chat.remove_message(tv.answer)
            self.composer.restore(tv.sent_text, tv.sent_files, why)
        else:  # a regenerate: show the conversation as stored
            self._load_conversation(self.controller.conversation_id)
            self.composer.show_error(why)

    # -------------------------------------------------------------------------------- conversations
    def _on_new_chat(self) -> None:
        try:
            self.controller.new_chat()
        except NexusError as err:
            self.composer.show_error(str(err))
            return
        self.focus_composer()

    def _on_open_conversation(self, conversation_id: int) -> None:
        try:
            self.controller.open(conversation_id)
        except NexusError as err:
            self.composer.show_error(str(err))
            self.conversations.refresh(self.controller.conversation_id)

    def _on_conversation_deleted(self, conversation_id: int) -> None:
        if conversation_id == self.controller.conversation_id and not self.controller.busy:
            self.controller.new_chat()

    def _on_conversation_changed(self, conversation_id: int | None) -> None:
        if not self.turns:  # a send that created the conversation keeps its live bubbles
            self._load_conversation(conversation_id)
        self.conversations.refresh(conversation_id)

    def _load_conversation(self, conversation_id: int | None) -> None:
        self.chat.clear()
        if conversation_id is None:
            return
        for m in self.history.messages(conversation_id):
            if m.role == "system":
                continue
            bubble = self.chat.add_message(m.role, m.content, m.id)
            if m.role == "assistant":
                bubble.set_status(m.status, m.error, m.meta)
            for att in self.history.attachments(m.id):
                name = att.meta.get("name", Path(att.path).name)
                run_async(lambda a=att: thumbnail_for(a.path, a.kind),
                          lambda img, b=bubble, n=name: b.add_thumbnail(img, n),
                          lambda err, b=bubble, n=name: b.add_file_chip(
                              f"{n} (missing)" if isinstance(err, AttachmentError) else n), owner=bubble)
        self.chat.mark_last_answer(True)

    # --------------------------------------------------------------------------------------- engine
    def _on_engine_event(self, msg: Message) -> None:
        if isinstance(msg, RouteEvent):
            self.routes[msg.id] = list(msg.towers)

    def _on_engine_state(self, state: str, detail: str) -> None:
        log.info("engine %s: %s", state, detail)
        self.engine_label.setText(detail)
        if state == CRASHED:
            self.banner.show_message(detail, retry=True)
        elif state == RESTARTED:
            self.banner.show_message(detail)
        elif state == FAILED:
            self.banner.show_message(detail, retry=True)
        elif state in (READY, STARTING) and self.banner.retry_button.isVisible():
            self.banner.hide()

    def _on_retry_engine(self) -> None:
        self.banner.hide()
        self.engine.start()

    def _on_generate(self, req: GenerateRequest | SearchRequest) -> None:
        def failed(err: Exception) -> None:  # engine-calls thread: answer like the worker would
            self.engine.event.emit(Error(id=req.id, code=getattr(err, "code", "internal_error"),
                                         message=getattr(err, "message", str(err)), hint=getattr(err, "hint", "")))

        self.engine.submit(req, on_error=failed)

    def _on_search(self, query: str) -> None:
        req = SearchRequest(query=query, paths=history_media(self.history))
        self.search.current = req.id
        self._on_generate(req)  # the same submit-with-error-event path

    # ------------------------------------------------------------------------------------- settings
    def _on_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.config, paths.user_models_toml(), self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, new: AppSettings) -> None:
        old, self.settings = self.settings, new
        self._save_settings()
        if new.theme != old.theme:
            self._apply_theme(new.theme)
        self.controller.set_persona(new.persona)
        self.controller.max_tokens = new.max_tokens
        self.voice.mic_name = new.mic
        engine_keys = ("profile", "vram_budget", "ram_budget", "gpu")
        if any(getattr(old, k) != getattr(new, k) for k in engine_keys):
            self.profile = new.profile or self.config.default_profile
            self.controller.profile = self.profile
            self.generation.profile = self.profile
            self.generation.refresh_availability()
            self.monitor.model = self._monitor_model()
            self.monitor.redraw()
            self.engine.restart(new.profile or None, app_settings.engine_env(new))

    def _on_toggle_theme(self) -> None:
        self.settings.theme = "light" if self.settings.theme == "dark" else "dark"
        self._apply_theme(self.settings.theme)
        self._save_settings()

    def _apply_theme(self, name: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, name)
        c = theme.colors(name)
        self.monitor.set_colors(c.base, c.text)
        self.theme_action.setText("Light theme" if name == "dark" else "Dark theme")

    def _on_voice_toggles(self, hands_free: bool, barge_in: bool) -> None:
        self.settings.hands_free, self.settings.barge_in = hands_free, barge_in
        self._save_settings()

    def _save_settings(self) -> None:
        try:
            app_settings.save(self.settings, self.settings_file)
        except OSError as err:
            self.banner.show_message(f"Could not save the settings: {err}")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.geometry = bytes(self.saveGeometry().toHex().data()).decode()
        self._save_settings()
        self.voice.shutdown()
        super().closeEvent(event)
