"""What a reload may change: the rules `pktswitch reload` (and SIGHUP) checks a re-read config
against before the running switch takes it (core/registry.py's reconfigure applies the rest).

- [switch]: only RELOADABLE_SWITCH_KEYS; the device, addresses and sizes the running switch
  was built on (RESTART_KEYS) change only with a restart.
- A service keeps its VIP and protocol (SERVICE_RESTART_KEYS); services are matched by name
  and backends by name and address (MATCHED_BY): a new name (or address) is a new one, the
  old one is removed and its flows stay until they end.
- Everything else applies: weights, schedulers, health, access lists, per-client limits,
  timeouts (from each flow's next state change).
"""

from __future__ import annotations

from pktswitch.control.config_schema import SWITCH_KEYS, Config
from pktswitch.control.config_values import ConfigError

# what a reload cannot change: the device, addresses and sizes the running switch was built on
RELOADABLE_SWITCH_KEYS = ("max_half_open", "syn_cookies")
RESTART_KEYS = tuple(k for k in SWITCH_KEYS if k not in RELOADABLE_SWITCH_KEYS)
SERVICE_RESTART_KEYS = ("vip", "protocol")
MATCHED_BY = {"[[service]]": ("name",), "[[service.backend]]": ("name", "address")}


def reload_refusal(running: Config, new: Config) -> ConfigError | None:
    """Why `new` cannot replace `running` in place (a key only a restart changes), or None."""
    for k in RESTART_KEYS:
        was, now = getattr(running.switch, k), getattr(new.switch, k)
        if was != now:
            said = (was, now) if k != "hash_secret" else ("secret", "another")  # never shown
            return ConfigError(
                new.path,
                f"switch.{k}",
                f"the running value {said[0]!r} (it changes only with a restart), got {said[1]!r}",
            )
    before = {s.name: s for s in running.services}
    for i, s in enumerate(new.services):
        was_svc = before.get(s.name)
        if was_svc is not None and (was_svc.vip, was_svc.port) != (s.vip, s.port):
            return ConfigError(
                new.path,
                f"service[{i}].vip",
                f"'{was_svc.vip}:{was_svc.port}' as running (a service keeps its VIP; add the "
                f"new one under another name), got '{s.vip}:{s.port}'",
            )
        if was_svc is not None and was_svc.protocol != s.protocol:
            return ConfigError(
                new.path,
                f"service[{i}].protocol",
                f"{was_svc.protocol!r} as running (a service keeps its protocol; add the new one "
                f"under another name), got {s.protocol!r}",
            )
    return None
