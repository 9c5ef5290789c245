"""Which XLA programs a piece of work compiles, and how long each took (or took to load from the cache).

    with CompiledPrograms() as programs:
        train_and_evaluate(config, workdir)
    programs.records  # [Program("train_dispatch", 0.71, cached=False), ...]

It listens to JAX's own compile events (`jax.monitoring`), so it sees every program, including the small
ones that an operation outside `jit` compiles. The seconds are the backend's: XLA's compilation, or reading
the executable from the persistent cache (`compile_cache.py`); tracing and lowering are not included.
"""

from __future__ import annotations

import dataclasses
import threading

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@dataclasses.dataclass(frozen=True)
class Program:
    """One compilation: the function's name, the backend's seconds, and whether it came from the cache."""

    name: str
    seconds: float
    cached: bool

    def __str__(self) -> str:
        return f"{self.name} {self.seconds:.2f} s{' (cache hit)' if self.cached else ''}"


_active: list[CompiledPrograms] = []
_thread = threading.local()  # a cache hit is reported just before the duration of the same compilation
_listening = False


def _on_event(event: str, **kwargs) -> None:
    if event == _CACHE_HIT_EVENT:
        _thread.hit = True


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    if event != _COMPILE_EVENT:
        return
    cached, _thread.hit = getattr(_thread, "hit", False), False
    name = str(kwargs.get("fun_name", "?")).removeprefix("jit(").removesuffix(")")
    for programs in _active:
        programs.records.append(Program(name, seconds, cached))


class CompiledPrograms:
    """A context that records every program compiled while it is open (see the module docstring)."""

    def __init__(self):
        self.records: list[Program] = []

    def __enter__(self) -> CompiledPrograms:
        global _listening
        if not _listening:  # JAX's listeners cannot be removed: register once, dispatch to the open contexts
            jax.monitoring.register_event_listener(_on_event)
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _listening = True
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)

    def summary(self) -> str:
        """'3, 1.9 s: init_state 1.20 s, train_dispatch 0.51 s, eval_dispatch 0.19 s (cache hit)'."""
        total = sum(p.seconds for p in self.records)
        listed = ", ".join(map(str, self.records))
        return f"{len(self.records)}, {total:.1f} s: {listed}"
