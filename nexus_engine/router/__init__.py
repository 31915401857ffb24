"""The sparse router: which one or two towers serve a request, and why (see docs/router.md).

    from nexus_engine.router import Router
    decision = Router().decide("draw me a cat")      # RouteDecision(towers=["imagination"], …)
"""

from nexus_engine.router.decide import RouteDecision, Router

__all__ = ["RouteDecision", "Router"]
