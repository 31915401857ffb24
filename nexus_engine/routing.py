"""The router inside the worker: every chat request that names no tower and no role goes through it.

The decision (roles, towers, scores, reason, milliseconds) is sent as a RouteEvent before anything loads, so
the app's routing timeline shows it live; the residency state of the towers feeds the router's cost term.
How a routed role is served: imagination renders an image, vision/perception with attachments describe them
first, the text roles (reasoning, code, knowledge, persona) pick their tower from the profile; a role whose
tower is not installed is reported in the event and the chat model answers instead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any

from nexus_engine.protocol import ChatRequest, RouteEvent

if TYPE_CHECKING:
    from nexus_engine.engine import Emit, Engine
    from nexus_engine.router.decide import RouteDecision, Router

log = logging.getLogger("nexus.routing")
AUTO = "auto"
TEXT_ROLES = ("code", "knowledge", "reasoning", "persona")


class Routing:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._router: Router | None = None
        self._lock = threading.Lock()

    @property
    def router(self) -> Router:
        with self._lock:  # built once, on the first routed request (loading MiniLM takes ~1 s)
            if self._router is None:
                from nexus_engine.router.decide import Router

                self._router = Router(self.engine.config, self.engine.profile)
            return self._router

    def decide(self, req: ChatRequest) -> RouteDecision:
        user = [m["content"] for m in req.messages if m.get("role") == "user"]
        attachments = [{"path": a.get("path")} if a.get("kind") == "audio" else a.get("kind") or a.get("path")
                       for a in req.attachments]
        snapshot = self.engine.residency_snapshot().get("towers", {})
        residency = {name: t.get("tier", "cold") for name, t in snapshot.items()}
        return self.router.decide(user[-1] if user else "", attachments, voice=req.voice,
                                  context=user[-2:-1], residency=residency)

    def resolve(self, req: ChatRequest, emit: Emit) -> ChatRequest:
        """The request with a concrete role, after announcing the decision. Requests that name a tower or a
        role are not routed: the user (or the caller) chose."""
        if req.tower is not None or req.role != AUTO:
            return req
        d = self.decide(req)
        emit(RouteEvent(id=req.id, roles=list(d.towers), towers=list(d.want), scores=dict(d.scores), reason=d.reason,
                        ms=d.ms, not_installed=list(d.not_installed), warnings=list(d.warnings)))
        return dataclasses.replace(req, role=serving_role(d, bool(req.attachments)))


def serving_role(d: Any, has_media: bool) -> str:
    """Which role answers: the first routed role the engine can serve with an installed tower."""
    installed = [r for r in d.towers if r not in d.not_installed]
    for role in d.towers:
        if role == "imagination":
            return "imagination"  # not installed: the generation path says how to add a tower
        if role in ("vision", "perception") and has_media:
            return "vision"
        if role in TEXT_ROLES and role in installed:
            return role
    return "reasoning"
