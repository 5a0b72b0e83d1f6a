"""Reading one FRUITS_* variable: a number, a flag or tags, with a default when it is
empty, and a :class:`ConfigError` that names the variable when it is not usable."""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(ValueError):
    """A FRUITS_* variable has a value the pipeline cannot use."""


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value}: must be >= 0")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def env_tags(raw: str, name: str = "FRUITS_EMR_TAGS") -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}: {item!r} is not key=value")
        tags[key.strip()] = value.strip()
    return tags


JVM_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def env_jvm_mib(env: Mapping[str, str], name: str, default: str, minimum_mib: int = 0) -> str:
    """A JVM memory size (``512m``, ``2g``) as written, checked to be at least
    ``minimum_mib``; ConfigError saying what to write otherwise."""
    value = env.get(name, "").strip().lower() or default
    number, unit = value[:-1], value[-1:]
    if unit not in JVM_UNITS or not number.isdigit():
        raise ConfigError(f"{name}={value!r}: expected a JVM memory size such as 512m or 2g")
    if int(number) * JVM_UNITS[unit] < minimum_mib:
        raise ConfigError(f"{name}={value!r}: at least {minimum_mib}m")
    return value
