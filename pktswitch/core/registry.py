"""The services registry: services by VIP and port, their programs written into C
(core/ahead.py), operator changes (weight, drain), health refreshes and reload, and letting go of
removed backends and services once their last flow has ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pktswitch._native import lib
from pktswitch.core.ahead import Ahead
from pktswitch.core.base import SwitchBase
from pktswitch.core.service import NO_HEALTH, ServiceState, service_state, spec_text
from pktswitch.sched.base import Hashed
from pktswitch.sched.health_policy import effective_weight, state_name
from pktswitch.sched.pool import BackendState
from pktswitch.sched.registry import make

if TYPE_CHECKING:
    from pktswitch.control.config_schema import Config, Service
    from pktswitch.sched.base import Picked

MAX_WEIGHT = 65535  # ipvsadm: weights 0..65535; 0 takes no new flows


class Registry(SwitchBase):
    def _set_services(self, services: list[ServiceState]) -> None:
        self.services = services
        self._by_vip = {(int.from_bytes(s.vip_bytes, "big"), s.port): s for s in services}

    def _endpoint(self, backend: BackendState) -> int:
        """The backend's queue in the SNAT pool, known to C too (C frees the pair of a flow
        it ends for a reused client port)."""
        ep = self._endpoints.get(id(backend))
        if ep is None:
            ep = self.pool.endpoint(backend.endpoint)
            number = self.table.backends.number(backend)  # registers it (until _let_go)
            if lib.pks_table_set_endpoint(self.table.tab, number, ep) != 0:
                raise MemoryError("no memory for the backend map")
            self._endpoints[id(backend)] = ep
        return ep

    def _schedule_ahead(self, svc: ServiceState) -> None:
        """Write the service into C: its scheduler compiled into a program (core/ahead.py),
        its protocol, its access list and its per-client limits."""
        vip = int.from_bytes(svc.vip_bytes, "big")
        if svc.ahead is None:
            svc.ahead = Ahead(self.table, self.table.services.number(svc), vip, svc.port)
        known = self._endpoint if self.mode == "fullnat" else None  # nat: no pairs
        if svc.scheduler.program == "hash":  # C hashes its clients with the switch's secret
            cast(Hashed, svc.scheduler).key = self.hash_secret
        svc.ahead.write(svc.scheduler, svc.backends, known)
        svc.ahead.write_transport(svc.protocol, svc.udp_timeout, svc.one_packet)
        svc.ahead.write_acl(svc.acl)
        svc.ahead.write_limits(svc.per_client)

    def _peek(self, svc: ServiceState, client: bytes, cport: int) -> Picked | None:
        """The backend C would give a new flow of the client now, and why: the scheduler,
        moved to where C's program is."""
        if svc.ahead is not None:
            svc.ahead.sync(svc.scheduler, svc.backends)
        return svc.scheduler.peek(svc.backends, client, cport)

    def _sweep(self, now: float) -> None:
        """Drop the SNAT queues of endpoints (address and port) no backend uses any more,
        once their pairs' TIME_WAITs are over (core/nat.py): a queue holds 12 bytes per pair
        of the pool freed toward it, and backends that come and go at new addresses
        (reloads, autoscaling) would pile them up. A backend at one of those endpoints again
        keeps its queue (and its ports' order)."""
        used = {
            b.endpoint
            for svc in (*self.services, *self.retired_services)
            for b in (*svc.backends, *svc.retired)
        }
        self._unused = {e for e in self._unused if e not in used and not self.pool.drop(e, now)}

    def service(self, name: str) -> ServiceState:
        for svc in self.services:
            if svc.name == name:
                return svc
        known = ", ".join(s.name for s in self.services)
        raise ValueError(f"no service named {name!r} (services: {known})")

    def backend(self, service: str, name: str) -> tuple[ServiceState, BackendState]:
        svc = self.service(service)
        for b in svc.backends:
            if b.name == name:
                return svc, b
        known = ", ".join(b.name for b in svc.backends)
        raise ValueError(f"service {service!r} has no backend {name!r} (backends: {known})")

    def set_weight(self, service: str, backend: str, weight: int, now: float) -> dict[str, Any]:
        """A new weight for new flows; flows already on the backend stay where they are."""
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight must be 0..{MAX_WEIGHT}, got {weight}")
        _, b = self.backend(service, backend)
        old, b.config_weight = b.config_weight, weight
        self.refresh(now)
        return {"service": service, "backend": backend, "weight": weight, "was": old}

    def set_drain(self, service: str, backend: str, drain: bool, now: float) -> dict[str, Any]:
        """Drain: no new flows, the existing ones stay until they end."""
        _, b = self.backend(service, backend)
        b.draining = drain
        b.health_reason = "draining (operator)" if drain else "drain ended (operator)"
        b.changed_at = now
        self.refresh(now)
        return {
            "service": service,
            "backend": backend,
            "draining": drain,
            "flows": b.active + b.inactive,
        }

    def reconfigure(self, cfg: Config, now: float) -> list[str]:
        """Apply a re-read config (control/config.py's Config) without touching a flow:
        services and backends are matched by name (a backend by name and address); a
        matched one keeps its counters, health and flows and takes the new weight, scheduler,
        health policy and acl. A removed backend or service takes no new flows; its flows go
        on until they end. New timeouts apply from each flow's next state change. Whatever
        needs a restart (control/config.py: restart_keys) must be refused before this.
        Returns what changed, one line each."""
        changes: list[str] = []
        svc: ServiceState | None  # (None: a service the config adds)
        self.take_events()  # the reasons of flows C opened are written from the old programs
        for svc in self.services:  # before any scheduler, weight or backend changes
            if svc.ahead is not None:
                svc.ahead.sync(svc.scheduler, svc.backends)
        old = {s.name: s for s in self.services}
        services = []
        for spec in cfg.services:
            svc = old.pop(spec.name, None)
            if svc is None:
                services.append(service_state(spec))
                changes.append(f"{spec.name}: added, {spec.vip}:{spec.port}")
                continue
            services.append(svc)
            changes += self._reconfigure_service(svc, spec)
        for svc in old.values():
            if svc.ahead is not None:
                svc.ahead.forget()
            svc.retired += svc.backends
            svc.backends = []
            self.retired_services.append(svc)
            changes.append(f"{svc.name}: removed (its flows stay until they end)")
        self._set_services(services)
        for state, seconds in cfg.timeouts.items():
            was = self.table.timeouts.get(state)
            if was != seconds:
                changes.append(f"timeout {state.name}: {was:g} -> {seconds:g} s")
        self.table.set_timeouts(cfg.timeouts)
        half_open = cfg.switch.max_half_open
        if half_open != self.table.max_half_open:
            changes.append(f"max_half_open: {self.table.max_half_open} -> {half_open}")
            self.table.max_half_open = half_open
        cookies = cfg.switch.syn_cookies
        if cookies != self.syn_cookies:
            changes.append(f"syn_cookies: {self.syn_cookies} -> {cookies}")
        self.set_syn_cookies(cookies)  # (the share it starts at may have moved)
        self.refresh(now, schedule=False)  # its lines would repeat the weight changes above
        for svc in self.services:
            svc.scheduler.update(svc.backends)
            self._schedule_ahead(svc)
        self._let_go()  # (removed here with no flow: said above already)
        return changes

    def _reconfigure_service(self, svc: ServiceState, spec: Service) -> list[str]:
        changes = []
        b: BackendState | None  # (None: a backend the config adds)
        n = svc.name
        sched_spec = (spec.scheduler, tuple(spec.options))
        if sched_spec != svc.sched_spec:
            svc.scheduler = make(spec.scheduler, **dict(spec.options))
            changes.append(f"{n}: scheduler {spec_text(svc.sched_spec)} -> {spec_text(sched_spec)}")
            svc.sched_spec = sched_spec
        health = spec.health or NO_HEALTH
        if health != svc.health:
            svc.health = health
            changes.append(f"{n}: health policy changed")
            for b in svc.backends:  # what no check or signal will clear any more, cleared
                if health.check == "none" and not b.up:
                    b.up, b.streak = True, 0
                    b.health_reason = "up: active checks turned off by a reload"
                if not health.passive:
                    b.ejected_until, b.ejections = 0.0, 0
        acl = spec.acl.compile() if spec.acl is not None else None
        if (acl and (acl.allow, acl.deny)) != (svc.acl and (svc.acl.allow, svc.acl.deny)):
            svc.acl = acl
            changes.append(f"{n}: access control changed")
        if spec.per_client != svc.per_client:
            svc.per_client = spec.per_client
            changes.append(f"{n}: per-client limits changed")
        if spec.udp_timeout != svc.udp_timeout:  # (new flows take it)
            changes.append(f"{n}: udp_timeout {svc.udp_timeout:g} -> {spec.udp_timeout:g} s")
            svc.udp_timeout = spec.udp_timeout
        if spec.one_packet != svc.one_packet:  # (new datagrams take it)
            changes.append(f"{n}: one_packet {svc.one_packet} -> {spec.one_packet}")
            svc.one_packet = spec.one_packet
        current = {(b.name, b.ip, b.port): b for b in svc.backends}
        backends = []
        for bs in spec.backends:
            b = current.pop((bs.name, bs.ip, bs.port), None)
            if b is None:
                b = BackendState(bs.name, bs.ip, bs.port, bs.weight)
                changes.append(f"{n}/{b.name}: added, {b.ip}:{b.port} weight {bs.weight}")
            elif b.config_weight != bs.weight:
                changes.append(f"{n}/{b.name}: weight {b.config_weight} -> {bs.weight}")
                b.config_weight = bs.weight
            backends.append(b)
        for b in current.values():
            changes.append(
                f"{n}/{b.name}: removed; its flows stay until they end "
                f"({b.active} established, {b.inactive} other)"
            )
            svc.retired.append(b)
        svc.backends = backends
        return changes

    def refresh(self, now: float, schedule: bool = True) -> list[str]:
        """Recompute every backend's effective weight from its health; tell the schedulers
        whose backends changed, and write their programs into C again; then let go of removed
        backends and services whose last flow has ended (_let_go). With `schedule` False
        the caller writes every program after, and lets go after that. Returns what changed,
        for the log."""
        self.take_events()  # the reasons of flows C opened are written from the old programs
        changes = []
        for svc in self.services:
            weights = [effective_weight(b, svc.health, now) for b in svc.backends]
            if all(w == b.weight for w, b in zip(weights, svc.backends, strict=True)):
                continue
            if svc.ahead is not None:  # where C's program is, while the weights are the old ones
                svc.ahead.sync(svc.scheduler, svc.backends)
            for w, b in zip(weights, svc.backends, strict=True):
                if w != b.weight:
                    state = state_name(b, svc.health, now)
                    changes.append(f"{svc.name}/{b.name}: weight {b.weight} -> {w} ({state})")
                    b.weight = w
            svc.scheduler.update(svc.backends)
            if schedule:
                self._schedule_ahead(svc)
        if schedule:
            changes += self._let_go()
        return changes

    def _let_go(self) -> list[str]:
        """Removed backends and services whose last flow has ended leave the listing, and
        their numbers go to the next new ones. Only once the events are applied (no flow
        refers to them) and every live service's program is written into C (none names
        them: a program written before the reload that removed a backend still does).
        Returns what went, for the log."""
        changes = []
        for svc in (*self.services, *self.retired_services):
            if any(b.active + b.inactive == 0 for b in svc.retired):
                for b in svc.retired:
                    if b.active + b.inactive == 0:
                        changes.append(f"{svc.name}/{b.name}: removed, its last flow ended")
                        number = self.table.backends.get(b)
                        if number is not None and id(b) in self._endpoints:
                            # C no longer names its queue, which _sweep may drop
                            lib.pks_table_set_endpoint(self.table.tab, number, lib.PKS_NONE)
                        self.table.backends.forget(b)
                        self._endpoints.pop(id(b), None)  # (ids of dead objects are reused)
                        self._unused.add(b.endpoint)
                svc.retired = [b for b in svc.retired if b.active + b.inactive]
        for svc in self.retired_services:
            if not svc.retired:
                self.table.services.forget(svc)
        self.retired_services = [s for s in self.retired_services if s.retired]
        return changes
