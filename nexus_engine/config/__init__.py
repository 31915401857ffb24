"""models.toml: the declared towers and the profiles that map roles to them."""

from nexus_engine.config.load import load_config, load_models_toml
from nexus_engine.config.schema import ROLES, ModelsConfig, Profile, Source, TowerSpec

__all__ = ["ROLES", "ModelsConfig", "Profile", "Source", "TowerSpec", "load_config", "load_models_toml"]
